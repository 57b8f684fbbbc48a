"""The main job end to end on tiny real models: results, caching, failures, config, floors."""

from __future__ import annotations

import json
import re

import pytest

import prh_bench
from prh_bench.results import ResultsError, read_result
from prh_bench.runner import ConfigError, RunConfig, SelectionError, run

import runner_plugin

GOOD = "tiny/pixels-a,tiny/pixels-b,tiny/words-a,tiny/words-b"


@pytest.fixture
def tiny(fresh_plugins, tmp_path, monkeypatch):
    fresh_plugins.register_plugin(runner_plugin, name="tiny")
    monkeypatch.setenv("PRH_BENCH_CACHE", str(tmp_path / "cache"))
    for m in runner_plugin.MODELS:
        m.loads = 0
    return tmp_path


def config(tmp_path, **kw):
    base = dict(
        models=GOOD,
        dataset="tiny-shapes",
        output=str(tmp_path / "results"),
        null_permutations=19,
        topk=3,
    )
    return RunConfig(**{**base, **kw})


def test_run_writes_a_valid_result(tiny):
    outcome = run(config(tiny), progress=False, log=lambda m: None)
    result = read_result(outcome.path)
    assert outcome.path.parent.name == "tiny-shapes" and outcome.path.stem == result.run_id
    assert result.dataset.n == 18 and result.dataset.id == "tiny-shapes"
    assert {m.id for m in result.models} == set(GOOD.split(","))
    assert len(result.scores) == 4  # 2 language x 2 vision
    score = result.scores[0]
    assert (score.model_a, score.metric) == ("tiny/words-a", "mutual_knn")
    assert len(score.matrix) == 3 and len(score.matrix[0]) == 2
    assert score.value == max(max(row) for row in score.matrix)
    assert score.matrix[score.best_index[0]][score.best_index[1]] == score.value
    assert score.null.permutations == 19 and 0 < score.null.p_value <= 1
    assert result.environment["torch"] and result.prh_bench_version == prh_bench.__version__
    assert "tiny" in {p.name for p in result.plugins}
    assert result.config["topk"] == 3
    model = result.model("tiny/words-a")  # what the model is travels with its scores
    assert (model.source, model.notes) == ("test:tiny/words-a", "a hashed bag of words (test)")
    assert model.revision == "unversioned" and model.control_of is None


def test_scores_equal_align_layers_on_the_stored_features(tiny):
    from safetensors.torch import load_file

    result = read_result(run(config(tiny), progress=False, log=lambda m: None).path)
    files = {m.id: m.feature_file for m in result.models}
    s = result.scores[0]

    def layers(model_id):
        tensors = load_file(files[model_id])
        return [tensors[k] for k in sorted(k for k in tensors if k.startswith("layer."))]

    expected = prh_bench.align_layers(layers(s.model_a), layers(s.model_b), "mutual_knn", topk=3)
    assert s.value == expected.best and tuple(s.best_index) == expected.best_index


def test_rerun_with_one_more_model_computes_only_new_pairs(tiny, monkeypatch):
    run(config(tiny), progress=False, log=lambda m: None)
    loads = {m.id: m.loads for m in runner_plugin.MODELS}
    import prh_bench.align as align

    swept = []
    original = align.sweep
    monkeypatch.setattr(align, "sweep", lambda m, a, b: swept.append(1) or original(m, a, b))
    outcome = run(config(tiny, models=GOOD + ",tiny/words-c"), progress=False, log=lambda m: None)
    assert len(outcome.result.scores) == 6
    assert len(swept) == 2  # words-c x (pixels-a, pixels-b)
    after = {m.id: m.loads for m in runner_plugin.MODELS}
    assert after["tiny/words-c"] == 1
    assert all(after[m] == loads[m] for m in GOOD.split(","))  # features from the store


def test_pairs_all_and_several_metrics(tiny):
    result = run(
        config(tiny, pairs="all", metrics=["mutual_knn", "cka"], null_permutations=0),
        progress=False,
        log=lambda m: None,
    ).result
    assert len(result.scores) == 2 * 6  # C(4, 2) pairs x 2 metrics
    assert all(s.null is None for s in result.scores)
    assert {(s.model_a, s.model_b) for s in result.scores} >= {
        ("tiny/words-a", "tiny/words-b"),
        ("tiny/pixels-a", "tiny/pixels-b"),
    }


def test_run_records_where_its_time_went(tiny):
    outcome = run(config(tiny, replicates=4), progress=False, log=lambda m: None)
    timings = read_result(outcome.path).timings
    assert timings == outcome.result.timings  # written and read back
    ids = GOOD.split(",")
    per_model = [f"{stage}:{m}" for m in ids for stage in ("load", "extract")]  # in run order
    assert list(timings) == ["plan", *per_model, "scoring", "null", "intervals", "total"]
    assert all(seconds >= 0 for seconds in timings.values())
    assert all(timings[f"extract:{m}"] > 0 for m in ids)  # computed in this run
    assert timings["total"] >= sum(v for k, v in timings.items() if k != "total") - 0.01

    # a rerun finds every feature file and every score cached: nothing loads or extracts
    again = run(config(tiny, replicates=4), progress=False, log=lambda m: None).result
    assert all(again.timings[k] == 0 for k in per_model)
    assert again.timings["null"] == 0 and again.timings["total"] > 0


def test_run_prints_its_time_breakdown(tiny, run_cli):
    args = ["run", "--models", GOOD, "--dataset", "tiny-shapes", "--output", str(tiny / "out")]
    args += ["--null-permutations", "5", "--topk", "3", "--replicates", "0"]
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    table = first.output.split("time breakdown")[1]
    for stage in ("plan", "extract tiny/words-a", "scoring", "null", "intervals", "total"):
        assert stage in table
    assert "cached" not in table
    again = run_cli(*args).output.split("time breakdown")[1]
    assert again.count("cached") == 4  # each model's row


def test_keep_going_reports_the_failing_model(tiny, run_cli):
    args = [
        "run",
        "--models",
        GOOD + ",tiny/broken",
        "--dataset",
        "tiny-shapes",
        "--output",
        str(tiny / "out"),
        "--null-permutations",
        "5",
        "--topk",
        "3",
        "--keep-going",
    ]
    result = run_cli(*args)
    assert result.exit_code == 3
    assert "failed: tiny/broken: model 'tiny/broken' exploded while loading" in result.output
    assert "wrote " in result.output


def test_without_keep_going_a_failure_is_one_line(tiny, run_cli):
    result = run_cli(
        "run",
        "--models",
        GOOD + ",tiny/broken",
        "--dataset",
        "tiny-shapes",
        "--output",
        str(tiny / "out"),
        "--topk",
        "3",
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: model 'tiny/broken' exploded while loading (test)"
    )


def test_unavailable_models_in_a_group_are_listed_once_and_skipped(tiny, run_cli):
    result = run_cli(
        "run",
        "--models",
        "tiny",
        "--dataset",
        "tiny-shapes",
        "--output",
        str(tiny / "out"),
        "--topk",
        "3",
        "--null-permutations",
        "0",
        "--keep-going",
    )
    assert result.output.count("skipped tiny/absent: weights not downloaded (test)") == 1
    assert "Traceback" not in result.output


def test_unavailable_model_named_explicitly_is_an_error(tiny):
    with pytest.raises(prh_bench.PrhBenchError, match="model 'tiny/absent' is not available"):
        run(config(tiny, models="tiny/words-a,tiny/absent"), progress=False, log=lambda m: None)


def test_no_vision_model_is_one_line(tiny, run_cli):
    result = run_cli(
        "run",
        "--models",
        "tiny/words-a,tiny/words-b",
        "--dataset",
        "tiny-shapes",
        "--output",
        str(tiny / "out"),
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: no vision model is selected (or available); --pairs cross scores language x "
        "vision pairs: add one to --models, or use --pairs all"
    )


def test_selection_by_glob_and_unknown_id(tiny):
    from prh_bench.runner import select_models

    assert [m.id for m in select_models("tiny/pixels-*")] == ["tiny/pixels-a", "tiny/pixels-b"]
    with pytest.raises(prh_bench.UnknownIdError, match="Did you mean: .*tiny/words-a"):
        select_models("tiny/words-z")
    with pytest.raises(SelectionError, match="matches no model"):
        select_models("nothing-*")


def test_config_file_and_flags_override(tiny, run_cli):
    cfg = tiny / "run.toml"
    cfg.write_text(
        f'[run]\nmodels = "{GOOD}"\ndataset = "tiny-shapes"\ntopk = 4\n'
        f'null_permutations = 0\noutput = "{tiny / "cfg-out"}"\n'
    )
    result = run_cli("run", "--config", str(cfg), "--topk", "2")
    assert result.exit_code == 0, result.output
    [path] = list((tiny / "cfg-out" / "tiny-shapes").glob("*.json"))
    saved = read_result(path)
    assert saved.config["topk"] == 2 and saved.scores[0].params == {"topk": 2}


@pytest.mark.parametrize(
    "text,message",
    [
        ("topk = \n", "malformed TOML"),
        ("models = 'offline'\ntopkk = 3\n", "line 2: unknown key 'topkk'"),
        ("topk = 'ten'\n", "line 1: key 'topk' must be an integer, got 'ten'"),
        # a key outside [run] would be silently ignored (issue 14): refused instead
        ("topk = 5\n[run]\nmodels = 'offline'\n", "topk sit outside [run]"),
        ("[run]\nmetrics = ['mutual_knn', 3]\n", "line 2: key 'metrics' must be a list"),
    ],
)
def test_malformed_config_names_file_line_key(tiny, run_cli, text, message):
    cfg = tiny / "bad.toml"
    cfg.write_text(text)
    result = run_cli("run", "--config", str(cfg))
    assert result.exit_code == 1
    assert str(cfg) in result.output and message in result.output


def test_every_run_setting_has_a_config_file_type():
    from dataclasses import fields

    from prh_bench.runner import _CONFIG_TYPES

    assert set(_CONFIG_TYPES) == {f.name for f in fields(RunConfig)}


def test_config_file_reads_keys_under_run_or_at_the_top(tmp_path):
    from prh_bench.runner import load_config_file

    top, table = tmp_path / "top.toml", tmp_path / "table.toml"
    top.write_text("metrics = 'cka'\ntopk = 5\nq = 1\n")
    table.write_text("[run]\nmetrics = ['cka']\ntopk = 5\nq = 1\n")
    assert (
        load_config_file(top)
        == load_config_file(table)
        == {
            "metrics": ["cka"],
            "topk": 5,
            "q": 1,
        }
    )


def test_bad_run_settings():
    with pytest.raises(ConfigError, match="pairs must be 'cross' or 'all'"):
        RunConfig(pairs="some")
    with pytest.raises(ConfigError, match="limit must be >= 2"):
        RunConfig(limit=1)


def test_topk_too_large_for_the_dataset(tiny):
    with pytest.raises(prh_bench.InvalidInputError, match=r"topk must be < N .*18"):
        run(config(tiny, topk=18), progress=False, log=lambda m: None)


def test_load_results_dataframe(tiny):
    run(config(tiny), progress=False, log=lambda m: None)
    run(config(tiny, metrics=["cka"]), progress=False, log=lambda m: None)
    df = prh_bench.load_results(tiny / "results")
    assert len(df) == 8
    assert set(df["metric"]) == {"mutual_knn", "cka"}
    assert {"model_a", "model_b", "value", "layer_a", "layer_b", "null_mean", "p_value"} <= set(
        df.columns
    )
    assert set(df["modality_a"]) == {"language"} and set(df["modality_b"]) == {"vision"}


@pytest.mark.parametrize(
    "content,message",
    [
        ("{not json", "not valid JSON (line 1"),
        ("[1, 2]", "not a prh-bench result (a JSON object was expected)"),
        ('{"hello": 1}', "not a prh-bench result file"),
        ('{"schema_version": 99, "run_id": "x"}', "schema_version 99 is not supported"),
    ],
)
def test_malformed_results_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match=re.escape(message)):
        read_result(path)


def test_result_with_a_wrong_field_names_it(tiny):
    path = run(config(tiny, null_permutations=0), progress=False, log=lambda m: None).path
    data = json.loads(path.read_text())
    data["scores"][1]["value"] = "high"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=r"scores\.1\.value: Input should be a valid number"):
        read_result(path)


def test_precision_profiles_score_as_the_reference_modes(tiny, monkeypatch):
    """exact: sort-based quantile, float32 Gram; reference: approximate quantile (and TF32 on
    CUDA only). Each is recorded, and the score cache keeps them apart."""
    from safetensors.torch import load_file

    import prh_bench.align as align

    swept = []
    original = align.sweep
    monkeypatch.setattr(align, "sweep", lambda m, a, b: swept.append(1) or original(m, a, b))
    results = {}
    for profile in ("exact", "reference"):
        outcome = run(config(tiny, precision=profile), progress=False, log=lambda m: None)
        results[profile] = read_result(outcome.path)
    assert len(swept) == 8  # the reference profile reused none of the exact profile's scores
    for profile, result in results.items():
        exact = profile == "exact"
        assert result.precision == profile and result.config["precision"] == profile
        files = {m.id: load_file(m.feature_file) for m in result.models}
        for s in result.scores:
            assert s.preprocessing["exact"] is exact and s.preprocessing["gram"] == "float32"

            def layers(model_id, files=files):
                t = files[model_id]
                return [t[k] for k in sorted(k for k in t if k.startswith("layer."))]

            expected = prh_bench.align_layers(
                layers(s.model_a), layers(s.model_b), "mutual_knn", topk=3, exact=exact
            )
            assert s.value == expected.best and tuple(s.best_index) == expected.best_index


def test_score_settings_per_profile_and_device():
    from prh_bench.scoring import score_settings

    assert score_settings("exact", "cuda") == {"exact": True, "gram": "float32"}
    assert score_settings("reference", "cuda:1") == {"exact": False, "gram": "tf32"}
    # TF32 exists only on CUDA: elsewhere the reference profile is the reference's CPU run
    assert score_settings("reference", "cpu") == {"exact": False, "gram": "float32"}
    assert score_settings("reference", "mps") == {"exact": False, "gram": "float32"}


@pytest.mark.gpu
def test_reference_profile_sweeps_with_tf32_on_cuda(tiny, monkeypatch):
    import torch

    import prh_bench.align as align

    seen = []
    original = align.sweep

    def sweep(metric, a, b):
        seen.append((torch.backends.cuda.matmul.allow_tf32, a[0].device.type))
        return original(metric, a, b)

    monkeypatch.setattr(align, "sweep", sweep)
    before = torch.backends.cuda.matmul.allow_tf32
    run(config(tiny, precision="reference", device="cuda"), progress=False, log=lambda m: None)
    assert seen and all(s == (True, "cuda") for s in seen)
    assert torch.backends.cuda.matmul.allow_tf32 == before
    seen.clear()
    run(config(tiny, precision="exact", device="cuda"), progress=False, log=lambda m: None)
    assert seen and all(s == (False, "cpu") for s in seen)


def test_bpb_of_captions_without_a_predicted_token_is_said():
    import types

    import torch

    from prh_bench.runner import warn_unscored_captions

    said = []
    feats = {
        "lm": types.SimpleNamespace(stats={"bits_per_byte": torch.tensor([1.5, 0.0, 2.0, 0.0])}),
        "scored": types.SimpleNamespace(stats={"bits_per_byte": torch.tensor([1.0, 2.0])}),
        "vision": types.SimpleNamespace(stats={}),
    }
    warn_unscored_captions(feats, said.append)
    assert len(said) == 1 and said[0].startswith("note: lm: 2 of 4 captions have no predicted")
