"""The layer-pair sweep: the reference driver's preprocessing, the full matrix, its best pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prh_bench import InvalidInputError, align_layers, clamp_outliers, get_metric
from prh_bench.align import permutation_null, prepare_states, preprocess, quantile_threshold, sweep
from prh_bench.metrics import Metric

import reference_formulas as ref


def model_feats(n=96, layers=4, d=24, seed=0, heavy_tail=True):
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, 6, generator=g)
    out = []
    for i in range(layers):
        x = shared @ torch.randn(6, d, generator=g) + (0.5 + i) * torch.randn(n, d, generator=g)
        if heavy_tail:  # outlier dimensions, as in real LLM features
            x[:, 0] *= 40
        out.append(x)
    return torch.stack(out, dim=1)  # [N, L, D]


@pytest.mark.parametrize(
    "name,params",
    [
        ("mutual_knn", {"topk": 10}),
        ("cka", {}),
        ("cycle_knn", {"topk": 5}),
        ("cknna", {"topk": 10}),
    ],
)
def test_sweep_equals_reference_driver(name, params):
    a, b = model_feats(seed=1), model_feats(layers=3, d=16, seed=2)
    result = align_layers(a, b, name, **params)
    metric = getattr(ref, name, None) or (lambda x, y: ref.cka(x, y))
    matrix, best, best_index = ref.best_pair(a, b, metric, **params)
    np.testing.assert_allclose(result.matrix, matrix, atol=1e-6)
    assert result.best == pytest.approx(best, abs=1e-6)
    assert result.best_index == best_index
    assert result.matrix.shape == (4, 3)


def test_knn_sweep_is_bit_identical_to_the_per_pair_loop():
    a, b = model_feats(seed=3), model_feats(layers=5, d=40, seed=4)
    result = align_layers(a, b, "mutual_knn", q=None, topk=10)
    matrix, best, _ = ref.best_pair(a, b, ref.mutual_knn, q=None, topk=10)
    assert np.array_equal(result.matrix, matrix)
    assert result.best == best


def test_list_of_layers_with_different_widths():
    a = [torch.randn(50, d) for d in (8, 16, 32)]
    b = torch.randn(50, 2, 12)
    result = align_layers(a, b, get_metric("mutual_knn", topk=5))
    assert result.matrix.shape == (3, 2)
    assert result.best == result.matrix.max()
    assert result.matrix[result.best_index] == result.best


def test_one_threshold_per_model_by_default():
    feats = model_feats()
    clamped = clamp_outliers(list(feats.unbind(1)), 0.95)
    expected = ref.remove_outliers(feats, 0.95)
    assert torch.equal(torch.stack(clamped, dim=1), expected)
    exact = clamp_outliers(list(feats.unbind(1)), 0.95, exact=True)
    assert torch.equal(torch.stack(exact, dim=1), ref.remove_outliers(feats, 0.95, exact=True))


@pytest.mark.parametrize("m", [7, 200, 1001, 4096])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_fast_quantile_is_bit_identical_to_torch_quantile(m, q):
    x = torch.randn(33, m) * torch.rand(33, 1) * 10
    expected = torch.quantile(x.abs(), q, dim=1).mean()
    assert torch.equal(quantile_threshold(x, q), expected)


def test_clamp_per_layer_uses_each_layers_threshold():
    feats = model_feats()
    per_layer = clamp_outliers(list(feats.unbind(1)), 0.9, per_layer=True)
    for i, layer in enumerate(per_layer):
        assert torch.equal(layer, ref.remove_outliers(feats[:, i : i + 1], 0.9)[:, 0])


def test_q_none_and_normalize_false_pass_features_through():
    a, b = model_feats(seed=5), model_feats(seed=6)
    result = align_layers(a, b, "cka", q=None, normalize=False)
    assert result.matrix[1, 2] == pytest.approx(ref.cka(a[:, 1], b[:, 2]), abs=1e-6)
    assert result.preprocessing == {
        "q": None,
        "exact": False,
        "clamp_per_layer": False,
        "normalize": False,
        "concat": False,
    }


def test_concat_adds_the_all_layers_candidate():
    a, b = model_feats(layers=3), model_feats(layers=2, seed=9)
    result = align_layers(a, b, "mutual_knn", concat=True, topk=10)
    assert result.matrix.shape == (4, 3)
    joined_a = torch.cat(clamp_outliers(list(a.unbind(1)), 0.95), dim=1)
    joined_b = torch.cat(clamp_outliers(list(b.unbind(1)), 0.95), dim=1)
    norm = torch.nn.functional.normalize
    assert result.matrix[3, 2] == ref.mutual_knn(norm(joined_a, dim=1), norm(joined_b, dim=1), 10)


def test_each_layer_is_prepared_once(monkeypatch):
    metric = get_metric("mutual_knn", topk=5)
    calls = []
    original = type(metric).prepare
    monkeypatch.setattr(
        type(metric), "prepare", lambda self, x: calls.append(1) or original(self, x)
    )
    align_layers(model_feats(layers=6), model_feats(layers=5, seed=3), metric)
    assert len(calls) == 11  # L_a + L_b, not L_a x L_b


@pytest.mark.parametrize(
    "a,b,kwargs,message",
    [
        (torch.randn(10, 4), torch.randn(10, 2, 4), {}, r"\[N, L, D\] tensor or a list"),
        ([], torch.randn(10, 2, 4), {}, "feats_a has no layers"),
        (
            torch.randn(10, 2, 4),
            torch.randn(11, 2, 4),
            {},
            "same number of samples N, got 10 and 11",
        ),
        (torch.randn(10, 2, 4), torch.randn(10, 2, 4), {"topk": 10}, r"topk must be < N"),
        (torch.randn(10, 2, 4), torch.randn(10, 2, 4), {"q": 1.5}, r"q must be in \(0, 1\)"),
        ([torch.randn(10, 4), torch.randn(9, 4)], torch.randn(10, 2, 4), {}, "same N"),
        ("features", torch.randn(10, 2, 4), {}, "got str"),
    ],
)
def test_bad_input(a, b, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        align_layers(a, b, "mutual_knn", **{"topk": 3, **kwargs})


def test_nan_layer_names_layer_and_sample():
    a = torch.randn(10, 3, 4)
    a[4, 2, 1] = float("nan")
    with pytest.raises(InvalidInputError, match="feats_a layer 2 contains NaN or inf .*index 4"):
        align_layers(a, torch.randn(10, 2, 4), "mutual_knn", topk=3)


def reference_null(layers_a, layers_b, formula, permutations, seed, **params):
    """The shuffled-pairs floor by hand: each permutation reorders B's samples (the same
    seeded torch draws), then the best score over all layer pairs, from scratch."""
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(permutations):
        perm = torch.randperm(layers_b[0].shape[0], generator=g)
        values.append(max(formula(x, y[perm], **params) for x in layers_a for y in layers_b))
    return values


@pytest.mark.parametrize(
    "name,params,formula",
    [
        ("mutual_knn", {"topk": 5}, ref.mutual_knn),
        ("cka", {}, ref.cka),
        ("cknna", {"topk": 5}, ref.cknna),
    ],
)
def test_permutation_null_equals_the_shuffled_reference_sweep(name, params, formula):
    metric = get_metric(name, **params)
    # one seed: both models see the same shared structure, so the true pairing stands out
    layers_a = preprocess(model_feats(n=40, layers=3, d=12, seed=11), "feats_a")
    layers_b = preprocess(model_feats(n=40, layers=2, d=8, seed=11), "feats_b")
    states_a, states_b = prepare_states(metric, layers_a), prepare_states(metric, layers_b)
    _, observed, _ = sweep(metric, states_a, states_b)
    null = permutation_null(metric, states_a, states_b, observed, permutations=12, seed=7)

    expected = reference_null(layers_a, layers_b, formula, 12, 7, **params)
    np.testing.assert_allclose(null.values, expected, atol=1e-6)
    assert null.permutations == 12
    assert null.mean == pytest.approx(np.mean(expected), abs=1e-6)
    assert null.std == pytest.approx(np.std(expected), abs=1e-6)
    assert null.p_value == (1 + sum(v >= observed for v in expected)) / (12 + 1)
    # the same seed gives the same null; another seed another one
    again = permutation_null(metric, states_a, states_b, observed, permutations=12, seed=7)
    assert again.values == null.values
    other = permutation_null(metric, states_a, states_b, observed, permutations=12, seed=8)
    assert other.values != null.values


def test_permutation_null_p_value_counts_ties_and_the_observed_itself():
    metric = get_metric("mutual_knn", topk=5)
    states_a = prepare_states(metric, preprocess(model_feats(n=40, layers=2, seed=13), "a"))
    states_b = prepare_states(metric, preprocess(model_feats(n=40, layers=2, seed=14), "b"))
    values = permutation_null(metric, states_a, states_b, 0.0, permutations=10, seed=3).values
    assert len(set(values)) < len(values)  # kNN scores are discrete: some shuffles tie
    for observed in [-1.0, 2.0, *set(values)]:  # below all, above all, tied with each value
        null = permutation_null(metric, states_a, states_b, observed, permutations=10, seed=3)
        at_least = sum(v >= observed for v in values)
        assert null.p_value == (1 + at_least) / (10 + 1)
        assert null.values == values
    assert permutation_null(metric, states_a, states_b, -1.0, 10, seed=3).p_value == 1.0


def test_permutation_null_permutes_the_pairing_not_the_features():
    # B is A: the true pairing scores 1, every shuffled pairing is far below; permuting the
    # features (columns) instead would leave every null value at 1
    metric = get_metric("mutual_knn", topk=5)
    layers = preprocess(model_feats(n=40, layers=2, seed=15), "feats")
    states = prepare_states(metric, layers)
    _, observed, _ = sweep(metric, states, states)
    null = permutation_null(metric, states, states, observed, permutations=25, seed=0)
    assert observed == 1.0
    assert max(null.values) < 0.5
    assert null.p_value == 1 / 26


def test_permutation_null_without_permute_prepares_the_shuffled_layers(monkeypatch):
    metric = get_metric("mutual_knn", topk=5)
    layers_a = preprocess(model_feats(n=40, seed=16), "feats_a")
    layers_b = preprocess(model_feats(n=40, seed=17), "feats_b")
    states_a, states_b = prepare_states(metric, layers_a), prepare_states(metric, layers_b)
    fast = permutation_null(metric, states_a, states_b, 0.5, permutations=10, seed=4)

    def no_permute(self, state, perm):
        raise NotImplementedError

    monkeypatch.setattr(type(metric), "permute", no_permute)
    slow = permutation_null(metric, states_a, states_b, 0.5, 10, seed=4, layers_b=layers_b)
    assert slow == fast
    with pytest.raises(InvalidInputError, match="^permutations must be >= 1, got 0$"):
        permutation_null(metric, states_a, states_b, 0.5, permutations=0)


class TableMetric(Metric):
    """Scores read from a fixed [L_a, L_b] table: the states are the layer numbers."""

    name = "table"

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = table

    def compare(self, state_a: int, state_b: int) -> float:
        return self.table[state_a][state_b]


def test_ties_go_to_the_first_maximum_in_b_major_order():
    """As measure_alignment.py: B's (vision) layers outside, A's (language) inside, first `>`."""
    nan = float("nan")
    table = [
        [0.1, 0.2, 0.9],  # A layer 0: ties at (0, 2) ...
        [0.3, 0.9, 0.5],  # ... and (1, 1), which comes first with B outside
        [0.9, nan, 0.2],  # ... and (2, 0), first of all
    ]
    metric = TableMetric(table)
    matrix, best, best_index = sweep(metric, [0, 1, 2], [0, 1, 2])
    assert best == 0.9 and best_index == (2, 0)  # row-major order would give (0, 2)
    table[2][0] = 0.1
    assert sweep(metric, [0, 1, 2], [0, 1, 2])[2] == (1, 1)
    # many ties: seeded tables of small integers, against the reference driver's own loop
    rng = np.random.default_rng(0)
    for shape in [(3, 4), (5, 2), (7, 7)]:
        table = rng.integers(0, 3, size=shape).astype(float)
        _, best, best_index = sweep(TableMetric(table.tolist()), range(shape[0]), range(shape[1]))
        assert (best, best_index) == ref.driver_best(table)
