"""Alignment against gallery size: mutual kNN of two models on nested subsets of N samples.

Koepke et al. 2026 ("Back into Plato's Cave") show that mutual-kNN alignment depends on how
many samples the kNN graphs are built over; ``gallery_curve`` measures that curve, e.g. at
N = 1k, 10k, 100k and 1M. Each size's subset is the first ``n`` of one seeded permutation, so
subsets are nested and a rerun gives the same numbers. kNN graphs come from an exact backend
(by default the one the ``knn_backend`` hook picks for each size: the built-in plugin
``knn_tiled``, O(N * k) memory, above 8192 samples), and the score is the ``mutual_knn``
metric's own compare, so it equals ``get_metric("mutual_knn").score`` on the same subset.

From Python::

    from prh_bench.scale import gallery_curve
    for point in gallery_curve(feats_a, feats_b, [1_000, 10_000], topk=10):
        print(point.n, point.score)
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidInputError
from .registry import get_knn_backend, get_metric


@dataclass(frozen=True)
class GalleryPoint:
    n: int
    score: float
    topk: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_sizes(text: str) -> list[int]:
    """``"1k,10k,1M"`` -> ``[1000, 10000, 1000000]``."""
    sizes = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmM]?)", part)
        if not m:
            raise InvalidInputError(f"gallery size '{part}' is not a number like 1000, 10k or 1M")
        scale = {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()]
        sizes.append(int(float(m.group(1)) * scale))
    if not sizes:
        raise InvalidInputError("no gallery sizes given; e.g. --sizes 1k,10k,100k")
    return sizes


def load_matrix(path: str | os.PathLike[str], layer: int = -1) -> Any:
    """An [N, D] float32 tensor from a feature-store file (one layer) or a .npy/.pt file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such feature file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            names = sorted(k for k in f.keys() if k.startswith("layer."))
            if not names:
                raise InvalidInputError(
                    f"{path}: not a prh-bench feature file (no layer.* tensors)"
                )
            if not -len(names) <= layer < len(names):
                raise InvalidInputError(
                    f"{path}: layer {layer} out of range; the file has {len(names)} layers"
                )
            return f.get_tensor(names[layer]).float()
    if suffix == ".npy":
        import numpy as np

        return torch.from_numpy(np.load(path, allow_pickle=False)).float()
    if suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True).float()
    raise InvalidInputError(f"{path}: use a .safetensors feature file, a .npy or a .pt file")


def gallery_curve(
    feats_a: Any,
    feats_b: Any,
    sizes: Sequence[int],
    *,
    topk: int = 10,
    seed: int = 0,
    device: str | None = None,
    normalize: bool = True,
    backend: Callable[[Any, int], Any] | None = None,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> list[GalleryPoint]:
    """Mutual-kNN alignment of paired features [N, D_a], [N, D_b] at each gallery size.

    Rows are L2-normalised (``normalize``) as the paper's sweep does; sizes larger than N are
    skipped with a note. ``backend`` defaults to the backend the ``knn_backend`` hook picks.
    """
    import torch

    if feats_a.ndim != 2 or feats_b.ndim != 2 or feats_a.shape[0] != feats_b.shape[0]:
        raise InvalidInputError(
            "features must be [N, D_a] and [N, D_b] with the same N (row i of A paired with "
            f"row i of B); got {tuple(feats_a.shape)} and {tuple(feats_b.shape)}"
        )
    n_total = int(feats_a.shape[0])
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    metric = get_metric("mutual_knn", topk=topk)
    order = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    points = []
    for n in sorted(set(sizes)):
        if n > n_total:
            log(f"skipped N = {n}: only {n_total} paired samples")
            continue
        if not topk < n:
            raise InvalidInputError(f"topk must be < N; topk = {topk} at N = {n}")
        t0 = time.perf_counter()
        graphs = []
        for feats in (feats_a, feats_b):
            x = feats[order[:n]].to(device=device, dtype=torch.float32)
            if normalize:
                x = torch.nn.functional.normalize(x, dim=-1)
            knn = backend or get_knn_backend(x.device.type, n, x.shape[1], topk)
            graphs.append(knn(x, topk))
        score = float(metric.compare(graphs[0], graphs[1]))
        points.append(GalleryPoint(n, score, topk, round(time.perf_counter() - t0, 3)))
        log(f"N = {n}: mutual_knn = {score:.4f}")
    return points
