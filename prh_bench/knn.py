"""kNN graphs through the ``knn_backend`` hook.

A backend maps features [N, D] to the indices [N, k] of each row's k largest inner products
with the other rows (self excluded), ordered by similarity, ties broken by the lower index.
On L2-normalised features (what ``align_layers`` passes) that is exact cosine top-k.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .errors import PluginError

if TYPE_CHECKING:
    import torch


class KnnBackend(Protocol):
    name: str

    def __call__(self, feats: torch.Tensor, k: int) -> torch.Tensor: ...


def get_knn_backend(device: str, n: int, dim: int, k: int) -> KnnBackend:
    from .plugins import get_plugin_manager

    backend = get_plugin_manager().hook.knn_backend(device=device, n=n, dim=dim, k=k)
    if backend is None:
        raise PluginError(
            f"no kNN backend serves device={device}, n={n}, dim={dim}, k={k}; the built-in "
            "plugin 'knn_torch' is missing (check PRH_BENCH_LOAD_PLUGINS)"
        )
    return backend


def knn_indices(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [N, k] of each row's k nearest rows (self excluded) by inner product."""
    n, dim = feats.shape
    return get_knn_backend(feats.device.type, n, dim, k)(feats, k)
