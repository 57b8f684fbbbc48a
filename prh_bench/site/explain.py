"""Plain words for the reading panel: what a metric measures (its formula one click away) and
what a dataset is. docs/metrics.md has the full definitions; these are their short forms."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricText:
    plain: str  # a plain name
    meaning: str  # what a score says, in one sentence
    formula: str
    scale: str  # its range, and what its ends mean


_KNN = "kNN_A(i) is the k samples most similar to sample i in model A's features"
_CKA = "K = AAᵀ and L = BBᵀ are the two models' sample-by-sample similarity matrices"

METRICS: dict[str, MetricText] = {
    "mutual_knn": MetricText(
        "mutual nearest neighbours",
        "the share of each sample's k nearest neighbours that the two models agree on",
        f"mNN(A, B) = 1/N Σᵢ |kNN_A(i) ∩ kNN_B(i)| / k, where {_KNN}",
        "0 (no neighbour in common) to 1 (the same neighbours for every sample)",
    ),
    "cycle_knn": MetricText(
        "cycle nearest neighbours",
        "the share of samples that lead back to themselves through a neighbour in one model "
        "and then that neighbour's neighbours in the other",
        f"cycle(A, B) = 1/N Σᵢ 1[i ∈ ∪_(j ∈ kNN_B(i)) kNN_A(j)], where {_KNN}",
        "0 to 1 (every sample comes back)",
    ),
    "lcs_knn": MetricText(
        "longest common neighbour sequence",
        "how many of each sample's k nearest neighbours the two models list in the same order",
        f"lcs(A, B) = 1/N Σᵢ LCS(kNN_A(i), kNN_B(i)), the ordered lists' longest common "
        f"subsequence, where {_KNN}",
        "0 to k (not divided by k, as in the reference code)",
    ),
    "lcs_knn_normalized": MetricText(
        "longest common neighbour sequence, per neighbour",
        "the share of each sample's k nearest neighbours the two models list in the same order",
        f"lcs(A, B) / k = 1/N Σᵢ LCS(kNN_A(i), kNN_B(i)) / k, where {_KNN}",
        "0 to 1 (the same ordered neighbour lists)",
    ),
    "edit_distance_knn": MetricText(
        "neighbour-list edit similarity",
        "one minus the share of edits that turn one model's ordered neighbour list into the "
        "other's",
        f"ed(A, B) = 1 − 1/N Σᵢ Lev(kNN_A(i), kNN_B(i)) / k, Lev the edit distance, where {_KNN}",
        "at most 1 (the same ordered neighbour lists)",
    ),
    "cka": MetricText(
        "centred kernel alignment",
        "how alike the two models' sample-to-sample similarities are, after centring",
        f"CKA(K, L) = HSIC(K, L) / √(HSIC(K, K) · HSIC(L, L)), HSIC(K, L) = tr(KHLH), "
        f"H = I − 11ᵀ/N, where {_CKA}",
        "0 (unrelated) to 1 (the same similarities up to scale)",
    ),
    "unbiased_cka": MetricText(
        "centred kernel alignment, unbiased",
        "CKA with an estimate of the similarities' dependence that is unbiased at small N",
        f"CKA(K, L) with the unbiased HSIC of Song et al. (2012), where {_CKA}",
        "about 0 (unrelated) to 1; can dip below 0",
    ),
    "cknna": MetricText(
        "centred kernel nearest-neighbour alignment",
        "CKA counted only over pairs of samples that are near neighbours in both models (the "
        "reference code's form)",
        "CKNNA = HSIC_u(M∘K, M∘L) / √(HSIC_u(M_K∘K, M_K∘K) · HSIC_u(M_L∘L, M_L∘L)), "
        f"M = M_K ∘ M_L the mutual k-neighbour mask, where {_CKA}",
        "about 0 to 1; can exceed 1 (the reference's kernels are not centred before masking)",
    ),
    "cknna_paper": MetricText(
        "centred kernel nearest-neighbour alignment (paper's equations)",
        "CKA counted only over pairs of samples that are near neighbours in both models",
        "CKNNA = Align(K, L) / √(Align(K, K) · Align(L, L)), Align(K, L) = Σᵢⱼ αᵢⱼ K̄ᵢⱼ L̄ᵢⱼ, "
        f"K̄ row-centred, αᵢⱼ = 1 where j is a k-neighbour of i in both models; {_CKA}",
        "at most 1",
    ),
    "svcca": MetricText(
        "singular vector canonical correlation",
        "the mean correlation of the best-matched directions among each model's top singular "
        "directions",
        "SVCCA = mean of the cca_dim canonical correlations between the top cca_dim left "
        "singular vectors of the standardised A and B",
        "0 to 1",
    ),
}


def metric_text(name: str) -> MetricText:
    """The plain text of a metric; one from a plugin says what its ``summary`` says."""
    if name in METRICS:
        return METRICS[name]
    from ..registry import get_registry

    registry = get_registry("metric")
    summary = getattr(registry.get(name), "summary", "") if name in registry else ""
    return MetricText(
        name,
        summary or "a metric from a plugin (see its documentation)",
        "see the plugin's documentation",
        "see the plugin's documentation",
    )


def dataset_text(dataset_id: str, configured: dict[str, str]) -> str:
    """What a dataset is: the site settings' ``datasets`` entry, else the dataset plugin's
    ``summary``, else "" (a dataset whose plugin is not installed here)."""
    if dataset_id in configured:
        return configured[dataset_id]
    from ..registry import get_registry

    registry = get_registry("dataset")
    return str(getattr(registry.get(dataset_id), "summary", "")) if dataset_id in registry else ""
