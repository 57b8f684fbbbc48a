"""Exact tiled kNN against the GEMM floor.

The floor is the time of the similarity matrix alone: 2 * N^2 * D flops at the matmul rate this
device reaches on a large GEMM in the same precision (measured here, not a datasheet number).
The tiled kNN then adds its running top-k, the exact float64 re-rank and any fallback rows.

    python benchmarks/bench_knn_scale.py --device cpu --n 65536 --dim 1024
    python benchmarks/bench_knn_scale.py --device cuda --n 1000000 --dim 4096   # an H100
"""

from __future__ import annotations

import argparse
import json
import platform
import time


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_rate(device: str, precision: str, dim: int, size: int, repeats: int) -> float:
    """flop/s of [size, dim] @ [dim, size] in the kNN's fast precision (best of ``repeats``)."""
    import torch

    from prh_bench_plugins.knn_tiled import _matmul_precision

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, dim, device=device).to(dtype)
    b = torch.randn(size, dim, device=device).to(dtype)
    best = float("inf")
    with _matmul_precision(precision, torch.device(device).type):
        (a @ b.T).sum()  # warm-up
        for _ in range(repeats):
            sync(device)
            t0 = time.perf_counter()
            a @ b.T
            sync(device)
            best = min(best, time.perf_counter() - t0)
    return 2 * size * size * dim / best


def main() -> None:
    import torch

    from prh_bench_plugins.knn_tiled import TiledKnn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=65536)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "tf32", "bf16"])
    p.add_argument("--gemm-size", type=int, default=None, help="rows of the rate GEMM")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    backend = TiledKnn(precision=args.precision)
    precision = backend.resolved_precision(torch.device(args.device).type)
    gemm = args.gemm_size or (16384 if args.device.startswith("cuda") else 4096)
    rate = matmul_rate(args.device, precision, args.dim, gemm, repeats=3)

    g = torch.Generator().manual_seed(args.seed)
    feats = torch.nn.functional.normalize(torch.randn(args.n, args.dim, generator=g), dim=1)
    feats = feats.to(args.device)
    sync(args.device)
    t0 = time.perf_counter()
    backend(feats, args.topk)
    sync(args.device)
    seconds = time.perf_counter() - t0
    floor = 2 * args.n**2 * args.dim / rate
    report = {
        "device": torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "n": args.n,
        "dim": args.dim,
        "topk": args.topk,
        "precision": precision,
        "matmul_tflops": round(rate / 1e12, 4),
        "seconds": round(seconds, 3),
        "gemm_floor_seconds": round(floor, 3),
        "ratio": round(seconds / floor, 3),
        "rows_widened": backend.stats.widened,
        "rows_exact_fallback": backend.stats.exact_fallback,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:>20}: {v}")


if __name__ == "__main__":
    main()
