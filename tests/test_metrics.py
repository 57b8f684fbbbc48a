"""The metrics against plain re-implementations of the reference formulas, and their properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prh_bench import InvalidInputError, get_metric

import reference_formulas as ref

KNN = ["mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn"]
KERNEL = ["cka", "unbiased_cka", "cknna"]
REFERENCE = {
    "mutual_knn": ref.mutual_knn,
    "cycle_knn": ref.cycle_knn,
    "lcs_knn": ref.lcs_knn,
    "edit_distance_knn": ref.edit_distance_knn,
    "cka": lambda a, b: ref.cka(a, b),
    "unbiased_cka": lambda a, b: ref.cka(a, b, unbiased=True),
    "cknna": ref.cknna,
}


def related_pair(n: int, d_a: int, d_b: int, seed: int = 0, noise: float = 0.7):
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, 8, generator=g)
    a = shared @ torch.randn(8, d_a, generator=g) + noise * torch.randn(n, d_a, generator=g)
    b = shared @ torch.randn(8, d_b, generator=g) + noise * torch.randn(n, d_b, generator=g)
    return F.normalize(a, dim=1), F.normalize(b, dim=1)


@pytest.mark.parametrize("name", KNN + KERNEL)
@pytest.mark.parametrize("n,d_a,d_b,topk", [(64, 16, 24, 10), (150, 300, 40, 5), (97, 33, 33, 20)])
def test_equals_reference_formula(name, n, d_a, d_b, topk):
    a, b = related_pair(n, d_a, d_b, seed=n)
    kwargs = {"topk": topk} if name in KNN or name == "cknna" else {}
    ours = get_metric(name, **kwargs).score(a, b)
    theirs = REFERENCE[name](a, b, **kwargs)
    assert isinstance(ours, float)
    assert ours == pytest.approx(theirs, abs=1e-6)


@pytest.mark.parametrize("name", ["mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn"])
def test_knn_metrics_are_bit_identical(name):
    a, b = related_pair(128, 32, 48)
    assert get_metric(name, topk=10).score(a, b) == REFERENCE[name](a, b, topk=10)


def test_svcca_equals_reference_with_same_seed():
    a, b = related_pair(120, 40, 30)
    torch.manual_seed(7)
    np.random.seed(7)
    theirs = ref.svcca(a, b, cca_dim=10)
    state = torch.random.get_rng_state()
    assert get_metric("svcca", seed=7).score(a, b) == pytest.approx(theirs, abs=1e-6)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched


def test_unnormalised_inputs_are_not_normalised():
    """score() is the reference formula on the raw tensors: no clamp, no normalisation."""
    a, b = related_pair(80, 20, 20)
    scale = torch.rand(80, 1) * 5 + 0.1
    for name in ("mutual_knn", "cka", "cknna"):
        kwargs = {"topk": 10} if "knn" in name else {}
        ours = get_metric(name, **kwargs).score(a * scale, b)
        assert ours == pytest.approx(REFERENCE[name](a * scale, b, **kwargs), abs=1e-6)


@pytest.mark.parametrize("name", KNN + KERNEL + ["cknna_paper"])
def test_identical_features_score_the_maximum(name):
    a, _ = related_pair(100, 32, 8)
    score = get_metric(name).score(a, a)
    expected = {"lcs_knn": 10.0}.get(name, 1.0)
    # kernel metrics fall short of 1 by the reference's +1e-6 in the denominator
    assert score == pytest.approx(expected, abs=0 if "knn" in name[-3:] else 1e-4)


@pytest.mark.parametrize(
    "name",
    ["mutual_knn", "lcs_knn", "edit_distance_knn", "cka", "unbiased_cka", "cknna", "cknna_paper"],
)
def test_invariant_to_rotation_and_global_scale(name):
    a, b = related_pair(90, 24, 24)
    rotation, _ = torch.linalg.qr(torch.randn(24, 24, generator=torch.Generator().manual_seed(1)))
    metric = get_metric(name)
    base = metric.score(a, b)
    assert metric.score((a @ rotation).contiguous(), b) == pytest.approx(base, abs=1e-5)
    if name.endswith("knn"):  # kNN graphs do not see a global scale
        assert metric.score(3.0 * a, b) == pytest.approx(base, abs=1e-5)
    else:
        assert metric.score(3.0 * a, 0.5 * b) == pytest.approx(base, abs=1e-4)


@pytest.mark.parametrize(
    "name", ["mutual_knn", "lcs_knn", "edit_distance_knn", "cka", "unbiased_cka", "cknna_paper"]
)
def test_symmetric_metrics_are_symmetric(name):
    metric = get_metric(name)
    assert metric.symmetric
    a, b = related_pair(70, 16, 40)
    assert metric.score(a, b) == pytest.approx(metric.score(b, a), abs=1e-6)


def test_cycle_knn_is_marked_asymmetric():
    assert not get_metric("cycle_knn").symmetric


def test_shuffled_pairs_are_near_chance():
    n, k = 512, 10
    a, b = related_pair(n, 32, 32, noise=0.1)
    aligned = get_metric("mutual_knn", topk=k).score(a, b)
    shuffled = get_metric("mutual_knn", topk=k).score(a, b[torch.randperm(n)])
    chance = k / (n - 1)
    assert aligned > 0.3
    assert abs(shuffled - chance) < 0.02


def test_cknna_can_exceed_one_like_the_reference():
    """The code's CKNNA masks the raw kernels: with few samples a pair can score above 1."""
    g = torch.Generator().manual_seed(0)
    found = []
    for _ in range(20):
        shared = torch.randn(8, 2, generator=g)
        a = F.normalize(
            shared @ torch.randn(2, 5, generator=g) + 0.3 * torch.randn(8, 5, generator=g), dim=1
        )
        b = F.normalize(
            shared @ torch.randn(2, 5, generator=g) + 0.3 * torch.randn(8, 5, generator=g), dim=1
        )
        ours = get_metric("cknna", topk=4).score(a, b)
        assert ours == pytest.approx(ref.cknna(a, b, topk=4), abs=1e-5)
        found.append(ours)
    assert max(found) > 1.0


def test_cknna_is_not_symmetric_like_the_reference():
    """Masked kernels are not symmetric, so the unbiased HSIC's cross term depends on order."""
    assert not get_metric("cknna").symmetric
    a, b = related_pair(70, 16, 40)
    assert get_metric("cknna").score(b, a) == pytest.approx(ref.cknna(b, a, topk=10), abs=1e-6)


def test_lcs_normalised_variant_divides_by_k():
    a, b = related_pair(60, 10, 10)
    raw = get_metric("lcs_knn", topk=6).score(a, b)
    assert get_metric("lcs_knn_normalized", topk=6).score(a, b) == pytest.approx(raw / 6)


def test_rbf_kernel_cka_matches_formula():
    a, b = related_pair(50, 10, 12)
    ours = get_metric("cka", kernel_metric="rbf", rbf_sigma=0.7).score(a, b)
    k = torch.exp(-(torch.cdist(a, a) ** 2) / (2 * 0.7**2))
    l = torch.exp(-(torch.cdist(b, b) ** 2) / (2 * 0.7**2))  # noqa: E741
    expected = (
        ref.hsic_biased(k, l) / (torch.sqrt(ref.hsic_biased(k, k) * ref.hsic_biased(l, l)) + 1e-6)
    ).item()
    assert ours == pytest.approx(expected, abs=1e-6)


# -- bad input: one clear line, a ValueError subclass ------------------------------------
@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: get_metric("mutual_knn", topk=0).score, "topk must be >= 1, got 0"),
        (lambda: get_metric("mutual_knn", topk=2.5).score, "topk must be an integer"),
        (lambda: get_metric("cknna", topk=1).score, "topk must be >= 2"),
        (lambda: get_metric("cka", kernel_metric="poly").score, "kernel_metric must be"),
        (
            lambda: get_metric("mutual_knn", k=3).score,
            "has no parameter 'k'; its parameters are: topk",
        ),
    ],
)
def test_bad_parameters(make, message):
    with pytest.raises(InvalidInputError, match=message):
        make()


def test_bad_inputs_name_the_argument():
    good = torch.randn(20, 4)
    with pytest.raises(InvalidInputError, match=r"topk must be < N \(the number of samples, 20\)"):
        get_metric("mutual_knn", topk=20).score(good, good)
    with pytest.raises(InvalidInputError, match="same number of samples N, got 20 and 19"):
        get_metric("mutual_knn").score(good, good[:19])
    bad = good.clone()
    bad[7, 1] = math.nan
    with pytest.raises(InvalidInputError, match="feats_b contains NaN or inf .*sample index 7"):
        get_metric("cka").score(good, bad)
    bad[7, 1] = math.inf
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        get_metric("mutual_knn", topk=3).score(bad, good)
    with pytest.raises(InvalidInputError, match=r"shape \[N, D\] \(2 dimensions\)"):
        get_metric("mutual_knn").score(torch.randn(20), torch.randn(20))
    with pytest.raises(InvalidInputError, match="needs N >= 4"):
        get_metric("unbiased_cka").score(torch.randn(3, 5), torch.randn(3, 5))
    with pytest.raises(InvalidInputError, match="must be a torch.Tensor"):
        get_metric("cka").score(np.ones((5, 2)), good[:5])
    with pytest.raises(ValueError):  # every input error is also a ValueError
        get_metric("mutual_knn", topk=-1).score(good, good)


# --------------------------------------------------------------------------- issue 14 (runtime)


@pytest.mark.parametrize("name", ["cka", "unbiased_cka", "mutual_knn", "cknna"])
def test_overflowing_inner_products_are_the_same_typed_error_for_every_metric(name):
    huge = torch.randn(10, 5, generator=torch.Generator().manual_seed(0)) * 1e30
    metric = get_metric(name, topk=3) if "topk" in get_metric(name).defaults else get_metric(name)
    with pytest.raises(InvalidInputError, match=r"^inner products of the features overflow"):
        metric.score(huge, torch.randn(10, 5))
    with pytest.raises(InvalidInputError, match=r"overflow"):
        metric.score(torch.randn(10, 5), huge)


def searchsorted_mutual_knn_all(states_a, states_b, k):
    """mutual_knn's layer sweep as it was before the shared-neighbour table (a binary search
    of each neighbour in B's sorted lists): the new path must give the same bits."""
    sorted_b = torch.stack(states_b).sort(dim=2).values
    out = np.empty((len(states_a), len(states_b)))
    for i, knn_a in enumerate(states_a):
        queries = knn_a.expand_as(sorted_b).contiguous()
        where = torch.searchsorted(sorted_b, queries).clamp_(max=k - 1)
        shared = (sorted_b.gather(2, where) == queries).sum(dim=2)
        out[i] = (shared.float() / k).mean(dim=1).double().numpy()
    return out


@pytest.mark.parametrize(
    ("la", "lb", "n", "k", "budget"),
    [(1, 1, 12, 1, 16 * 2**20), (3, 4, 97, 5, 16 * 2**20), (5, 2, 200, 10, 9000), (2, 6, 61, 7, 1)],
)
def test_shared_neighbour_table_equals_the_searchsorted_path_bit_for_bit(la, lb, n, k, budget):
    from prh_bench_plugins.knn_metrics import shared_neighbours

    g = torch.Generator().manual_seed(la * 100 + n)

    def random_knn():  # k distinct neighbours per row, self excluded
        ranks = torch.rand(n, n, generator=g).fill_diagonal_(2.0)
        return ranks.argsort(dim=1)[:, :k]

    # some layers equal or nearly equal to another, so counts span 0..k, not just ~chance
    states_a = [random_knn() for _ in range(la)]
    states_b = [states_a[0] if j == 0 else random_knn() for j in range(lb)]
    metric = get_metric("mutual_knn", topk=k)
    expected = searchsorted_mutual_knn_all(states_a, states_b, k)
    assert np.array_equal(metric.compare_all(states_a, states_b), expected)
    # small budgets force chunks that do not divide N, down to one sample per chunk
    shared = shared_neighbours(torch.stack(states_a, 1), torch.stack(states_b, 1), budget)
    per_sample = shared / k
    chunked = np.stack([per_sample[i].mean(dim=1).double().numpy() for i in range(la)])
    assert np.array_equal(chunked, expected)
    assert torch.equal(shared[0, 0], torch.full((n,), float(k)))  # A_0 is B_0: all shared
