"""The paper's kNN metrics: mutual_knn, cycle_knn, lcs_knn, edit_distance_knn.

Each layer is prepared once into its kNN graph (indices [N, k], self excluded, ordered by
similarity; from the ``knn_backend`` hook); comparing two graphs is cheap. Numbers equal the
reference ``AlignmentMetrics`` in minyoungg/platonic-rep ``metrics.py``, quirks included
(lcs_knn is not divided by k); docs/metrics.md gives each formula.
"""

from __future__ import annotations

from typing import Any, ClassVar

from prh_bench import Metric, hookimpl
from prh_bench.metrics import check_topk

REFERENCE = "minyoungg/platonic-rep metrics.py (Huh et al. 2024)"


class KnnMetric(Metric):
    defaults: ClassVar[dict[str, Any]] = {"topk": 10}
    source = REFERENCE

    @property
    def topk(self) -> int:
        return self.params["topk"]

    def check_params(self) -> None:
        check_topk(self.params["topk"])

    def check_n(self, n: int) -> None:
        check_topk(self.topk, n)

    def prepare(self, feats: Any) -> Any:
        from prh_bench.registry import knn_indices

        # inputs were checked by score() or align_layers(); N against topk is cheap to redo
        self.check_n(feats.shape[0])
        return knn_indices(feats, self.topk)

    def permute(self, state: Any, perm: Any) -> Any:
        # row i of feats[perm] is old row perm[i]; old index m is now inverse[m]
        inverse = perm.argsort().to(state.device)
        return inverse[state[perm.to(state.device)]]


class MutualKnn(KnnMetric):
    name = "mutual_knn"
    summary = "mean fraction of shared k nearest neighbours (the paper's mNN)"

    def compare(self, state_a: Any, state_b: Any) -> float:
        return float(self.compare_all([state_a], [state_b])[0, 0])

    def compare_all(self, states_a: list[Any], states_b: list[Any]) -> Any:
        import numpy as np
        import torch

        k = self.topk
        shared = shared_neighbours(torch.stack(states_a, dim=1), torch.stack(states_b, dim=1))
        per_sample = shared / k  # as the reference's masks give it
        out = np.empty((len(states_a), len(states_b)), dtype=np.float64)
        for i in range(len(states_a)):
            # a row-wise mean reduces each contiguous row as a 1-D mean does (bit-identical;
            # tests/test_align.py::test_knn_sweep_is_bit_identical_to_the_per_pair_loop)
            out[i] = per_sample[i].mean(dim=1).double().cpu().numpy()
        return out


def shared_neighbours(knn_a: Any, knn_b: Any, budget_bytes: int = 16 * 2**20) -> Any:
    """Shared-neighbour counts [L_a, L_b, N] (float32, exact integers) of every layer pair.

    ``knn_a`` [N, L_a, k] and ``knn_b`` [N, L_b, k] hold each sample's neighbours per layer.
    Per sample, a table marks which layers of B list each index; summing the table's rows at
    A's neighbours (one embedding_bag) counts every (a, b) pair at once: N*L_a*L_b*k work,
    with no sort, no search and nothing of size N^2. The permutation null calls this 100
    times per model pair, so it sets the speed of scoring. Chunks of samples keep the table
    under ``budget_bytes``; it is cleared by the same writes that set it, not re-zeroed.
    """
    import torch
    import torch.nn.functional as F

    n, la, k = knn_a.shape
    lb = knn_b.shape[1]
    chunk = max(1, min(n, budget_bytes // (4 * n * lb)))
    table = torch.zeros(chunk * n, lb, device=knn_a.device)  # row s*n + m, column l: m in B_l(s)?
    layer = torch.arange(lb, device=knn_a.device).view(1, lb, 1)
    shared = torch.empty(la, lb, n, device=knn_a.device)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        offset = (torch.arange(stop - start, device=knn_a.device) * n).view(-1, 1, 1)
        rows_b = knn_b[start:stop] + offset  # [c, L_b, k] rows of the table
        table[rows_b, layer] = 1.0
        bags = (knn_a[start:stop] + offset).view(-1, k)  # one bag per (sample, layer of A)
        counts = F.embedding_bag(bags, table, mode="sum")  # [c * L_a, L_b]
        shared[:, :, start:stop] = counts.view(stop - start, la, lb).permute(1, 2, 0)
        table[rows_b, layer] = 0.0
    return shared


class CycleKnn(KnnMetric):
    name = "cycle_knn"
    symmetric = False
    summary = "fraction of samples that return to themselves via B's then A's neighbours"

    def compare(self, state_a: Any, state_b: Any) -> float:
        import torch

        n = state_a.shape[0]
        # the A-neighbours of each B-neighbour of i: does the cycle come back to i?
        hops = state_a[state_b]  # [N, k, k]
        back = hops == torch.arange(n, device=hops.device).view(-1, 1, 1)
        return back.float().view(n, -1).max(dim=1).values.mean().item()


class _SequenceKnn(KnnMetric):
    """Row-wise comparison of the ordered neighbour lists with a rapidfuzz scorer."""

    def _rowwise(self, state_a: Any, state_b: Any, scorer: Any) -> Any:
        import numpy as np
        from rapidfuzz.process import cpdist

        a = state_a.cpu().numpy()
        b = state_b.cpu().numpy()
        return np.asarray(cpdist(a, b, scorer=scorer, workers=1), dtype=np.float64)


class LcsKnn(_SequenceKnn):
    name = "lcs_knn"
    summary = "mean longest-common-subsequence length of the ordered kNN lists (not / k)"

    def compare(self, state_a: Any, state_b: Any) -> float:
        import torch
        from rapidfuzz.distance import LCSseq

        lcs = self._rowwise(state_a, state_b, LCSseq.similarity)
        # the reference: float64 lengths -> float32 -> mean
        return torch.tensor(lcs).float().mean().item()


class LcsKnnNormalized(LcsKnn):
    name = "lcs_knn_normalized"
    summary = "lcs_knn divided by k, in [0, 1] (the paper's text; not its code)"
    source = "Huh et al. 2024, text; lcs_knn / k"

    def compare(self, state_a: Any, state_b: Any) -> float:
        return super().compare(state_a, state_b) / self.topk


class EditDistanceKnn(_SequenceKnn):
    name = "edit_distance_knn"
    summary = "1 - mean Levenshtein distance of the ordered kNN lists / k"

    def compare(self, state_a: Any, state_b: Any) -> float:
        from rapidfuzz.distance import Levenshtein

        distance = self._rowwise(state_a, state_b, Levenshtein.distance)
        return float(1 - distance.mean() / self.topk)


@hookimpl
def register_metrics(register: Any) -> None:
    for cls in (MutualKnn, CycleKnn, LcsKnn, LcsKnnNormalized, EditDistanceKnn):
        register(cls)
