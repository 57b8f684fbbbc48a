"""The layer-pair sweep: the reference driver's preprocessing, then every metric over all pairs.

Preprocessing follows the paper's ``measure_alignment.py``: clamp outliers at the q-quantile of
|x| with ONE threshold per model (the mean over samples of each sample's quantile over all of
its layers' values), L2-normalise each layer, then score every layer pair and keep the best.
Each layer is prepared once (kNN graph, Gram statistics), so a sweep costs L_a + L_b expensive
steps instead of L_a x L_b.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import InvalidInputError
from .metrics import Metric, check_features
from .registry import get_metric

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass
class Alignment:
    """The result of a sweep: the full score matrix, its best value and where it is."""

    matrix: np.ndarray  # [L_a, L_b]; with concat=True the last row/column is all layers joined
    best: float
    best_index: tuple[int, int]  # (layer of feats_a, layer of feats_b)
    metric: str
    params: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)


def as_layers(feats: Any, name: str) -> list[torch.Tensor]:
    """[N, L, D] tensor or list of [N, D_l] tensors -> list of float32 [N, D_l] layers."""
    import torch

    if isinstance(feats, torch.Tensor):
        if feats.ndim != 3:
            raise InvalidInputError(
                f"{name} must be an [N, L, D] tensor or a list of [N, D_l] tensors, "
                f"got a tensor of shape {tuple(feats.shape)}"
            )
        layers = list(feats.unbind(1))
    elif isinstance(feats, (list, tuple)):
        layers = list(feats)
    else:
        raise InvalidInputError(
            f"{name} must be an [N, L, D] tensor or a list of [N, D_l] tensors, "
            f"got {type(feats).__name__}"
        )
    if not layers:
        raise InvalidInputError(f"{name} has no layers; need at least 1")
    for i, layer in enumerate(layers):
        check_features(layer, f"{name} layer {i}")
    n = {layer.shape[0] for layer in layers}
    if len(n) != 1:
        raise InvalidInputError(f"{name}: all layers must have the same N, got {sorted(n)}")
    return [layer.float() for layer in layers]


def quantile_threshold(values: torch.Tensor, q: float, exact: bool = False) -> torch.Tensor:
    """The reference clamp threshold of ``values`` [N, M] (all of one model's values per row).

    exact=False: the mean over rows of each row's q-quantile of |x| with linear interpolation,
    equal to ``torch.quantile(values.abs(), q, dim=1).mean()`` but by selection instead of a
    full sort (and with no size limit). exact=True: the sort-based global quantile.
    """
    import torch

    a = values.abs()
    if exact:
        flat = a.reshape(-1)
        index = min(int(q * flat.numel()), flat.numel() - 1)
        return flat.kthvalue(index + 1).values
    m = a.shape[1]
    # torch.quantile's rank: q rounded to the input dtype, times (m - 1) in double precision;
    # the weight in the input dtype. Same numbers, so the same threshold to the last bit.
    rank = float(torch.tensor(q, dtype=a.dtype).item()) * (m - 1)
    below = int(rank)
    above = min(below + 1, m - 1)
    weight = torch.tensor(rank - below, dtype=a.dtype)
    # the (m - below) largest values of a row hold both order statistics we need
    top = a.topk(m - below, dim=1, largest=True, sorted=False).values
    low = top.min(dim=1).values
    high = top.kthvalue(2, dim=1).values if above > below else low
    return torch.lerp(low, high, weight).mean()


def clamp_outliers(
    layers: list[torch.Tensor],
    q: float | None = 0.95,
    *,
    exact: bool = False,
    per_layer: bool = False,
) -> list[torch.Tensor]:
    """Clamp every layer to [-t, t]; t is one threshold per model unless ``per_layer``."""
    import torch

    if q is None or q == 1:
        return layers
    if not 0 < q < 1:
        raise InvalidInputError(f"q must be in (0, 1) or None, got {q}")
    if per_layer:
        return [x.clamp(-t, t) for x in layers for t in [quantile_threshold(x, q, exact)]]
    t = quantile_threshold(torch.cat(layers, dim=1), q, exact)
    return [x.clamp(-t, t) for x in layers]


def preprocess(
    feats: Any,
    name: str = "feats",
    *,
    q: float | None = 0.95,
    exact: bool = False,
    clamp_per_layer: bool = False,
    normalize: bool = True,
    concat: bool = False,
) -> list[torch.Tensor]:
    """Layers ready for a metric: clamped, optionally joined, L2-normalised."""
    import torch
    import torch.nn.functional as F

    layers = clamp_outliers(as_layers(feats, name), q, exact=exact, per_layer=clamp_per_layer)
    if concat:
        layers = [*layers, torch.cat(layers, dim=1)]
    if normalize:
        layers = [F.normalize(x, p=2, dim=-1) for x in layers]
    return layers


def prepare_states(metric: Metric, layers: list[torch.Tensor]) -> list[Any]:
    """One expensive step per layer."""
    return [metric.prepare(x) for x in layers]


def sweep(
    metric: Metric, states_a: list[Any], states_b: list[Any]
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The full score matrix [L_a, L_b] of prepared states and its best pair.

    Ties go as in the reference's ``measure_alignment.py``: it loops over B's layers outside
    and A's inside (B is vision, A language in its default call, as in the runner's pairs) and
    keeps the first strict maximum, i.e. the first maximum in B-major (column-major) order.
    """
    import numpy as np

    matrix = np.asarray(metric.compare_all(states_a, states_b), dtype=np.float64)
    if np.isnan(matrix).all():
        raise InvalidInputError(
            f"metric '{metric.name}' is undefined (NaN) for every layer pair; "
            "are the features constant?"
        )
    flat = int(np.nanargmax(matrix.T))  # a NaN pair (e.g. a constant layer) never wins
    j, i = divmod(flat, matrix.shape[0])
    return matrix, float(matrix[i, j]), (i, j)


def align_layers(
    feats_a: Any,
    feats_b: Any,
    metric: Metric | str = "mutual_knn",
    *,
    q: float | None = 0.95,
    exact: bool = False,
    clamp_per_layer: bool = False,
    normalize: bool = True,
    concat: bool = False,
    **metric_params: Any,
) -> Alignment:
    """Best alignment over all layer pairs of two models on the same N samples.

    ``metric`` is a Metric or a registered name; extra keywords (``topk=10``) go to
    ``get_metric`` when it is a name.
    """
    if isinstance(metric, str):
        metric = get_metric(metric, **metric_params)
    elif metric_params:
        raise InvalidInputError(
            f"metric parameters {sorted(metric_params)} apply only when metric is a name; "
            "pass them to get_metric instead"
        )
    options = dict(
        q=q, exact=exact, clamp_per_layer=clamp_per_layer, normalize=normalize, concat=concat
    )
    layers_a = preprocess(feats_a, "feats_a", **options)
    layers_b = preprocess(feats_b, "feats_b", **options)
    n_a, n_b = layers_a[0].shape[0], layers_b[0].shape[0]
    if n_a != n_b:
        raise InvalidInputError(
            f"feats_a and feats_b must have the same number of samples N, got {n_a} and {n_b}"
        )
    metric.check_n(n_a)
    matrix, best, best_index = sweep(
        metric, prepare_states(metric, layers_a), prepare_states(metric, layers_b)
    )
    return Alignment(matrix, best, best_index, metric.name, dict(metric.params), options)


@dataclass
class Null:
    """The shuffled-pairs floor of a sweep: its best score with B's samples permuted."""

    permutations: int
    mean: float
    std: float
    p_value: float  # (1 + #{null >= observed}) / (1 + permutations)
    values: list[float] = field(default_factory=list)  # each permutation's best score


def permutation_null(
    metric: Metric,
    states_a: list[Any],
    states_b: list[Any],
    observed: float,
    permutations: int = 100,
    seed: int = 0,
    layers_b: list[torch.Tensor] | None = None,
) -> Null:
    """Redo the whole sweep (max over all layer pairs) with B's samples shuffled.

    The null of a maximum is a maximum too, so every permutation recomputes the full matrix;
    prepared states are permuted rather than recomputed where the metric allows it.
    """
    import numpy as np
    import torch

    if permutations < 1:
        raise InvalidInputError(f"permutations must be >= 1, got {permutations}")
    n = (layers_b[0].shape[0] if layers_b else None) or _state_n(states_b[0])
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(permutations):
        perm = torch.randperm(n, generator=g)
        try:
            shuffled = [metric.permute(s, perm) for s in states_b]
        except NotImplementedError:
            if layers_b is None:
                raise
            shuffled = prepare_states(metric, [x[perm.to(x.device)] for x in layers_b])
        values.append(float(np.nanmax(metric.compare_all(states_a, shuffled))))
    arr = np.asarray(values)
    p = (1 + int((arr >= observed).sum())) / (1 + permutations)
    return Null(permutations, float(arr.mean()), float(arr.std()), p, values)


def _state_n(state: Any) -> int:
    import torch

    if isinstance(state, torch.Tensor):
        return state.shape[0]
    for value in vars(state).values():
        if isinstance(value, torch.Tensor):
            return value.shape[0]
    raise InvalidInputError("cannot tell N from the prepared state; pass layers_b")


# --------------------------------------------------------------------------- fingerprints

#: how many samples a fingerprint follows, and how many neighbours of each
FINGERPRINT_SAMPLES = 16
FINGERPRINT_K = 10


def feature_fingerprint(
    layers: list[torch.Tensor], samples: int = FINGERPRINT_SAMPLES, k: int = FINGERPRINT_K
) -> dict[str, Any]:
    """Per layer, the k nearest samples (cosine) of a fixed, evenly spaced subset of samples.

    Enough to tell whether a later run's features of the same model on the same data moved:
    the similarities are taken in float64, so rounding of another GEMM shape or device does
    not reorder neighbours. Returns ``{"samples", "k", "layers"}`` (results.Fingerprint).
    """
    import torch
    import torch.nn.functional as F

    n = int(layers[0].shape[0])
    k = max(1, min(k, n - 1))
    count = min(samples, n)
    picks = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})
    rows = torch.tensor(picks)
    encoded = []
    for layer in layers:
        x = F.normalize(layer.detach().to("cpu", torch.float64), dim=1)
        sim = x[rows] @ x.T
        sim[torch.arange(len(picks)), rows] = float("-inf")  # a sample is not its own neighbour
        found = sim.topk(k, dim=1).indices.sort(dim=1).values
        encoded.append(";".join(" ".join(map(str, r)) for r in found.tolist()))
    return {"samples": picks, "k": k, "layers": encoded}


def fingerprint_drift(a: dict[str, Any], b: dict[str, Any]) -> list[float] | None:
    """Per layer, the fraction of the subset's neighbours that changed from ``a`` to ``b``.

    0 means the same kNN lists, 1 none in common. None when the fingerprints follow other
    samples or another k, or have another number of layers (they cannot be compared layer
    by layer).
    """
    if (a["samples"], a["k"], len(a["layers"])) != (b["samples"], b["k"], len(b["layers"])):
        return None
    moved = []
    for la, lb in zip(a["layers"], b["layers"], strict=True):
        lists_a, lists_b = la.split(";"), lb.split(";")
        common = sum(
            len(set(x.split()) & set(y.split())) for x, y in zip(lists_a, lists_b, strict=True)
        )
        moved.append(1 - common / (a["k"] * len(lists_a)))
    return moved
