"""The paper's kernel metrics: cka, unbiased_cka, cknna, svcca (and the text's CKNNA).

Each layer is prepared once (its centred Gram matrix, HSIC with itself, kNN graph), so one
comparison costs O(N^2) instead of the reference's O(N^3) matrix products. The algebra is
exact: trace(K H L H) = <HKH, HLH> and sum(K~ L~) = rowsum(K~) . rowsum(L~) for symmetric
kernels. Sums run in float64; numbers equal the reference ``AlignmentMetrics`` to float32
precision. docs/metrics.md gives each formula and its source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from prh_bench import Metric, hookimpl
from prh_bench.errors import InvalidInputError
from prh_bench.metrics import check_features, check_topk

REFERENCE = "minyoungg/platonic-rep metrics.py (Huh et al. 2024)"


def gram(feats: Any, kernel_metric: str = "ip", rbf_sigma: float = 1.0) -> Any:
    """The reference kernel matrix, in float32 like the reference computes it."""
    import torch

    if kernel_metric == "ip":
        return feats @ feats.T
    return torch.exp(-(torch.cdist(feats, feats) ** 2) / (2 * rbf_sigma**2))


def check_unbiased_n(n: int) -> None:
    if n < 4:
        raise InvalidInputError(f"unbiased HSIC needs N >= 4 samples, got N={n}")


@dataclass
class BiasedState:
    centred: Any  # H K H, float64 [N, N]
    self_hsic: float


@dataclass
class UnbiasedState:
    zero_diag: Any  # K with its diagonal set to 0, float64 [N, N]
    row_sums: Any  # [N]
    total: float
    self_hsic: float


def permute_kernel(kernel: Any, perm: Any) -> Any:
    return kernel[perm][:, perm]


def hsic_unbiased_parts(
    kt: Any, rows: Any, total: Any, lt: Any, rows_l: Any, total_l: Any, n: int
) -> Any:
    """Song et al. 2012 eq. 5 on zero-diagonal symmetric kernels, without matrix products."""
    trace_term = (kt * lt).sum()
    return (trace_term + total * total_l / ((n - 1) * (n - 2)) - 2 * (rows @ rows_l) / (n - 2)) / (
        n * (n - 3)
    )


class _KernelMetric(Metric):
    defaults: ClassVar[dict[str, Any]] = {"kernel_metric": "ip", "rbf_sigma": 1.0}
    source = REFERENCE

    def check_params(self) -> None:
        if self.params["kernel_metric"] not in ("ip", "rbf"):
            raise InvalidInputError(
                f"kernel_metric must be 'ip' or 'rbf', got {self.params['kernel_metric']!r}"
            )
        sigma = self.params["rbf_sigma"]
        if not isinstance(sigma, (int, float)) or sigma <= 0:
            raise InvalidInputError(f"rbf_sigma must be a number > 0, got {sigma!r}")

    def _gram(self, feats: Any) -> Any:
        import torch

        check_features(feats)
        self.check_n(feats.shape[0])
        k = gram(feats, self.params["kernel_metric"], self.params["rbf_sigma"])
        if not bool(torch.isfinite(k).all()):  # else NaN would come out as a score
            raise InvalidInputError(
                f"inner products of the features overflow {feats.dtype} (largest |value| "
                f"{feats.abs().max().item():.3g}); scale the features down or L2-normalise them"
            )
        return k.double()


class Cka(_KernelMetric):
    name = "cka"
    summary = "centred kernel alignment with the biased HSIC (Kornblith et al. 2019)"

    def prepare(self, feats: Any) -> BiasedState:
        k = self._gram(feats)
        centred = k - k.mean(dim=0, keepdim=True)
        centred = centred - centred.mean(dim=1, keepdim=True)
        return BiasedState(centred, float((centred * centred).sum()))

    def permute(self, state: BiasedState, perm: Any) -> BiasedState:
        return BiasedState(permute_kernel(state.centred, perm), state.self_hsic)

    def compare(self, a: BiasedState, b: BiasedState) -> float:
        return float(self.compare_all([a], [b])[0, 0])

    def compare_all(self, states_a: list[Any], states_b: list[Any]) -> Any:
        import numpy as np
        import torch

        # all pairs' <HKH, HLH> in one product of flattened centred kernels
        fa = torch.stack([s.centred.reshape(-1) for s in states_a])
        fb = torch.stack([s.centred.reshape(-1) for s in states_b])
        cross = (fa @ fb.T).numpy()
        self_a = np.array([s.self_hsic for s in states_a])
        self_b = np.array([s.self_hsic for s in states_b])
        return cross / (np.sqrt(np.outer(self_a, self_b)) + 1e-6)


class UnbiasedCka(_KernelMetric):
    name = "unbiased_cka"
    summary = "CKA with the unbiased HSIC estimator (Song et al. 2012)"

    def check_n(self, n: int) -> None:
        check_unbiased_n(n)

    def prepare(self, feats: Any) -> UnbiasedState:
        kt = self._gram(feats).fill_diagonal_(0)
        rows, total, n = kt.sum(dim=1), kt.sum(), kt.shape[0]
        hsic = hsic_unbiased_parts(kt, rows, total, kt, rows, total, n)
        return UnbiasedState(kt, rows, float(total), float(hsic))

    def permute(self, state: UnbiasedState, perm: Any) -> UnbiasedState:
        return UnbiasedState(
            permute_kernel(state.zero_diag, perm),
            state.row_sums[perm],
            state.total,
            state.self_hsic,
        )

    def compare(self, a: UnbiasedState, b: UnbiasedState) -> float:
        return float(self.compare_all([a], [b])[0, 0])

    def compare_all(self, states_a: list[Any], states_b: list[Any]) -> Any:
        import numpy as np
        import torch

        n = states_a[0].zero_diag.shape[0]
        fa = torch.stack([s.zero_diag.reshape(-1) for s in states_a])
        fb = torch.stack([s.zero_diag.reshape(-1) for s in states_b])
        ra = torch.stack([s.row_sums for s in states_a])
        rb = torch.stack([s.row_sums for s in states_b])
        ta = np.array([s.total for s in states_a])
        tb = np.array([s.total for s in states_b])
        hsic = (
            (fa @ fb.T).numpy()
            + np.outer(ta, tb) / ((n - 1) * (n - 2))
            - 2 * (ra @ rb.T).numpy() / (n - 2)
        ) / (n * (n - 3))
        self_a = np.array([s.self_hsic for s in states_a])
        self_b = np.array([s.self_hsic for s in states_b])
        return hsic / (np.sqrt(np.outer(self_a, self_b)) + 1e-6)


@dataclass
class KnnKernelState:
    kernel: Any  # float64 [N, N], the raw inner products
    knn: Any  # [N, k] neighbour indices (self excluded)
    mask: Any  # float64 [N, N], 1 where j is among i's k nearest
    self_sim: float


def _sqrt(x: float) -> float:
    """sqrt that gives NaN for a negative HSIC product, as the reference's torch.sqrt does."""
    return x**0.5 if x >= 0 else float("nan")


def masked_hsic_unbiased(k: Any, l: Any) -> Any:  # noqa: E741  (the papers' K and L)
    """The reference hsic_unbiased on kernels that need not be symmetric (masked kernels)."""
    n = k.shape[0]
    kt = k.clone().fill_diagonal_(0)
    lt = l.clone().fill_diagonal_(0)
    # sum(K~ @ L~) = colsum(K~) . rowsum(L~): no N^3 product
    return (
        (kt * lt.T).sum()
        + kt.sum() * lt.sum() / ((n - 1) * (n - 2))
        - 2 * (kt.sum(dim=0) @ lt.sum(dim=1)) / (n - 2)
    ) / (n * (n - 3))


class Cknna(Metric):
    name = "cknna"
    # masked kernels are not symmetric, so the HSIC cross term colsum(K~).rowsum(L~) of the
    # reference depends on the argument order
    symmetric = False
    summary = "CKA restricted to mutual k-nearest neighbours, as the reference code does"
    defaults: ClassVar[dict[str, Any]] = {"topk": 10}
    source = REFERENCE

    def check_params(self) -> None:
        check_topk(self.params["topk"], minimum=2)

    def check_n(self, n: int) -> None:
        check_unbiased_n(n)
        check_topk(self.params["topk"], n, minimum=2)

    def _knn_state(self, feats: Any) -> tuple[Any, Any, Any]:
        import torch

        from prh_bench.registry import knn_indices

        check_features(feats)
        self.check_n(feats.shape[0])
        kernel32 = feats @ feats.T
        knn = knn_indices(feats, self.params["topk"])
        n = feats.shape[0]
        mask = torch.zeros(n, n, dtype=torch.float64).scatter_(1, knn.cpu(), 1.0)
        return kernel32.double(), knn, mask

    def prepare(self, feats: Any) -> KnnKernelState:
        kernel, knn, mask = self._knn_state(feats)
        own = mask * kernel
        return KnnKernelState(kernel, knn, mask, float(masked_hsic_unbiased(own, own)))

    def permute(self, state: KnnKernelState, perm: Any) -> KnnKernelState:
        knn = perm.argsort()[state.knn.cpu()[perm]]
        return KnnKernelState(
            permute_kernel(state.kernel, perm),
            knn,
            permute_kernel(state.mask, perm),
            state.self_sim,
        )

    def compare(self, a: KnnKernelState, b: KnnKernelState) -> float:
        mask = a.mask * b.mask  # the neighbours both kernels agree on; raw kernels masked
        sim = float(masked_hsic_unbiased(mask * a.kernel, mask * b.kernel))
        return sim / (_sqrt(a.self_sim * b.self_sim) + 1e-6)


class CknnaPaper(Cknna):
    name = "cknna_paper"
    symmetric = True
    summary = "CKNNA as the paper's equations define it: masked row-centred kernels"
    source = "Huh et al. 2024, appendix (CKNNA equations)"

    def prepare(self, feats: Any) -> KnnKernelState:
        kernel, knn, mask = self._knn_state(feats)
        centred = kernel - kernel.mean(dim=1, keepdim=True)  # K_ij - E_l[K_il]
        return KnnKernelState(centred, knn, mask, float((mask * centred * centred).sum()))

    def compare(self, a: KnnKernelState, b: KnnKernelState) -> float:
        align = float((a.mask * b.mask * a.kernel * b.kernel).sum())
        return align / (_sqrt(a.self_sim * b.self_sim) + 1e-6)


class Svcca(Metric):
    name = "svcca"
    symmetric = False  # the seeded random projections are drawn in argument order
    summary = "SVCCA: mean CCA correlation of the top singular directions (Raghu et al. 2017)"
    defaults: ClassVar[dict[str, Any]] = {"cca_dim": 10, "seed": 0}
    source = REFERENCE

    def check_params(self) -> None:
        dim = self.params["cca_dim"]
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidInputError(f"cca_dim must be an integer >= 1, got {dim!r}")

    def check_n(self, n: int) -> None:
        if self.params["cca_dim"] >= n:
            raise InvalidInputError(
                f"cca_dim must be < N (the number of samples, {n}), got {self.params['cca_dim']}"
            )

    def prepare(self, feats: Any) -> Any:
        import torch

        check_features(feats)
        self.check_n(feats.shape[0])
        if self.params["cca_dim"] > feats.shape[1]:
            raise InvalidInputError(
                f"cca_dim must be <= D (the feature size, {feats.shape[1]}), "
                f"got {self.params['cca_dim']}"
            )
        centred = feats - torch.mean(feats, dim=0)
        return centred / (torch.std(centred, dim=0) + 1e-8)

    def permute(self, state: Any, perm: Any) -> Any:
        return state[perm.to(state.device)]

    def compare(self, a: Any, b: Any) -> float:
        """The reference svcca after ``torch.manual_seed(seed); np.random.seed(seed)``."""
        import numpy as np
        import torch
        from sklearn.cross_decomposition import CCA

        dim, seed = self.params["cca_dim"], self.params["seed"]
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG untouched
            torch.manual_seed(seed)
            u1 = torch.svd_lowrank(a, q=dim)[0].cpu().numpy()
            u2 = torch.svd_lowrank(b, q=dim)[0].cpu().numpy()
        cca = CCA(n_components=dim)
        cca.fit(u1, u2)
        c1, c2 = cca.transform(u1, u2)
        rng = np.random.RandomState(seed)
        c1 = c1 + 1e-10 * rng.randn(*c1.shape)  # the reference's guard against constant columns
        c2 = c2 + 1e-10 * rng.randn(*c2.shape)
        return float(np.mean([np.corrcoef(c1[:, i], c2[:, i])[0, 1] for i in range(dim)]))


@hookimpl
def register_metrics(register: Any) -> None:
    for cls in (Cka, UnbiasedCka, Cknna, CknnaPaper, Svcca):
        register(cls)
