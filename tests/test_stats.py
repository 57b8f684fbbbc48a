"""Intervals, honest scores, rank ranges, rank agreement, prediction: simulations and the run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prh_bench.align import prepare_states, preprocess, sweep
from prh_bench.errors import InvalidInputError
from prh_bench.registry import get_metric
from prh_bench.results import ScoreRecord, load_results, read_result
from prh_bench.stats import (
    ReplicateStates,
    agreement,
    format_p,
    format_rank,
    half_samples,
    predict,
    prediction_rows,
    rank_ranges,
)

import runner_plugin

# --------------------------------------------------------------------------- a population


def population(noise_a: list[float], noise_b: list[float], shared: bool = False):
    """Draw N samples of two synthetic models: a shared latent seen through each layer's
    projection plus noise. ``shared``: every layer of a model has the same projection and
    noise level, so every layer pair has the same true alignment."""
    g = np.random.default_rng(7)
    proj_a = [g.standard_normal((8, 32))] * len(noise_a) if shared else None
    proj_b = [g.standard_normal((8, 24))] * len(noise_b) if shared else None
    proj_a = proj_a or [g.standard_normal((8, 32)) for _ in noise_a]
    proj_b = proj_b or [g.standard_normal((8, 24)) for _ in noise_b]

    def draw(n: int, rng: np.random.Generator):
        z = rng.standard_normal((n, 8))

        def model(projs, noises):
            return [
                torch.tensor(z @ w + s * rng.standard_normal((n, w.shape[1])), dtype=torch.float32)
                for w, s in zip(projs, noises, strict=True)
            ]

        return preprocess(model(proj_a, noise_a), "a"), preprocess(model(proj_b, noise_b), "b")

    return draw


@pytest.fixture
def one_thread():
    """Small kNN graphs run fastest on one thread (and do not crowd a shared CI machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def simulate(draw, n: int, draws: int, replicates: int):
    """Per draw: the full-sample sweep (matrix, best) and the replicates' uncertainty."""
    metric = get_metric("mutual_knn", topk=10)
    out = []
    for d in range(draws):
        a, b = draw(n, np.random.default_rng(1000 + d))
        matrix, best, _ = sweep(metric, prepare_states(metric, a), prepare_states(metric, b))
        u = ReplicateStates(n, replicates, seed=d).uncertainty(metric, best, ("a", a), ("b", b))
        out.append((matrix, best, u))
    return out


def test_the_interval_covers_the_expected_score_in_90_to_99_percent_of_draws(one_thread):
    # the statistic is the best over 3 x 3 layer pairs; its expected value at N is the mean
    # over many independent draws; each draw's interval comes from that draw alone
    runs = simulate(population([1.0, 1.5, 2.0], [1.2, 1.8, 2.5]), n=128, draws=100, replicates=20)
    best = np.array([r[1] for r in runs])
    expected = best.mean()
    covered = np.mean([u.interval[0] <= expected <= u.interval[1] for _, _, u in runs])
    assert 0.90 <= covered <= 0.99
    # and the interval is about as wide as the draws really spread (not just wide)
    se = np.mean([u.se for _, _, u in runs])
    assert 0.7 < se / best.std(ddof=1) < 1.5


def test_the_maximum_is_optimistic_and_the_honest_score_is_not(one_thread):
    # every layer pair has the same true alignment, so any single pair's mean is the truth
    runs = simulate(population([2.0] * 4, [2.0] * 4, shared=True), n=128, draws=20, replicates=6)
    truth = np.mean([r[0].mean() for r in runs])
    best = np.array([r[1] for r in runs])
    honest = np.array([r[2].honest for r in runs])
    spread = np.std([r[0][0, 0] for r in runs], ddof=1)  # one pair's sampling sd
    assert best.mean() - truth > 0.5 * spread  # the maximum of 16 equal pairs runs high
    assert abs(honest.mean() - truth) < 0.25 * spread
    assert np.mean([r[2].optimism for r in runs]) > 0.5 * spread


# --------------------------------------------------------------------------- the pieces


def test_half_samples_are_seeded_complementary_halves():
    subsets = half_samples(11, 4, seed=3)
    assert len(subsets) == 4
    for first, second in (subsets[:2], subsets[2:]):
        assert len(first) == 5 and len(second) == 6
        assert sorted([*first, *second]) == list(range(11))
        assert list(first) == sorted(first)
    assert all((x == y).all() for x, y in zip(subsets, half_samples(11, 4, seed=3), strict=True))
    with pytest.raises(InvalidInputError, match="even number"):
        half_samples(11, 3)


def test_halves_too_small_for_topk_name_the_fix():
    metric = get_metric("mutual_knn", topk=10)
    layers = [torch.randn(20, 4)]
    with pytest.raises(InvalidInputError, match="halves of the 20 samples .* replicates = 0"):
        ReplicateStates(20, 2).uncertainty(metric, 0.5, ("a", layers), ("b", layers))


def test_p_values_at_the_floor_say_so():
    assert format_p(1 / 101, 100) == "<= 0.0099"
    assert format_p(1 / 20, 19) == "<= 0.0500"
    assert format_p(3 / 101, 100) == "0.0297"


def test_rank_ranges_join_what_the_paired_replicates_cannot_tell_apart():
    rng = np.random.default_rng(0)
    common = rng.normal(0, 0.05, 20)  # the same subsets move every model alike
    replicates = {
        "top": list(0.50 + common + rng.normal(0, 0.001, 20)),
        "twin": list(0.499 + common + rng.normal(0, 0.001, 20)),
        "low": list(0.40 + common + rng.normal(0, 0.001, 20)),
    }
    values = {"top": 0.5, "twin": 0.4995, "low": 0.4}
    ranks = rank_ranges(values, replicates, n=100)
    assert ranks == {"top": (1, 2), "twin": (1, 2), "low": (3, 3)}
    assert [format_rank(ranks[m]) for m in values] == ["1-2", "1-2", "3"]
    # without pairing (independent noise as large as the common one) nothing is separable
    loose = {m: list(v + rng.normal(0, 0.05, 20)) for m, v in values.items()}
    assert set(rank_ranges(values, loose, n=100).values()) <= {(1, 3), (1, 2), (2, 3)}


def _score(metric: str, pair: int, value: float, replicates: list[float]) -> ScoreRecord:
    return ScoreRecord(
        model_a=f"lm{pair}",
        model_b="vm",
        metric=metric,
        value=value,
        best_index=(0, 0),
        matrix=[[value]],
        preprocessing={},
        replicates=replicates,
    )


def test_agreement_is_kendalls_tau_with_an_interval_from_the_replicates():
    rng = np.random.default_rng(1)
    values = [0.1, 0.2, 0.3, 0.4, 0.5]
    first = [_score("m1", i, v, list(v + rng.normal(0, 0.01, 10))) for i, v in enumerate(values)]
    same = [
        _score("m2", i, 2 * v, list(2 * v + rng.normal(0, 0.02, 10))) for i, v in enumerate(values)
    ]
    reverse = [_score("m3", i, -v, list(-v + rng.normal(0, 0.3, 10))) for i, v in enumerate(values)]
    records = {(r.metric_a, r.metric_b): r for r in agreement([first, same, reverse], n=100)}
    assert records["m1", "m2"].tau == pytest.approx(1.0) and records["m1", "m2"].n_pairs == 5
    low, high = records["m1", "m2"].interval
    assert 0.5 < low <= 1.0 == high  # clipped at 1
    assert records["m1", "m3"].tau == pytest.approx(-1.0)
    low, high = records["m1", "m3"].interval
    assert low == -1.0 and high > -1.0  # noisy replicates: a wide interval


def test_prediction_intervals_hold_95_percent_of_new_values():
    rng = np.random.default_rng(2)
    inside = 0
    for _ in range(400):
        x = list(rng.uniform(0, 1, 8))
        y = [1 + 2 * v + rng.normal(0, 0.3) for v in x]
        x_new = rng.uniform(0, 1)
        p = predict(x, y, x_new)
        inside += p.interval[0] <= 1 + 2 * x_new + rng.normal(0, 0.3) <= p.interval[1]
    assert 0.92 <= inside / 400 <= 0.98
    # the line itself is ordinary least squares
    slope, intercept = np.polyfit(x, y, 1)
    assert predict(x, y, 0.5).value == pytest.approx(intercept + 0.5 * slope)


def test_prediction_rows_hold_one_out_and_predict_the_unknown():
    alignment = {f"m{i}": 0.1 * i for i in range(6)}
    downstream = {f"m{i}": 1 - 0.5 * 0.1 * i + (0.01 if i % 2 else -0.01) for i in range(5)}
    rows = {r["model"]: r for r in prediction_rows(alignment, downstream)}
    assert rows["m5"]["actual"] is None and rows["m5"]["inside"] is None
    assert rows["m5"]["predicted"] == pytest.approx(0.75, abs=0.02)
    assert all(rows[f"m{i}"]["inside"] for i in range(5))
    with pytest.raises(InvalidInputError, match="at least 4 models"):
        prediction_rows(alignment, {"m0": 1.0, "m1": 0.9, "m2": 0.8})


# --------------------------------------------------------------------------- the run


@pytest.fixture
def tiny(fresh_plugins, tmp_path, monkeypatch):
    fresh_plugins.register_plugin(runner_plugin, name="tiny")
    monkeypatch.setenv("PRH_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_a_run_records_intervals_honest_scores_ranks_and_agreement(tiny):
    from prh_bench.runner import RunConfig, run, summary_rows

    config = RunConfig(
        models="tiny/pixels-a,tiny/pixels-b,tiny/words-a,tiny/words-b",
        dataset="tiny-shapes",
        output=str(tiny / "results"),
        metrics=["mutual_knn", "cka"],
        null_permutations=9,
        topk=3,
        replicates=6,
    )
    path = run(config, progress=False, log=lambda m: None).path
    result = read_result(path)
    assert result.schema_version == 3 and result.replicates == 6
    for s in result.scores:
        assert len(s.replicates) == 6 and s.se >= 0
        assert s.interval[0] <= s.value <= s.interval[1]
        assert s.honest == pytest.approx(s.value - s.optimism)
        assert 1 <= s.rank_range[0] <= s.rank_range[1] <= 4
        assert s.null.at_floor == (s.null.p_value == pytest.approx(0.1))
    (record,) = result.agreement
    assert (record.metric_a, record.n_pairs) == ("mutual_knn(topk=3)", 4)
    assert record.metric_b.startswith("cka(") and -1 <= record.tau <= 1
    row = summary_rows(result)[0]
    assert row["95% interval"].startswith("[") and row["rank"]
    frame = load_results(path)
    for column in ("ci_low", "ci_high", "se", "honest", "optimism", "rank_low", "p_at_floor"):
        assert frame[column].notna().all()

    # a version-1 file (before this schema) still loads, its new fields empty
    data = json.loads(path.read_text())
    data["schema_version"] = 1
    for key in ("replicates", "agreement"):
        data.pop(key)
    for s in data["scores"]:
        for key in ("interval", "se", "replicates", "honest", "optimism", "rank_range"):
            s.pop(key)
        s["null"].pop("at_floor")
    old = tiny / "old.json"
    old.write_text(json.dumps(data))
    loaded = read_result(old)
    assert loaded.replicates == 0 and loaded.scores[0].interval is None
    assert load_results(old)["ci_low"].isna().all()


def test_odd_replicates_are_refused():
    from prh_bench.runner import ConfigError, RunConfig

    with pytest.raises(ConfigError, match="even number"):
        RunConfig(replicates=5)


def test_cli_run_table_agreement_and_predict(tiny, run_cli):
    out = tiny / "results"
    args = ["--models", "tiny/pixels-a,tiny/pixels-b,tiny/words-a,tiny/words-b"]
    args += ["--dataset", "tiny-shapes", "--output", str(out), "--topk", "3"]
    args += ["--metric", "mutual_knn", "--metric", "cka", "--null-permutations", "9"]
    result = run_cli("run", *args, "--replicates", "4")
    assert result.exit_code == 0, result.output
    assert "95% interval" in result.output and "honest" in result.output and "rank" in result.output
    (path,) = out.rglob("*.json")
    assert read_result(path).replicates == 4

    result = run_cli("agreement", str(path))
    assert result.exit_code == 0, result.output
    assert "mutual_knn(topk=3)" in result.output and "cka(" in result.output
    (row,) = json.loads(run_cli("agreement", str(path), "--json").output)
    assert row["n_pairs"] == 4 and row["interval"] is not None

    # predict: six language models aligned to one vision model, five with a known score
    data = json.loads(path.read_text())
    vision = next(m for m in data["models"] if m["modality"] == "vision")
    language = next(m for m in data["models"] if m["modality"] == "language")
    score = next(s for s in data["scores"] if s["metric"] == "mutual_knn")
    data["models"], data["scores"] = [vision], []
    for i in range(6):
        known = {"acc": {"value": 0.2 + 0.5 * 0.1 * i + 0.01 * (-1) ** i, "source": "t"}}
        data["models"].append({**language, "id": f"lm{i}", "downstream": known if i < 5 else {}})
        data["scores"].append(
            {**score, "model_a": f"lm{i}", "model_b": vision["id"], "value": 0.1 * i}
        )
    fake = tiny / "fake.json"
    fake.write_text(json.dumps(data))
    result = run_cli("predict", str(fake), "--vision-model", vision["id"], "--downstream", "acc")
    assert result.exit_code == 0, result.output
    assert "lm5" in result.output and "0.45" in result.output  # 0.2 + 0.05 * 5
    assert result.output.strip().endswith("leave-one-out: 5 of 5 inside their 95% interval")

    result = run_cli("predict", str(fake), "--vision-model", "nope", "--downstream", "acc")
    assert result.exit_code == 1 and result.output.startswith("Error: no mutual_knn score")
    result = run_cli("predict", str(fake), "--vision-model", vision["id"], "--downstream", "x")
    assert result.exit_code == 1 and "at least 4 models with both scores" in result.output
