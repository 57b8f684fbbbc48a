"""The kNN backend interface; plugins offer backends through the ``knn_backend`` hook.

A backend maps features [N, D] to the indices [N, k] of each row's k largest inner products
with the other rows (self excluded), ordered by similarity, ties broken by the lower index.
On L2-normalised features (what ``align_layers`` passes) that is exact cosine top-k.
``prh_bench.registry.get_knn_backend`` picks one; ``prh_bench.registry.knn_indices`` runs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch


class KnnBackend(Protocol):
    name: str

    def __call__(self, feats: torch.Tensor, k: int) -> torch.Tensor: ...
