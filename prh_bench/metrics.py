"""The metric interface: ``prepare(layer) -> state`` once per layer, ``compare(a, b)`` per pair.

A layer-pair sweep therefore costs L_a + L_b expensive steps (kNN graphs, Gram matrices)
instead of L_a x L_b. ``score(a, b)`` is the one-pair convenience: exactly the reference
formula on the given tensors, with no clamp and no normalisation added.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from .errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import torch


class Metric:
    """Base class of every alignment metric. Subclasses set the class attributes below."""

    name: ClassVar[str]
    #: compare(a, b) == compare(b, a)
    symmetric: ClassVar[bool] = True
    higher_is_better: ClassVar[bool] = True
    #: parameter name -> default value; get_metric(name, **params) may override them
    defaults: ClassVar[dict[str, Any]] = {}
    #: one line for `prh-bench metrics`
    summary: ClassVar[str] = ""
    #: where the formula comes from (docs/metrics.md has the details)
    source: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            allowed = ", ".join(sorted(self.defaults)) or "none"
            raise InvalidInputError(
                f"metric '{self.name}' has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are: {allowed}"
            )
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.check_params()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # -- what subclasses implement -------------------------------------------------------
    def check_params(self) -> None:
        """Validate ``self.params`` that do not depend on N."""

    def check_n(self, n: int) -> None:
        """Validate the parameters against the number of samples N."""

    def prepare(self, feats: torch.Tensor) -> Any:
        """The per-layer state: computed once per layer of a sweep."""
        raise NotImplementedError

    def compare(self, state_a: Any, state_b: Any) -> float:
        """The score between two prepared layers."""
        raise NotImplementedError

    def permute(self, state: Any, perm: torch.Tensor) -> Any:
        """The state of the same layer with its samples reordered as ``feats[perm]``.

        Lets the shuffled-pairs null reuse prepared states; a metric that does not implement
        it is prepared again on the permuted features.
        """
        raise NotImplementedError

    # -- shared behaviour -----------------------------------------------------------------
    def compare_all(self, states_a: list[Any], states_b: list[Any]) -> np.ndarray:
        """The [L_a, L_b] score matrix; metrics override this with batched tensor work."""
        import numpy as np

        out = np.empty((len(states_a), len(states_b)), dtype=np.float64)
        for i, sa in enumerate(states_a):
            for j, sb in enumerate(states_b):
                out[i, j] = self.compare(sa, sb)
        return out

    def score(self, feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
        """The reference ``AlignmentMetrics.<name>(a, b, ...)`` on one pair of [N, D] tensors."""
        check_pair(feats_a, feats_b)
        self.check_n(feats_a.shape[0])
        feats_a, feats_b = at_least_float32(feats_a), at_least_float32(feats_b)
        return float(self.compare(self.prepare(feats_a), self.prepare(feats_b)))


def at_least_float32(feats: torch.Tensor) -> torch.Tensor:
    """Half-precision features are scored in float32 (CPU kernels and SVD need it)."""
    import torch

    return feats.float() if feats.dtype in (torch.float16, torch.bfloat16) else feats


def check_features(feats: Any, name: str = "features") -> None:
    """A 2-D, non-empty, finite floating tensor, or a clear InvalidInputError."""
    import torch

    if not isinstance(feats, torch.Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor, got {type(feats).__name__}")
    if feats.ndim != 2:
        raise InvalidInputError(
            f"{name} must have shape [N, D] (2 dimensions), got shape {tuple(feats.shape)}"
        )
    if feats.shape[0] == 0 or feats.shape[1] == 0:
        raise InvalidInputError(f"{name} is empty: shape {tuple(feats.shape)}; need N >= 1, D >= 1")
    if not feats.is_floating_point():
        raise InvalidInputError(f"{name} must be a floating tensor, got dtype {feats.dtype}")
    if not all_finite(feats):
        bad = (~torch.isfinite(feats)).any(dim=1).nonzero()[0, 0].item()
        raise InvalidInputError(f"{name} contains NaN or inf (first at sample index {bad})")


def all_finite(feats: torch.Tensor) -> bool:
    """No NaN or inf, in one reduction: a float64 sum of finite float32/16 values cannot
    overflow, so only a non-finite sum needs the element-wise look."""
    import math

    import torch

    if math.isfinite(feats.sum(dtype=torch.float64).item()):
        return True
    return bool(torch.isfinite(feats).all())


def check_pair(feats_a: Any, feats_b: Any) -> None:
    check_features(feats_a, "feats_a")
    check_features(feats_b, "feats_b")
    if feats_a.shape[0] != feats_b.shape[0]:
        raise InvalidInputError(
            f"feats_a and feats_b must have the same number of samples N, "
            f"got {feats_a.shape[0]} and {feats_b.shape[0]}"
        )


def check_topk(topk: Any, n: int | None = None, *, minimum: int = 1) -> None:
    if isinstance(topk, bool) or not isinstance(topk, int):
        raise InvalidInputError(f"topk must be an integer, got {topk!r}")
    if topk < minimum:
        raise InvalidInputError(f"topk must be >= {minimum}, got {topk}")
    if n is not None and topk >= n:
        raise InvalidInputError(f"topk must be < N (the number of samples, {n}), got topk={topk}")


def validate_metric(obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Metric)):
        raise TypeError(f"register_metrics expects Metric subclasses, got {obj!r}")
    if not isinstance(getattr(obj, "name", None), str):
        raise TypeError(f"metric class {obj.__name__} has no 'name'")
