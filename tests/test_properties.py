"""Property-based tests (hypothesis) over metric inputs: odd shapes, dtypes, duplicate rows,
constant features, extreme scales.

Valid inputs are generated valid (N, topk and cca_dim within each metric's limits), so every
example checks the property: none may raise. Each kind of invalid input has its own test that
asserts the typed InvalidInputError and its exact message.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prh_bench import InvalidInputError, align_layers, get_metric

KNN_GRAPH = ["mutual_knn", "cycle_knn", "lcs_knn", "lcs_knn_normalized", "edit_distance_knn"]
KERNEL = ["cka", "unbiased_cka", "cknna", "cknna_paper", "svcca"]
METRICS = KNN_GRAPH + KERNEL
WITH_TOPK = [*KNN_GRAPH, "cknna", "cknna_paper"]
UNBIASED = ["unbiased_cka", "cknna", "cknna_paper"]  # the unbiased HSIC needs N >= 4
MIN_N = {"cka": 1, **dict.fromkeys(UNBIASED, 4)}  # the rest need N >= 2 for a neighbour
MIN_TOPK = {"cknna": 2, "cknna_paper": 2}

# where a score must lie; beyond rounding, cka is a cosine of PSD matrices, svcca a correlation
BOUNDS = {
    **dict.fromkeys(["mutual_knn", "cycle_knn", "lcs_knn_normalized", "edit_distance_knn"], (0, 1)),
    "cka": (0, 1),
    "svcca": (-1, 1),
}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
KINDS = ["random", "duplicates", "constant", "huge", "tiny"]
# as large as the dtype holds and, once scored in float32, with finite inner products
HUGE = {torch.float16: 1e3}
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_pair(n, d_a, d_b, dtype, kind, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d_a, generator=g, dtype=torch.float64)
    b = torch.randn(n, d_b, generator=g, dtype=torch.float64)
    if kind == "duplicates":
        a, b = a[torch.arange(n) // 2], b[torch.arange(n) // 2]
    elif kind == "constant":
        a = torch.full_like(a, 3.0)
    elif kind == "huge":
        a = a * HUGE.get(dtype, 1e15)
    elif kind == "tiny":
        b = b * 1e-30
    return a.to(dtype), b.to(dtype)


@st.composite
def pairs(draw, n=st.integers(min_value=1, max_value=24)):
    """(n, feats_a, feats_b) of any shape, dtype and kind, all finite."""
    n = draw(n)
    d_a = draw(st.integers(min_value=1, max_value=12))
    d_b = draw(st.integers(min_value=1, max_value=12))
    dtype = draw(st.sampled_from(DTYPES))
    kind = draw(st.sampled_from(KINDS))
    seed = draw(st.integers(min_value=0, max_value=2**16))
    return (n, *make_pair(n, d_a, d_b, dtype, kind, seed))


@st.composite
def valid_case(draw, name):
    """Features and parameters ``name`` accepts."""
    n, a, b = draw(pairs(st.integers(min_value=MIN_N.get(name, 2), max_value=24)))
    if name in WITH_TOPK:
        params = {"topk": draw(st.integers(min_value=MIN_TOPK.get(name, 1), max_value=n - 1))}
    elif name == "svcca":
        d = min(a.shape[1], b.shape[1])
        params = {"cca_dim": draw(st.integers(min_value=1, max_value=min(n - 1, d)))}
    else:
        params = {}
    return a, b, params


def score(name, a, b, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn and numpy warn on degenerate inputs
        return get_metric(name, **params).score(a, b)


def raises(message):
    """pytest.raises for an InvalidInputError whose message is exactly ``message``."""
    return pytest.raises(InvalidInputError, match=f"^{re.escape(message)}$")


# -- valid inputs: the property holds on every example ----------------------------------------


@pytest.mark.parametrize("name", METRICS)
@SETTINGS
@given(data=st.data())
def test_metric_scores_every_valid_input(name, data):
    a, b, params = data.draw(valid_case(name))
    value = score(name, a, b, **params)
    assert isinstance(value, float)
    if name in BOUNDS:
        low, high = BOUNDS[name]
        assert low - 1e-9 <= value <= high + 1e-9
    elif name == "lcs_knn":
        assert 0 <= value <= params["topk"]  # a length, not divided by k
    else:
        assert not math.isinf(value)  # NaN means undefined (constant features), never inf


@SETTINGS
@given(case=valid_case("mutual_knn"), layers=st.integers(min_value=1, max_value=3))
def test_sweep_of_repeated_layers_is_consistent(case, layers):
    a, b, params = case
    result = align_layers([a] * layers, [b], "mutual_knn", **params)
    assert result.matrix.shape == (layers, 1)
    assert (result.matrix == result.matrix[0]).all()  # the same layer scores the same
    assert result.best == np.nanmax(result.matrix)
    assert result.best_index == (0, 0)  # the first maximum
    assert 0.0 <= result.best <= 1.0


@SETTINGS
@given(
    n=st.integers(min_value=3, max_value=30),
    d=st.integers(min_value=1, max_value=8),
    seed=st.integers(0, 1000),
)
def test_mutual_knn_is_symmetric_and_bounded(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    k = max(1, min(n - 1, 1 + seed % (n - 1)))
    metric = get_metric("mutual_knn", topk=k)
    ab, ba = metric.score(a, b), metric.score(b, a)
    assert ab == ba and 0.0 <= ab <= 1.0
    assert metric.score(a, a) == 1.0


# -- invalid inputs: each kind refused with its own message ------------------------------------


@pytest.mark.parametrize("name", METRICS)
@SETTINGS
@given(data=st.data(), side=st.sampled_from(["feats_a", "feats_b"]))
def test_integer_features_are_refused(name, data, side):
    a, b, params = data.draw(valid_case(name))
    a, b = (a.round().long(), b) if side == "feats_a" else (a, b.round().long())
    with raises(f"{side} must be a floating tensor, got dtype torch.int64"):
        score(name, a, b, **params)


@pytest.mark.parametrize("name", METRICS)
@SETTINGS
@given(data=st.data(), side=st.sampled_from(["feats_a", "feats_b"]))
def test_non_finite_features_name_the_first_bad_sample(name, data, side):
    a, b, params = data.draw(valid_case(name))
    feats = (a if side == "feats_a" else b).double()
    row = data.draw(st.integers(min_value=0, max_value=feats.shape[0] - 1))
    col = data.draw(st.integers(min_value=0, max_value=feats.shape[1] - 1))
    beyond_range = float(torch.finfo(a.dtype).max) * 2  # becomes inf in the dtype
    feats[row, col] = data.draw(st.sampled_from([math.nan, math.inf, -math.inf, beyond_range]))
    feats = feats.to(a.dtype)
    a, b = (feats, b) if side == "feats_a" else (a, feats)
    with raises(f"{side} contains NaN or inf (first at sample index {row})"):
        score(name, a, b, **params)


@pytest.mark.parametrize("name", METRICS)
@SETTINGS
@given(data=st.data())
def test_different_sample_counts_are_refused(name, data):
    a, b, params = data.draw(valid_case(name))
    n = a.shape[0]
    m = data.draw(st.integers(min_value=1, max_value=2 * n - 1))
    m += m >= n  # any count from 1 to 2N but N
    with raises(f"feats_a and feats_b must have the same number of samples N, got {n} and {m}"):
        score(name, a, torch.cat([b, b])[:m], **params)


@pytest.mark.parametrize("name", WITH_TOPK)
@SETTINGS
@given(data=st.data())
def test_topk_outside_its_range_is_refused(name, data):
    n, a, b = data.draw(pairs(st.integers(min_value=MIN_N.get(name, 2), max_value=24)))
    minimum = MIN_TOPK.get(name, 1)
    too_large = data.draw(st.integers(min_value=n, max_value=n + 5))
    with raises(f"topk must be < N (the number of samples, {n}), got topk={too_large}"):
        score(name, a, b, topk=too_large)
    too_small = data.draw(st.integers(min_value=-3, max_value=minimum - 1))
    with raises(f"topk must be >= {minimum}, got {too_small}"):
        get_metric(name, topk=too_small)
    not_int = data.draw(st.sampled_from([2.0, 2.5, "3", True]))
    with raises(f"topk must be an integer, got {not_int!r}"):
        get_metric(name, topk=not_int)


@pytest.mark.parametrize("name", UNBIASED)
@SETTINGS
@given(case=pairs(st.integers(min_value=1, max_value=3)))
def test_unbiased_hsic_refuses_fewer_than_4_samples(name, case):
    n, a, b = case
    with raises(f"unbiased HSIC needs N >= 4 samples, got N={n}"):
        score(name, a, b)


@SETTINGS
@given(case=pairs(st.integers(min_value=1, max_value=24)), data=st.data())
def test_svcca_cca_dim_not_below_n_is_refused(case, data):
    n, a, b = case
    too_many = data.draw(st.integers(min_value=n, max_value=n + 5))
    with raises(f"cca_dim must be < N (the number of samples, {n}), got {too_many}"):
        score("svcca", a, b, cca_dim=too_many)
    too_few = data.draw(st.integers(min_value=-3, max_value=0))
    with raises(f"cca_dim must be an integer >= 1, got {too_few}"):
        get_metric("svcca", cca_dim=too_few)


@SETTINGS
@given(data=st.data(), n=st.integers(min_value=3, max_value=24), narrow_side=st.booleans())
def test_svcca_cca_dim_above_a_feature_width_is_refused(data, n, narrow_side):
    narrow = data.draw(st.integers(min_value=1, max_value=n - 2))
    cca_dim = data.draw(st.integers(min_value=narrow + 1, max_value=n - 1))
    wide = data.draw(st.integers(min_value=cca_dim, max_value=24))
    d_a, d_b = (narrow, wide) if narrow_side else (wide, narrow)
    a, b = make_pair(n, d_a, d_b, torch.float32, "random", seed=n)
    with raises(f"cca_dim must be <= D (the feature size, {narrow}), got {cca_dim}"):
        score("svcca", a, b, cca_dim=cca_dim)


@pytest.mark.parametrize("name", WITH_TOPK)
@SETTINGS
@given(data=st.data(), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_knn_refuses_inner_products_that_overflow(name, data, dtype):
    a, b, params = data.draw(valid_case(name))
    huge = torch.full(a.shape, 1e30, dtype=dtype)  # every inner product is >= 1e60
    # half precision is scored in float32, so the message names float32 for both
    with pytest.raises(
        InvalidInputError,
        match=r"^inner products of the features overflow "
        r"torch\.float32 \(largest \|value\| ",
    ):
        score(name, huge, b, **params)
