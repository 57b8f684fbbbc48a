"""The kNN backend interface; plugins offer backends through the ``knn_backend`` hook.

A backend maps features [N, D] to the indices [N, k] of each row's k largest inner products
with the other rows (self excluded), ordered by similarity, ties broken by the lower index.
On L2-normalised features (what ``align_layers`` passes) that is exact cosine top-k.
``prh_bench.registry.get_knn_backend`` picks one; ``prh_bench.registry.knn_indices`` runs it
and checks its answer with ``check_answer`` (a wrong answer would be a silently wrong score).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .errors import PluginError

if TYPE_CHECKING:
    import torch


class KnnBackend(Protocol):
    name: str

    def __call__(self, feats: torch.Tensor, k: int) -> torch.Tensor: ...


def check_answer(backend: Any, answer: Any, n: int, k: int) -> None:
    """Refuse an answer that breaks the contract: not an integer tensor [N, k], an index out of
    range, a row listing itself or one neighbour twice."""
    import torch

    name = getattr(backend, "name", type(backend).__name__)

    def broken(what: str) -> PluginError:
        return PluginError(
            f"kNN backend '{name}' broke its contract: {what}; expected the indices [N={n}, "
            f"k={k}] of each row's k nearest other rows. Fix or disable the plugin that offers it"
        )

    if not isinstance(answer, torch.Tensor):
        raise broken(f"it returned {type(answer).__name__}, not a tensor")
    if answer.is_floating_point() or answer.is_complex() or answer.dtype == torch.bool:
        raise broken(f"it returned {answer.dtype} values, not integer indices")
    if tuple(answer.shape) != (n, k):
        raise broken(f"it returned shape {list(answer.shape)}")
    if n == 0 or k == 0:
        return
    if int(answer.min()) < 0 or int(answer.max()) >= n:
        raise broken(f"an index lies outside 0..{n - 1}")
    rows = torch.arange(n, device=answer.device).unsqueeze(1)
    if bool((answer == rows).any()):
        raise broken("a row lists itself as its own neighbour")
    ordered = answer.sort(dim=1).values
    if bool((ordered[:, 1:] == ordered[:, :-1]).any()):
        raise broken("a row lists the same neighbour twice")
