"""What the intervals cost: scoring with and without half-sample replicates, side by side.

Synthetic features sized like the default run (7 language models x 25 layers, D 1024-1280;
7 vision models x 20 layers, D 768-1280; N = 1024; mutual_knn k = 10; the shuffled-pairs
null with 100 permutations), scored as the runner scores them: each model preprocessed and
prepared once, every pair swept with its null. Then the same plus the replicates (each model
prepared once per half-sample, every pair swept once per half-sample), for several counts.
Prints each time and its ratio to today's scoring. Times are the process's CPU time on one
thread, so that other work on a shared machine does not move the ratio.

    python benchmarks/bench_uncertainty.py              # the default run's size (~20 min)
    python benchmarks/bench_uncertainty.py --models 3   # 3 + 3 models (a higher ratio: each
                                                        # model's replicate states serve fewer pairs)
    python benchmarks/bench_uncertainty.py --quick      # 2 + 2 models, N = 512

Measured (--models 3, CPU, one thread): today 166.8 s; +10 replicates 1.15x, +20 1.31x,
+40 1.58x.
"""

from __future__ import annotations

import argparse
import time

import torch

from prh_bench.align import permutation_null, prepare_states, preprocess, sweep
from prh_bench.registry import get_metric
from prh_bench.stats import ReplicateStates


def synthetic_model(n: int, layers: int, dim: int, seed: int) -> list[torch.Tensor]:
    """One model's layers: a latent shared by every model, its own projections and noise."""
    latent = torch.randn(n, 32, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed)
    return [
        latent @ torch.randn(32, dim, generator=g) + (1 + i / 4) * torch.randn(n, dim, generator=g)
        for i in range(layers)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 + 2 models, N = 512")
    parser.add_argument("--replicates", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--models", type=int, default=7, help="of each modality")
    args = parser.parse_args()
    n, count = (512, 2) if args.quick else (1024, args.models)
    torch.set_num_threads(1)
    metric = get_metric("mutual_knn", topk=10)
    language = {f"lm{i}": synthetic_model(n, 25, (1024, 1280)[i % 2], seed=i) for i in range(count)}
    vision = {
        f"vm{i}": synthetic_model(n, 20, (768, 1024, 1280)[i % 3], seed=100 + i)
        for i in range(count)
    }
    models = {**language, **vision}
    pairs = [(a, b) for a in language for b in vision]

    start = time.process_time()
    layers = {name: preprocess(feats, name) for name, feats in models.items()}
    states = {name: prepare_states(metric, x) for name, x in layers.items()}
    best = {}
    for a, b in pairs:
        _, best[(a, b)], _ = sweep(metric, states[a], states[b])
        permutation_null(metric, states[a], states[b], best[(a, b)], args.permutations)
    today = time.process_time() - start
    print(f"N={n}, {count} language x {count} vision models, {len(pairs)} pairs")
    print(f"today's scoring (sweep + {args.permutations}-permutation null): {today:.1f} s CPU")

    for replicates in args.replicates:
        start = time.process_time()
        reps = ReplicateStates(n, replicates, seed=0)
        for a, b in pairs:
            reps.uncertainty(metric, best[(a, b)], (a, layers[a]), (b, layers[b]))
        extra = time.process_time() - start
        print(
            f"  + {replicates:3d} replicates: {extra:6.1f} s more, "
            f"ratio {(today + extra) / today:.2f}x"
        )


if __name__ == "__main__":
    main()
