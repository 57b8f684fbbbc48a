"""Drift never hides: every model record carries a feature fingerprint, and ``check`` names the
model and layer whose features moved, and by how much, before it compares scores."""

from __future__ import annotations

import pytest
import torch

from prh_bench.align import feature_fingerprint, fingerprint_drift
from prh_bench.check import compare_runs
from prh_bench.results import read_result
from prh_bench.runner import RunConfig, run

import runner_plugin

GOOD = "tiny/pixels-a,tiny/pixels-b,tiny/words-a,tiny/words-b"


@pytest.fixture
def tiny(fresh_plugins, tmp_path, monkeypatch):
    fresh_plugins.register_plugin(runner_plugin, name="tiny")
    return tmp_path


def tiny_run(tmp_path, cache: str, **kw):
    config = RunConfig(
        models=GOOD,
        dataset="tiny-shapes",
        output=str(tmp_path / "results"),
        cache_dir=str(tmp_path / cache),  # a fresh machine: nothing cached from the baseline
        topk=3,
        null_permutations=0,
        **kw,
    )
    return read_result(run(config, progress=False, log=lambda m: None).path)


def layers(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 8, generator=g), torch.randn(n, 24, generator=g)]


def test_fingerprint_follows_an_evenly_spaced_subset():
    fp = feature_fingerprint(layers(40), samples=16, k=10)
    assert fp["samples"][0] == 0 and fp["samples"][-1] == 39 and len(fp["samples"]) == 16
    assert fp["k"] == 10 and len(fp["layers"]) == 2
    lists = [row.split() for row in fp["layers"][0].split(";")]
    assert len(lists) == 16 and all(len(r) == 10 for r in lists)
    for sample, row in zip(fp["samples"], lists, strict=True):
        assert str(sample) not in row  # a sample is not its own neighbour
    small = feature_fingerprint(layers(5), samples=16, k=10)  # k and the subset shrink to fit
    assert small["samples"] == [0, 1, 2, 3, 4] and small["k"] == 4


def test_fingerprint_kNN_lists_are_the_cosine_neighbours():
    x = layers(30)[1]
    fp = feature_fingerprint([x], samples=4, k=3)
    cos = torch.nn.functional.normalize(x.double(), dim=1)
    sim = cos @ cos.T
    sim.fill_diagonal_(-2)
    for sample, row in zip(fp["samples"], fp["layers"][0].split(";"), strict=True):
        expected = sorted(sim[sample].topk(3).indices.tolist())
        assert [int(i) for i in row.split()] == expected


def test_drift_is_zero_for_the_same_features_up_to_scale_and_rounding():
    a = layers()
    same = [x * 3.0 + 1e-7 * torch.randn_like(x) for x in a]  # another GEMM's rounding
    assert fingerprint_drift(feature_fingerprint(a), feature_fingerprint(same)) == [0.0, 0.0]


def test_drift_measures_how_many_neighbours_changed():
    a = layers()
    moved = [a[0], torch.randn_like(a[1])]  # layer 1 replaced by unrelated features
    drift = fingerprint_drift(feature_fingerprint(a), feature_fingerprint(moved))
    assert drift[0] == 0.0 and drift[1] > 0.5
    assert fingerprint_drift(feature_fingerprint(a), feature_fingerprint(a[:1])) is None


def test_a_rerun_on_the_same_data_has_the_same_fingerprints(tiny):
    base, again = tiny_run(tiny, "cache-a"), tiny_run(tiny, "cache-b")
    assert all(m.fingerprint is not None for m in base.models)
    assert [m.fingerprint for m in base.models] == [m.fingerprint for m in again.models]
    report = compare_runs(base, again)
    assert report.ok and not report.drifts and not report.notes


def test_changed_preprocessing_fails_check_even_when_scores_stay_within_tolerance(
    tiny, monkeypatch, run_cli
):
    base = tiny_run(tiny, "cache-a")
    monkeypatch.setattr(runner_plugin.PixelModel, "gamma", 4.0)  # a new version's preprocessing
    new = tiny_run(tiny, "cache-b")
    report = compare_runs(base, new, tolerance=1.0)  # every score is within this tolerance
    assert not report.failed and not report.ok
    moved = {d.model: d for d in report.drifts}
    assert set(moved) == {"tiny/pixels-a", "tiny/pixels-b"}  # the language models did not move
    drift = moved["tiny/pixels-a"]
    assert drift.layer in (0, 1) and drift.moved > 0.05
    assert drift.line().startswith(f"features of tiny/pixels-a moved (layer {drift.layer}: ")
    assert "of kNN neighbours changed" in drift.line()
    assert "features of tiny/pixels-a moved" in report.markdown()
    # the command: the moved features come first, and the check fails
    paths = sorted((tiny / "results" / "tiny-shapes").glob("*.json"))
    by_run = {read_result(p).run_id: p for p in paths}
    result = run_cli(
        "check", "--baseline", str(by_run[base.run_id]), str(by_run[new.run_id]), "--tolerance", "1"
    )
    assert result.exit_code == 1
    first = result.output.splitlines()[0]
    assert first.startswith("FEATURES MOVED: features of tiny/pixels-a moved (layer ")
    assert "2 models' features moved; 0 scores changed" in result.output


def test_a_changed_layer_count_is_drift(tiny, monkeypatch):
    base = tiny_run(tiny, "cache-a")
    new = base.model_copy(deep=True)
    fp = new.models[0].fingerprint
    fp.layers = fp.layers[:1]
    report = compare_runs(base, new)
    assert [(d.model, d.layer) for d in report.drifts] == [(new.models[0].id, None)]
    assert "2 layers -> 1" in report.drifts[0].line()
