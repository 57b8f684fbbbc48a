"""How far apart the precision profiles score, measured on a CPU (docs/metrics.md).

The reference profile's GPU numerics are reproduced here: language models run in bf16 and
pool in bf16 (``pool_dtype="model"``), and a TF32 Gram is emulated by rounding both matmul
operands' mantissas to TF32's 10 bits (round to nearest) before a float32 matmul. For each
(language, vision) pair it prints the best mutual_knn score under:

- ``cpu_exact``: float32 model, float32 pooling, exact quantile, float32 Gram;
- ``cpu_v1``: the same features with the approximate quantile (result files of version 1);
- ``gpu_exact``: bf16 model, float32 pooling, exact quantile, float32 Gram (``--precision
  exact`` on a GPU);
- ``gpu_reference``: bf16 model, bf16 pooling, approximate quantile, TF32 Gram
  (``--precision reference`` on a GPU, the reference's README run).

    python scripts/measure_precision.py --limit 128 --cache-dir /tmp/prh-precision
"""

from __future__ import annotations

import argparse
import json

LANGUAGE = ["all-MiniLM-L6-v2", "SmolLM2-135M-Instruct"]
VISION = ["efficientnet_lite0", "efficientnet_lite1"]


def tf32(x):
    """``x`` (float32) rounded to TF32's 10-bit mantissa, kept as float32."""
    import torch

    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def main() -> None:
    from prh_bench.align import prepare_states, preprocess, sweep
    from prh_bench.extract import extract_features
    from prh_bench.registry import get_dataset, get_metric, get_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="openclipart-1024")
    parser.add_argument("--limit", type=int, default=128)
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    dataset = get_dataset(args.dataset)
    metric = get_metric("mutual_knn", topk=args.topk)

    def features(model_id, dtype=None, pool_dtype=None):
        adapter = get_model(model_id)
        if pool_dtype is not None:
            adapter = adapter.with_options(pool_dtype=pool_dtype)
        fs = extract_features(
            adapter, dataset, cache_dir=args.cache_dir, device="cpu", dtype=dtype,
            limit=args.limit, progress=False,
        )  # fmt: skip
        return fs.layers

    def best(language, vision, exact, gram="float32"):
        a = preprocess(language, q=0.95, exact=exact)
        b = preprocess(vision, q=0.95, exact=exact)
        if gram == "tf32":
            a, b = [tf32(x) for x in a], [tf32(x) for x in b]
        _, value, index = sweep(metric, prepare_states(metric, a), prepare_states(metric, b))
        return round(value, 6), index

    vision = {m: features(m) for m in VISION}
    for lm in LANGUAGE:
        f32 = features(lm)
        bf16_f32_pool = features(lm, "bfloat16", "float32")
        bf16_pool = features(lm, "bfloat16", "model")
        for vm, v in vision.items():
            row = {
                "pair": f"{lm} x {vm}",
                "cpu_exact": best(f32, v, exact=True),
                "cpu_v1": best(f32, v, exact=False),
                "gpu_exact": best(bf16_f32_pool, v, exact=True),
                "gpu_reference": best(bf16_pool, v, exact=False, gram="tf32"),
                "bf16_pooling_only": best(bf16_pool, v, exact=True),
                "tf32_only": best(bf16_f32_pool, v, exact=True, gram="tf32"),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
