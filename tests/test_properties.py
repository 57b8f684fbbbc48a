"""Property-based tests (hypothesis) over metric inputs: odd shapes, dtypes, duplicate rows,
constant features. Every metric returns a float or raises a typed InvalidInputError."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prh_bench import InvalidInputError, align_layers, get_metric

METRICS = [
    "mutual_knn",
    "cycle_knn",
    "lcs_knn",
    "lcs_knn_normalized",
    "edit_distance_knn",
    "cka",
    "unbiased_cka",
    "cknna",
    "cknna_paper",
    "svcca",
]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def feature_pair(draw):
    n = draw(st.integers(min_value=1, max_value=24))
    d_a = draw(st.integers(min_value=1, max_value=12))
    d_b = draw(st.integers(min_value=1, max_value=12))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
    kind = draw(st.sampled_from(["random", "duplicates", "constant", "huge", "tiny", "int"]))
    seed = draw(st.integers(min_value=0, max_value=2**16))
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d_a, generator=g)
    b = torch.randn(n, d_b, generator=g)
    if kind == "duplicates":
        a, b = a[torch.arange(n) // 2], b[torch.arange(n) // 2]
    elif kind == "constant":
        a = torch.full_like(a, 3.0)
    elif kind == "huge":
        a = a * 1e30
    elif kind == "tiny":
        b = b * 1e-30
    elif kind == "int":
        return a.round().long(), b.to(dtype), draw(st.integers(-1, n + 1))
    return a.to(dtype), b.to(dtype), draw(st.integers(min_value=-1, max_value=n + 1))


def call(name, a, b, topk):
    params = {"topk": topk} if "knn" in name or name.startswith("cknna") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn and numpy warn on degenerate inputs
        return get_metric(name, **params).score(a, b)


@pytest.mark.parametrize("name", METRICS)
@SETTINGS
@given(data=feature_pair())
def test_metric_returns_a_float_or_a_typed_error(name, data):
    a, b, topk = data
    try:
        value = call(name, a, b, topk)
    except InvalidInputError as exc:
        assert "\n" not in str(exc)  # one line
        return
    assert isinstance(value, float)
    if name not in ("svcca", "cka", "unbiased_cka", "cknna", "cknna_paper"):
        assert math.isfinite(value)


@SETTINGS
@given(data=feature_pair(), layers=st.integers(min_value=1, max_value=3))
def test_sweep_returns_a_consistent_alignment_or_a_typed_error(data, layers):
    a, b, topk = data
    try:
        result = align_layers([a] * layers, [b], "mutual_knn", topk=topk)
    except InvalidInputError:
        return
    assert result.matrix.shape == (layers, 1)
    assert result.best == np.nanmax(result.matrix)
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
