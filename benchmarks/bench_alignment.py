"""Alignment speed, measured side by side in one process on the same inputs.

1. The layer-pair sweep: 33 x 25 layers (D = 2048 vs 1024, like an LLM and a ViT), N = 1024,
   mutual_knn k = 10, on already-clamped features (q=None): prh-bench's prepare-once sweep
   against a straightforward per-pair loop that recomputes both kNN graphs for every pair as
   the reference does (normalise, full Gram, argsort, dense masks). Every score must be equal.
2. The outlier clamp of the same 33-layer model: prh-bench's selection-based threshold against
   torch.quantile as the reference calls it. The thresholds must be equal.
3. One kNN graph at N = 65,536, D = 1,024: time and peak memory (run in a fresh process).
4. The shuffled-pairs null of one pair, 31 x 22 layers, N = 1024, mutual_knn k = 10, 100
   permutations: mutual_knn's shared-neighbour table against the binary search it replaced.
   The null values must be equal.

    python benchmarks/bench_alignment.py            # everything, on CPU (several minutes)
    python benchmarks/bench_alignment.py --quick    # smaller shapes, for a smoke run
    python benchmarks/bench_alignment.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def synthetic_model(n: int, layers: int, dim: int, seed: int, device: str) -> torch.Tensor:
    """[N, L, D] features of one "model": a latent shared by every model (the same samples),
    seen through this model's own random projections and noise, so scores beat chance."""
    latent = torch.randn(n, 32, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, layers, dim)
    for i in range(layers):
        out[:, i] = latent @ torch.randn(32, dim, generator=g) + (1 + i / 4) * torch.randn(
            n, dim, generator=g
        )
    return out.to(device)


def reference_mutual_knn(x: torch.Tensor, y: torch.Tensor, k: int) -> float:
    """One pair the reference way: both kNN graphs from scratch, dense masks."""
    x = F.normalize(x, p=2, dim=-1)
    y = F.normalize(y, p=2, dim=-1)
    knn_x = (x @ x.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :k]
    knn_y = (y @ y.T).fill_diagonal_(-1e8).argsort(dim=1, descending=True)[:, :k]
    n = x.shape[0]
    rows = torch.arange(n, device=x.device).unsqueeze(1)
    mask_x = torch.zeros(n, n, device=x.device)
    mask_y = torch.zeros(n, n, device=x.device)
    mask_x[rows, knn_x] = 1.0
    mask_y[rows, knn_y] = 1.0
    return ((mask_x * mask_y).sum(dim=1) / k).mean().item()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_sweep(a: torch.Tensor, b: torch.Tensor, k: int, device: str) -> dict:
    from prh_bench import align_layers

    # warm-up, untimed, for both sides: plugin loading, thread pools, allocator
    align_layers(a[:64, :2], b[:64, :2], "mutual_knn", q=None, topk=k)
    reference_mutual_knn(a[:64, 0], b[:64, 0], k)
    sync(device)
    t0 = time.perf_counter()
    ours = align_layers(a, b, "mutual_knn", q=None, topk=k)
    sync(device)
    t_ours = time.perf_counter() - t0

    import numpy as np

    ref = np.zeros(ours.matrix.shape)
    t0 = time.perf_counter()
    for i in range(a.shape[1]):
        for j in range(b.shape[1]):
            ref[i, j] = reference_mutual_knn(a[:, i], b[:, j], k)
    sync(device)
    t_ref = time.perf_counter() - t0
    return {
        "layers": f"{a.shape[1]} x {b.shape[1]}",
        "prh_bench_s": round(t_ours, 3),
        "per_pair_loop_s": round(t_ref, 3),
        "speedup": round(t_ref / t_ours, 1),
        "scores_identical": bool(np.array_equal(ours.matrix, ref)),
        "max_abs_diff": float(np.abs(ours.matrix - ref).max()),
        "best": ours.best,
        "best_index": ours.best_index,
    }


def searchsorted_compare_all(states_a: list, states_b: list, k: int):
    """mutual_knn's sweep before the shared-neighbour table: a binary search per neighbour."""
    import numpy as np

    sorted_b = torch.stack(states_b).sort(dim=2).values
    out = np.empty((len(states_a), len(states_b)))
    for i, knn_a in enumerate(states_a):
        queries = knn_a.expand_as(sorted_b).contiguous()
        where = torch.searchsorted(sorted_b, queries).clamp_(max=k - 1)
        shared = (sorted_b.gather(2, where) == queries).sum(dim=2)
        out[i] = (shared.float() / k).mean(dim=1).double().cpu().numpy()
    return out


def bench_null(a: torch.Tensor, b: torch.Tensor, k: int, permutations: int, device: str) -> dict:
    from prh_bench import get_metric
    from prh_bench.align import permutation_null, prepare_states

    metric = get_metric("mutual_knn", topk=k)
    states_a = prepare_states(metric, list(a.unbind(1)))
    states_b = prepare_states(metric, list(b.unbind(1)))
    observed = float(metric.compare_all(states_a, states_b).max())
    before = get_metric("mutual_knn", topk=k)
    before.compare_all = lambda sa, sb: searchsorted_compare_all(sa, sb, k)
    times, nulls = {}, {}
    for label, m in (("searchsorted", before), ("table", metric)):
        permutation_null(m, states_a[:2], states_b[:2], observed, permutations=1)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        nulls[label] = permutation_null(m, states_a, states_b, observed, permutations)
        sync(device)
        times[label] = time.perf_counter() - t0
    return {
        "layers": f"{a.shape[1]} x {b.shape[1]}",
        "n": a.shape[0],
        "permutations": permutations,
        "searchsorted_s": round(times["searchsorted"], 3),
        "table_s": round(times["table"], 3),
        "speedup": round(times["searchsorted"] / times["table"], 1),
        "nulls_identical": nulls["searchsorted"].values == nulls["table"].values,
        "p_value": nulls["table"].p_value,
    }


def bench_clamp(a: torch.Tensor, q: float, device: str) -> dict:
    from prh_bench.align import quantile_threshold

    flat = a.flatten(start_dim=1)
    sync(device)
    t0 = time.perf_counter()
    ours = quantile_threshold(flat, q)
    sync(device)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        ref = torch.quantile(a.abs().flatten(start_dim=1), q, dim=1).mean()
        sync(device)
        t_ref = time.perf_counter() - t0
        same = bool(torch.equal(ours, ref))
    except RuntimeError as exc:  # torch.quantile refuses very large inputs
        return {"prh_bench_s": round(t_ours, 3), "torch_quantile": f"failed: {exc}"}
    return {
        "shape": list(a.shape),
        "prh_bench_s": round(t_ours, 3),
        "torch_quantile_s": round(t_ref, 3),
        "speedup": round(t_ref / t_ours, 2),
        "thresholds_identical": same,
        "threshold": ours.item(),
    }


KNN_CHILD = """
import json, resource, sys, time, torch
n, d, k, device = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
g = torch.Generator().manual_seed(0)
feats = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1).to(device)
from prh_bench.registry import get_knn_backend
backend = get_knn_backend(device.split(':')[0], n, d, k)
if device.startswith('cuda'): torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter(); knn = backend(feats, k)
if device.startswith('cuda'): torch.cuda.synchronize()
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
gpu = torch.cuda.max_memory_allocated() / 2**30 if device.startswith('cuda') else None
print(json.dumps({"n": n, "dim": d, "k": k, "backend": backend.name, "seconds": round(elapsed, 2),
                  "peak_rss_gib": round(peak, 2), "peak_gpu_gib": gpu,
                  "gemm_tflop": round(2 * n * n * d / 1e12, 2)}))
"""


def bench_knn(n: int, d: int, k: int, device: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", KNN_CHILD, str(n), str(d), str(k), device],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="small shapes for a smoke run")
    parser.add_argument(
        "--skip", action="append", default=[], choices=["sweep", "clamp", "knn", "null"]
    )
    parser.add_argument("--permutations", type=int, default=100, help="for the null (default 100)")
    args = parser.parse_args()

    torch.manual_seed(0)
    n, la, lb, da, db, big_n = (1024, 33, 25, 2048, 1024, 65536)
    if args.quick:
        n, la, lb, da, db, big_n = (256, 6, 5, 256, 128, 8192)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    a = synthetic_model(n, la, da, 1, args.device)
    b = synthetic_model(n, lb, db, 2, args.device)
    if "clamp" not in args.skip:
        print("clamp :", json.dumps(bench_clamp(a, 0.95, args.device)), flush=True)
    if "sweep" not in args.skip:
        print("sweep :", json.dumps(bench_sweep(a, b, 10, args.device)), flush=True)
    if "knn" not in args.skip:
        print("knn   :", json.dumps(bench_knn(big_n, 1024, 10, args.device)), flush=True)
    if "null" not in args.skip:
        a_null, b_null = a[:, : min(la, 31)], b[:, : min(lb, 22)]
        null = bench_null(a_null, b_null, 10, args.permutations, args.device)
        print("null  :", json.dumps(null), flush=True)


if __name__ == "__main__":
    main()
