"""Plain, slow re-implementations of the paper's metric formulas, written for the tests.

They follow the published definitions step by step (full Gram matrices, argsort, dense masks,
H-centring products, dynamic-programming LCS and Levenshtein) so the fast plugins can be
checked against them. Ties in the kNN order are broken by the lower index, the same rule as
the built-in backend documents.
"""

from __future__ import annotations

import numpy as np
import torch


def knn(feats: torch.Tensor, k: int) -> torch.Tensor:
    sim = feats @ feats.T
    sim.fill_diagonal_(-1e8)
    return sim.argsort(dim=1, descending=True, stable=True)[:, :k]


def mutual_knn(a: torch.Tensor, b: torch.Tensor, topk: int) -> float:
    ka, kb = knn(a, topk), knn(b, topk)
    n = a.shape[0]
    rows = torch.arange(n).unsqueeze(1)
    mask_a = torch.zeros(n, n)
    mask_b = torch.zeros(n, n)
    mask_a[rows, ka] = 1.0
    mask_b[rows, kb] = 1.0
    return ((mask_a * mask_b).sum(dim=1) / topk).mean().item()


def cycle_knn(a: torch.Tensor, b: torch.Tensor, topk: int) -> float:
    ka, kb = knn(a, topk), knn(b, topk)
    n = a.shape[0]
    hit = [float(any(i in ka[j].tolist() for j in kb[i].tolist())) for i in range(n)]
    return torch.tensor(hit).mean().item()


def _lcs(x: list[int], y: list[int]) -> int:
    table = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            if x[i - 1] == y[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def _levenshtein(x: list[int], y: list[int]) -> int:
    prev = list(range(len(y) + 1))
    for i in range(1, len(x) + 1):
        cur = [i] + [0] * len(y)
        for j in range(1, len(y) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x[i - 1] != y[j - 1]))
        prev = cur
    return prev[-1]


def lcs_knn(a: torch.Tensor, b: torch.Tensor, topk: int) -> float:
    ka, kb = knn(a, topk).tolist(), knn(b, topk).tolist()
    lengths = torch.tensor(
        [float(_lcs(x, y)) for x, y in zip(ka, kb, strict=True)], dtype=torch.float64
    )
    return lengths.float().mean().item()


def edit_distance_knn(a: torch.Tensor, b: torch.Tensor, topk: int) -> float:
    ka, kb = knn(a, topk).tolist(), knn(b, topk).tolist()
    dist = torch.tensor(
        [float(_levenshtein(x, y)) for x, y in zip(ka, kb, strict=True)], dtype=torch.float64
    )
    return (1 - dist.mean() / topk).item()


def hsic_biased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741
    n = k.shape[0]
    h = torch.eye(n, dtype=k.dtype) - 1 / n
    return torch.trace(k @ h @ l @ h)


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741
    n = k.shape[0]
    kt = k.clone().fill_diagonal_(0)
    lt = l.clone().fill_diagonal_(0)
    value = (
        (kt * lt.T).sum()
        + kt.sum() * lt.sum() / ((n - 1) * (n - 2))
        - 2 * (kt @ lt).sum() / (n - 2)
    )
    return value / (n * (n - 3))


def cka(a: torch.Tensor, b: torch.Tensor, unbiased: bool = False) -> float:
    k, l = a @ a.T, b @ b.T  # noqa: E741
    hsic = hsic_unbiased if unbiased else hsic_biased
    return (hsic(k, l) / (torch.sqrt(hsic(k, k) * hsic(l, l)) + 1e-6)).item()


def cknna(a: torch.Tensor, b: torch.Tensor, topk: int) -> float:
    k, l = a @ a.T, b @ b.T  # noqa: E741
    n = a.shape[0]

    def masked_similarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_hat = x.clone().fill_diagonal_(float("-inf"))
        y_hat = y.clone().fill_diagonal_(float("-inf"))
        mask_x = torch.zeros(n, n).scatter_(1, x_hat.topk(topk, dim=1).indices, 1)
        mask_y = torch.zeros(n, n).scatter_(1, y_hat.topk(topk, dim=1).indices, 1)
        mask = mask_x * mask_y
        return hsic_unbiased(mask * x, mask * y)

    kl, kk, ll = masked_similarity(k, l), masked_similarity(k, k), masked_similarity(l, l)
    return kl.item() / (torch.sqrt(kk * ll) + 1e-6).item()


def svcca(a: torch.Tensor, b: torch.Tensor, cca_dim: int = 10) -> float:
    """Call after torch.manual_seed(s); np.random.seed(s), as the reference is run."""
    from sklearn.cross_decomposition import CCA

    def standardise(x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=0)
        return x / (x.std(dim=0) + 1e-8)

    a, b = standardise(a), standardise(b)
    u1 = torch.svd_lowrank(a, q=cca_dim)[0].numpy()
    u2 = torch.svd_lowrank(b, q=cca_dim)[0].numpy()
    cca = CCA(n_components=cca_dim)
    cca.fit(u1, u2)
    c1, c2 = cca.transform(u1, u2)
    c1 += 1e-10 * np.random.randn(*c1.shape)
    c2 += 1e-10 * np.random.randn(*c2.shape)
    return float(np.mean([np.corrcoef(c1[:, i], c2[:, i])[0, 1] for i in range(cca_dim)]))


def remove_outliers(feats: torch.Tensor, q: float, exact: bool = False) -> torch.Tensor:
    """The driver's clamp on an [N, L, D] tensor: one threshold for the whole model."""
    if exact:
        t = feats.reshape(-1).abs().sort().values[int(q * feats.numel())]
    else:
        t = torch.quantile(feats.abs().flatten(start_dim=1), q, dim=1).mean()
    return feats.clamp(-t, t)


def best_pair(
    feats_a: torch.Tensor, feats_b: torch.Tensor, metric, q: float | None = 0.95, **kwargs
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The reference driver: clamp each model once, then normalise and score every pair."""
    if q is not None:
        feats_a, feats_b = remove_outliers(feats_a, q), remove_outliers(feats_b, q)
    la, lb = feats_a.shape[1], feats_b.shape[1]
    matrix = np.zeros((la, lb))
    for i in range(la):
        for j in range(lb):
            x = torch.nn.functional.normalize(feats_a[:, i], dim=-1)
            y = torch.nn.functional.normalize(feats_b[:, j], dim=-1)
            matrix[i, j] = metric(x, y, **kwargs)
    return (matrix, *driver_best(matrix))


def driver_best(matrix: np.ndarray) -> tuple[float, tuple[int, int]]:
    """measure_alignment.py's choice: compute_score(vision, language) loops over B's layers
    outside and A's inside and keeps the first strict maximum."""
    best, best_index = -np.inf, (0, 0)
    for j in range(matrix.shape[1]):
        for i in range(matrix.shape[0]):
            if matrix[i, j] > best:
                best, best_index = float(matrix[i, j]), (i, j)
    return best, best_index
