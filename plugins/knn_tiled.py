"""Exact kNN at scale: tiled fast matmul with a running top-k, then an exact re-rank.

Memory is O(N * (k + margin)) plus one similarity tile, so N = 1,000,000 fits a GPU. The
answer equals the exact one (docs/distributed.md gives the argument):

1. For a block of query rows, stream the keys in tiles; each tile's similarities come from a
   fast matmul (fp32 on CPU; tf32 or bf16 on CUDA) and only the top ``k + margin`` candidates
   per row survive the merge with the running buffer (self excluded).
2. Every fast similarity is within ``eps = c(precision, D) * |x| * |y|`` of the exact inner
   product (a rounding-error bound). A row is *certified* when its smallest kept candidate is
   below ``tau - 2 * eps`` (tau: the k-th largest fast value): then every sample that can be in
   the exact top-k, ties included, is among its candidates.
3. Candidates are re-ranked by their exact inner products (products of the fp32 features summed
   in float64, one fixed routine, so tiling and device do not change the values) and ordered
   like ``knn_torch``: value descending, equal values by the lower index.
4. Rows that are not certified are tried again with 8x the margin, and what is left is
   computed by the exact routine over all keys (slow, and rare).

The backend answers the ``knn_backend`` hook for N > 8192; below that the built-in torch
backend computes one full fp32 GEMM, exactly as the reference code does.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prh_bench import hookimpl
from prh_bench_plugins.shared import topk_lowest_index_ties

#: the exact torch backend serves N up to this (one GEMM, the reference's rounding)
MIN_N = 8192
PRECISIONS = ("auto", "fp32", "tf32", "bf16")

# unit roundoffs (input rounding, output rounding, accumulation), each taken one bit more
# conservative than the format's own: tf32 conversion may truncate, tensor cores may align
# partial sums with truncation.
_ROUNDING = {
    "fp32": (0.0, 0.0, 2.0**-23),
    "tf32": (2.0**-10, 0.0, 2.0**-22),
    "bf16": (2.0**-8, 2.0**-8, 2.0**-22),
}


def error_bound(precision: str, dim: int) -> float:
    """c with |fast(x.y) - exact(x.y)| <= c * |x| * |y| for one inner product of length dim.

    Input rounding (1 + u_in)^2, accumulation gamma_D = D u / (1 - D u) over sum |x_i y_i|
    (<= |x||y| by Cauchy-Schwarz), output rounding (1 + u_out); plus the float64 re-rank's own
    gamma_D. Infinite when D u >= 1 (then no row is certified and all take the exact path).
    """
    u_in, u_out, u_acc = _ROUNDING[precision]

    def gamma(u: float) -> float:
        return math.inf if dim * u >= 1 else dim * u / (1 - dim * u)

    fast = (1 + u_in) ** 2 * (1 + gamma(u_acc)) * (1 + u_out) - 1
    return fast + gamma(2.0**-53)


@dataclass
class TiledStats:
    """What the last call did: how many rows needed the wider margin or the exact path."""

    rows: int = 0
    widened: int = 0
    exact_fallback: int = 0
    precision: str = ""
    seconds: float = 0.0


class TiledKnn:
    """Exact kNN by inner product, O(N * k) memory; ``backend(feats, k) -> [N, k]`` indices."""

    name = "tiled-exact"

    def __init__(
        self,
        precision: str = "auto",
        margin: int = 32,
        block_rows: int | None = None,
        tile_cols: int | None = None,
        tile_bytes: int | None = None,
        rerank_bytes: int = 128 * 2**20,
    ) -> None:
        from prh_bench.errors import InvalidInputError

        if precision not in PRECISIONS:
            raise InvalidInputError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        if margin < 0:
            raise InvalidInputError(f"margin must be >= 0, got {margin}")
        self.precision, self.margin = precision, margin
        self.block_rows, self.tile_cols = block_rows, tile_cols
        self.tile_bytes, self.rerank_bytes = tile_bytes, rerank_bytes
        self.stats = TiledStats()

    def __repr__(self) -> str:
        return f"TiledKnn(precision={self.precision!r}, margin={self.margin})"

    def resolved_precision(self, device_type: str) -> str:
        if self.precision != "auto":
            return self.precision
        return "tf32" if device_type == "cuda" else "fp32"

    def _sizes(self, n: int, device_type: str) -> tuple[int, int]:
        gpu = device_type == "cuda"
        rows = self.block_rows or min(n, 16384 if gpu else 2048)
        tile_bytes = self.tile_bytes or (2**30 if gpu else 64 * 2**20)
        cols = self.tile_cols or max(1, min(n, tile_bytes // (4 * rows)))
        return max(1, rows), max(1, cols)

    def __call__(self, feats: Any, k: int) -> Any:
        import torch

        from prh_bench.errors import InvalidInputError

        t0 = time.perf_counter()
        n, dim = feats.shape
        if not 1 <= k < n:
            raise InvalidInputError(f"topk must be in [1, N-1] = [1, {n - 1}], got {k}")
        x = feats.float()  # the fp32 features define the exact answer
        if not bool(torch.isfinite(x).all()):
            raise InvalidInputError("features contain NaN or inf; check the model's outputs")
        precision = self.resolved_precision(x.device.type)
        stats = TiledStats(rows=n, precision=precision)
        fast = x.to(torch.bfloat16) if precision == "bf16" else x
        norms = x.double().norm(dim=1)
        # the bound per row against the largest key; 1e-6 covers the norms' own rounding,
        # D * 2^-126 the products that underflow
        c = error_bound(precision, dim)
        eps = c * norms * norms.max() * (1 + 1e-6) + dim * 2.0**-126
        rows_per_block, cols = self._sizes(n, x.device.type)
        out = torch.empty(n, k, dtype=torch.long, device=x.device)
        pending = torch.arange(n, device=x.device)
        with _matmul_precision(precision, x.device.type):
            for attempt, margin in enumerate((self.margin, 8 * max(self.margin, k))):
                keep = min(k + margin, n - 1)
                left = []
                for rows in _blocks(pending, rows_per_block):
                    cand_v, cand_i = _stream(fast, rows, keep, cols)
                    if not bool(torch.isfinite(cand_v).all()):
                        raise InvalidInputError(
                            f"inner products of the features overflow {precision} (largest "
                            f"|value| {x.abs().max().item():.3g}); scale the features down or "
                            "L2-normalise them"
                        )
                    ok, best = self._rerank(x, rows, cand_v, cand_i, k, eps[rows], keep == n - 1)
                    out[rows[ok]] = best[ok]
                    left.append(rows[~ok])
                pending = torch.cat(left)
                if attempt == 0:
                    stats.widened = int(pending.numel())
                if pending.numel() == 0:
                    break
        stats.exact_fallback = int(pending.numel())
        for rows in _blocks(pending, 64):
            out[rows] = self._exact(x, rows, k, cols)
        stats.seconds = time.perf_counter() - t0
        self.stats = stats
        return out

    def _rerank(
        self, x: Any, rows: Any, cand_v: Any, cand_i: Any, k: int, eps: Any, complete: bool
    ) -> tuple[Any, Any]:
        """Certify each row's candidates and order them by their exact inner products."""
        import torch

        tau = cand_v.topk(k, dim=1).values[:, -1]
        floor = cand_v.min(dim=1).values
        # kept candidates are all within 2 eps of tau only when something may be missing
        ok = torch.full_like(tau, True, dtype=torch.bool) if complete else floor < tau - 2 * eps
        idx = cand_i.sort(dim=1).values  # ascending index, so a lower column is a lower index
        exact = _exact_dots(x, rows, idx, self.rerank_bytes)
        pos = topk_lowest_index_ties(exact, k)
        return ok, idx.gather(1, pos)

    def _exact(self, x: Any, rows: Any, k: int, cols: int) -> Any:
        """The exact top-k of a few rows against every key (float64 products, no GEMM)."""
        import torch

        n = x.shape[0]
        buf_v = buf_i = None
        step = max(1, min(cols, self.rerank_bytes // max(1, 8 * x.shape[1] * rows.numel())))
        for c0 in range(0, n, step):
            c1 = min(c0 + step, n)
            keys = torch.arange(c0, c1, device=x.device).expand(rows.numel(), -1)
            vals = _exact_dots(x, rows, keys, self.rerank_bytes)
            vals[keys == rows[:, None]] = -math.inf
            if buf_v is not None:  # buffer indices are all lower than this tile's
                vals, keys = torch.cat([buf_v, vals], 1), torch.cat([buf_i, keys], 1)
            take = min(k, vals.shape[1])
            pos = topk_lowest_index_ties(vals, take).sort(dim=1).values
            buf_v, buf_i = vals.gather(1, pos), keys.gather(1, pos)
        return buf_i.gather(1, topk_lowest_index_ties(buf_v, k))


def _blocks(rows: Any, size: int) -> Iterator[Any]:
    for start in range(0, rows.numel(), size):
        yield rows[start : start + size]


def _stream(fast: Any, rows: Any, keep: int, cols: int) -> tuple[Any, Any]:
    """The top ``keep`` fast similarities of ``rows`` against all keys (self excluded)."""
    import torch

    n = fast.shape[0]
    q = fast[rows]
    lo, hi = int(rows.min()), int(rows.max())  # one sync per block, not per tile
    local = torch.arange(rows.numel(), device=fast.device)
    buf_v = buf_i = None
    for c0 in range(0, n, cols):
        c1 = min(c0 + cols, n)
        sim = q @ fast[c0:c1].T
        if lo < c1 and hi >= c0:
            inside = (rows >= c0) & (rows < c1)
            sim[local[inside], rows[inside] - c0] = -math.inf
        v, i = sim.topk(min(keep, c1 - c0), dim=1, sorted=False)
        v, i = v.float(), i + c0
        if buf_v is not None:
            v, i = torch.cat([buf_v, v], 1), torch.cat([buf_i, i], 1)
            if v.shape[1] > keep:
                v, p = v.topk(keep, dim=1, sorted=False)
                i = i.gather(1, p)
        buf_v, buf_i = v, i
    return buf_v, buf_i


def _exact_dots(x: Any, rows: Any, idx: Any, max_bytes: int) -> Any:
    """<x[rows[r]], x[idx[r, j]]> as float64: exact products, one fixed summation routine."""
    import torch

    m, c = idx.shape
    out = torch.empty(m, c, dtype=torch.float64, device=x.device)
    step = max(1, max_bytes // max(1, 8 * c * x.shape[1]))
    for s in range(0, m, step):
        q = x[rows[s : s + step]].double()
        keys = x[idx[s : s + step]].double()  # [r, c, D]
        out[s : s + step] = (q[:, None, :] * keys).sum(-1)
    return out


@contextlib.contextmanager
def _matmul_precision(precision: str, device_type: str) -> Iterator[None]:
    """tf32 on only for the tf32 path; bf16 partial sums kept in fp32 (the bound assumes it)."""
    if device_type != "cuda":
        yield
        return
    import torch

    m = torch.backends.cuda.matmul
    saved = (m.allow_tf32, m.allow_bf16_reduced_precision_reduction)
    m.allow_tf32 = precision == "tf32"
    m.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        m.allow_tf32, m.allow_bf16_reduced_precision_reduction = saved


@hookimpl
def knn_backend(device: str, n: int, dim: int, k: int) -> TiledKnn | None:
    return TiledKnn() if n > MIN_N else None


@hookimpl
def register_commands(cli: Any) -> None:
    import click

    @cli.command(name="scale")
    @click.option(
        "--a",
        "file_a",
        required=True,
        type=click.Path(dir_okay=False),
        help="Features of model A: a feature-store .safetensors file or an [N, D] .npy.",
    )
    @click.option(
        "--b",
        "file_b",
        required=True,
        type=click.Path(dir_okay=False),
        help="Features of model B, row i paired with row i of A.",
    )
    @click.option("--layer-a", default=-1, show_default=True, help="Layer of A (store files).")
    @click.option("--layer-b", default=-1, show_default=True, help="Layer of B (store files).")
    @click.option(
        "--sizes",
        default="1k,10k,100k,1M",
        show_default=True,
        help="Gallery sizes (k/M suffixes); sizes above N are skipped.",
    )
    @click.option("--topk", default=10, show_default=True, help="k of the mutual kNN.")
    @click.option("--seed", default=0, show_default=True, help="Seed of the nested subsets.")
    @click.option("--device", help="cuda or cpu. [default: cuda when available]")
    @click.option(
        "--precision",
        type=click.Choice(PRECISIONS),
        default="auto",
        show_default=True,
        help="The fast matmul (the answer is exact either way).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    def scale(file_a, file_b, layer_a, layer_b, sizes, topk, seed, device, precision, as_json):
        """Mutual-kNN alignment against gallery size (Koepke et al. 2026)."""
        import json

        from prh_bench.scale import gallery_curve, load_matrix, parse_sizes

        a = load_matrix(file_a, layer_a)
        b = load_matrix(file_b, layer_b)
        points = gallery_curve(
            a,
            b,
            parse_sizes(sizes),
            topk=topk,
            seed=seed,
            device=device,
            backend=TiledKnn(precision=precision),
            log=lambda m: click.echo(m, err=True),
        )
        rows = [p.as_dict() for p in points]
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        from tabulate import tabulate

        click.echo(tabulate(rows, headers="keys"))
