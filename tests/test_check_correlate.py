"""Regression checks, downstream scores and correlations on real (tiny) run results."""

from __future__ import annotations

import json

import pytest
from scipy import stats

from prh_bench.check import CheckError, compare_runs
from prh_bench.correlate import CorrelationError, correlate, correlation
from prh_bench.results import DownstreamError, read_downstream_csv, read_result
from prh_bench.runner import RunConfig, run

import runner_plugin

MODELS = "tiny/pixels-a,tiny/pixels-b,tiny/words-a,tiny/words-b,tiny/words-c"


@pytest.fixture
def result_file(fresh_plugins, tmp_path, monkeypatch):
    fresh_plugins.register_plugin(runner_plugin, name="tiny")
    monkeypatch.setenv("PRH_BENCH_CACHE", str(tmp_path / "cache"))
    cfg = RunConfig(
        models=MODELS,
        dataset="tiny-shapes",
        output=str(tmp_path / "res"),
        null_permutations=9,
        topk=3,
    )
    return run(cfg, progress=False, log=lambda m: None).path


def edited(path, tmp_path, edit, name="new.json"):
    data = json.loads(path.read_text())
    edit(data)
    out = tmp_path / name
    out.write_text(json.dumps(data))
    return out


def test_check_identical_runs_pass(result_file, run_cli, tmp_path):
    result = run_cli("check", "--baseline", str(result_file), str(result_file))
    assert result.exit_code == 0
    assert "OK: 6 scores within 0.01." in result.output


def test_check_fails_on_a_moved_score_and_writes_markdown(result_file, run_cli, tmp_path):
    def bump(data):
        data["scores"][2]["value"] += 0.05

    new = edited(result_file, tmp_path, bump)
    report = tmp_path / "report.md"
    result = run_cli("check", "--baseline", str(result_file), str(new), "--markdown", str(report))
    assert result.exit_code == 1
    assert "changed" in result.output
    text = report.read_text()
    assert text.startswith("## prh-bench check: FAILED (1 problems)")
    assert "| changed" in text and "0.05" in text
    assert (
        run_cli("check", "--baseline", str(result_file), str(new), "--tolerance", "0.1").exit_code
        == 0
    )


def test_check_fails_on_a_missing_pair(result_file, tmp_path):
    new = edited(result_file, tmp_path, lambda d: d["scores"].pop(0))
    report = compare_runs(read_result(result_file), read_result(new))
    assert [c.status for c in report.failed] == ["missing"]


def test_check_reports_new_pairs_without_failing(result_file, tmp_path):
    old = edited(result_file, tmp_path, lambda d: d["scores"].pop(0), name="old.json")
    report = compare_runs(read_result(old), read_result(result_file))
    assert report.ok and [c.status for c in report.changes].count("new") == 1


def test_check_refuses_another_dataset(result_file, tmp_path, run_cli):
    def other(data):
        data["dataset"]["content_hash"] = "0" * 64

    new = edited(result_file, tmp_path, other)
    result = run_cli("check", "--baseline", str(result_file), str(new))
    assert result.exit_code == 1
    assert result.output.startswith("Error: the baseline is on dataset tiny-shapes")


def test_check_refuses_another_metric(result_file, tmp_path):
    def other(data):
        for s in data["scores"]:
            s["params"]["topk"] = 5

    new = edited(result_file, tmp_path, other)
    with pytest.raises(CheckError, match="share no metric with the same parameters"):
        compare_runs(read_result(result_file), read_result(new))


def test_correlation_matches_scipy():
    x, y = [0.1, 0.25, 0.2, 0.4, 0.35], [1.0, 2.0, 2.5, 3.9, 3.0]
    out = correlation(x, y)
    assert out["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic)
    assert out["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic)
    low, high = out["pearson_ci"]
    assert low <= out["pearson"] <= high
    assert 0 < out["p_value"] <= 1
    assert correlation([1, 2], [3, 4])["pearson"] is None  # too few points


def test_correlate_uses_bpb_and_downstream_csv(result_file, tmp_path, run_cli):
    csv_file = tmp_path / "down.csv"
    csv_file.write_text(
        "model,metric,value,source\n"
        + "".join(
            f"tiny/words-{c},hellaswag,{v},paper table 3\n"
            for c, v in zip("abc", (0.3, 0.5, 0.4), strict=True)
        )
    )
    result = read_result(result_file)
    records = correlate(result, "tiny/pixels-a", "mutual_knn", read_downstream_csv(csv_file))
    assert {r.downstream for r in records} == {"bpb", "hellaswag"}
    hs = next(r for r in records if r.downstream == "hellaswag")
    align = {s.model_a: s.value for s in result.scores if s.model_b == "tiny/pixels-a"}
    if len(set(align.values())) > 1:
        expected = stats.pearsonr([align[m] for m in hs.models], [0.3, 0.5, 0.4]).statistic
        assert hs.pearson == pytest.approx(expected)
    cli = run_cli(
        "correlate", str(result_file), "--vision", "*pixels-a", "--downstream", str(csv_file)
    )
    assert cli.exit_code == 0, cli.output
    assert "hellaswag" in cli.output and "stored in" in cli.output
    assert {c.downstream for c in read_result(result_file).correlations} == {"bpb", "hellaswag"}


def test_correlate_refuses_an_ambiguous_vision_model(result_file):
    with pytest.raises(CorrelationError, match="matches 2 vision models"):
        correlate(read_result(result_file), "tiny/pixels-*")


def test_downstream_csv_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,score\nx,1\n")
    with pytest.raises(DownstreamError, match="missing metric, value"):
        read_downstream_csv(bad)
    bad.write_text("model,metric,value\nx,hellaswag,high\n")
    with pytest.raises(DownstreamError, match="line 2, model 'x': value 'high' is not a number"):
        read_downstream_csv(bad)


def test_downstream_import_from_lm_eval(tmp_path, run_cli):
    lm_eval = {
        "results": {
            "hellaswag": {
                "acc,none": 0.41,
                "acc_stderr,none": 0.01,
                "acc_norm,none": 0.52,
                "alias": "hellaswag",
            },
            "gsm8k": {"exact_match,strict-match": 0.12},
        },
        "config": {"model": "hf", "model_args": "pretrained=bigscience/bloomz-560m,dtype=auto"},
    }
    src = tmp_path / "results_2024.json"
    src.write_text(json.dumps(lm_eval))
    out = tmp_path / "downstream.csv"
    result = run_cli("downstream", "import", str(src), "-o", str(out))
    assert result.exit_code == 0, result.output
    table = read_downstream_csv(out)
    scores = table["bigscience/bloomz-560m"]
    assert scores["hellaswag/acc"].value == 0.41
    assert scores["hellaswag/acc_norm"].value == 0.52
    assert scores["gsm8k/exact_match"].value == 0.12
    assert "hellaswag/acc_stderr" not in scores
    assert scores["gsm8k/exact_match"].source == "lm-eval: results_2024.json"


def test_one_reference_rule_for_site_and_correlate(result_file):
    """An exact id names any vision model (a control too); a glob matches trained ones only;
    the site takes the largest of several matches, ``correlate`` asks for exactly one."""
    from prh_bench.correlate import largest, reference_matches
    from prh_bench.results import ModelRecord

    def vision(model_id, params, tags=()):
        return ModelRecord(
            id=model_id,
            modality="vision",
            family="x",
            parameters=params,
            num_layers=2,
            tags=list(tags),
        )

    models = [vision("vit-s", 10), vision("vit-l", 30), vision("vit-l.random", 30, ["control"])]
    assert [m.id for m in reference_matches(models, "vit-*")] == ["vit-s", "vit-l"]
    assert largest(reference_matches(models, "vit-*")).id == "vit-l"
    assert [m.id for m in reference_matches(models, "vit-l.random")] == ["vit-l.random"]
    assert reference_matches(models, "*.random") == []
    result = read_result(result_file)
    assert {r.vision_model for r in correlate(result, "*pixels-b")} <= {"tiny/pixels-b"}


def test_saved_correlations_replace_their_own_and_the_site_shows_them(
    result_file, tmp_path, run_cli
):
    """``correlate --save`` keeps one set per (vision model, metric); the site lists a saved
    correlation it cannot compute itself (a --downstream CSV score) beside its own."""
    from prh_bench.site import SiteSettings, build_site

    csv_file = tmp_path / "down.csv"
    rows = "".join(f"tiny/words-{c},hellaswag,{v}\n" for c, v in zip("abc", (3, 5, 4), strict=True))
    csv_file.write_text("model,metric,value\n" + rows)
    for _ in range(2):
        args = ["correlate", str(result_file), "--vision", "tiny/pixels-a"]
        assert run_cli(*args, "--downstream", str(csv_file)).exit_code == 0
    saved = read_result(result_file).correlations
    assert sorted(c.downstream for c in saved) == ["bpb", "hellaswag"]  # replaced, not doubled

    def known_numbers(data):  # the tiny models align alike, so r is undefined: give it one
        for c in data["correlations"]:
            if c["downstream"] == "hellaswag":
                c.update(pearson=0.4321, pearson_ci=[0.1, 0.9])

    result_file.write_text(edited(result_file, tmp_path, known_numbers).read_text())
    settings = SiteSettings(
        reference_vision="tiny/pixels-a", bootstrap_resamples=200, correlation_min_models=3
    )
    build_site([result_file], tmp_path / "site", settings)
    page = next((tmp_path / "site").glob("downstream-*.html")).read_text()
    run_id = read_result(result_file).run_id
    assert f"hellaswag <small>(saved by prh-bench correlate in run {run_id})</small>" in page
    assert '>0.432 <span class="ci">[0.100, 0.900]</span></td>' in page
    assert 'href="#fig-bpb"' in page and 'id="fig-hellaswag"' not in page  # no points to draw


def test_downstream_csv_round_trips(tmp_path):
    from prh_bench.results import Downstream, write_downstream_csv

    table = {"m/1": {"hellaswag": Downstream(value=0.25, source="paper, table 2")}}
    write_downstream_csv(tmp_path / "d.csv", table)
    assert read_downstream_csv(tmp_path / "d.csv") == table


def test_format_ci_is_shared():
    from prh_bench.correlate import format_ci, format_interval

    assert format_ci(0.81234, (0.4, 0.95567)) == "0.812 [0.400, 0.956]"
    assert format_ci(0.5, None, 2) == "0.50" and format_ci(None, (0, 1)) == "undefined"
    assert format_interval((0.1, 0.2), 2) == "[0.10, 0.20]"
