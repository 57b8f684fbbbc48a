"""Where a vision model's extraction spends the time its bare forward loop does not.

    python benchmarks/vision_overhead_parts.py                              # lite0, 512 samples
    python benchmarks/vision_overhead_parts.py --model efficientnet_lite2 --samples 1024

``extraction_overhead.py`` gives the ratio harness / floor; this splits the gap into parts, each
timed in rounds beside the floor (the order swapped every round) and printed as the median of
the rounds' ratios to the floor:

* ``encode, NHWC batches``: the harness's ``encode`` (hooks, pooling, checks) on the floor's
  own pre-made channels_last batches;
* ``encode, NCHW batches``: the same on batches as the collator makes them, so ``encode``
  converts each to channels_last;
* ``loader + encode``: decoding in the DataLoader (``--workers``, the harness's default 1 on
  two cores) feeding ``encode``, nothing else;
* ``loader alone``: the decoding and collating without any forward;
* ``extract_features``: the whole harness (checks, checkpoints, the safetensors file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from extraction_overhead import (  # noqa: E402
    floor_inputs,
    harness,
    in_rounds,
    ratios_to,
    vision_floor,
)


def main() -> None:
    import torch
    from torch.utils.data import DataLoader, Subset

    from prh_bench import get_dataset, get_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--dataset", default="openclipart-1024")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="rounds (default: 3)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers (default: 1)")
    args = ap.parse_args()

    dataset = get_dataset(args.dataset)
    adapter = get_model(args.model)
    if adapter.modality != "vision":
        raise SystemExit(f"{args.model} is a {adapter.modality} model; this splits vision models")
    n = min(args.samples, len(dataset))
    floor_model = adapter.load("cpu", torch.float32)
    model = adapter.load("cpu", torch.float32)
    nhwc = floor_inputs(floor_model, dataset, n, adapter.batch_size, language=False)
    nchw = [b.contiguous() for b in nhwc]
    first_n = Subset(dataset, range(n))

    def loader() -> Any:
        return DataLoader(
            first_n,
            batch_size=adapter.batch_size,
            num_workers=args.workers,
            collate_fn=model.collator(),
        )

    def encode(batches: Any) -> None:
        with torch.inference_mode():
            for x in batches:
                model.encode(x)

    def drain(batches: Any) -> None:
        for _ in batches:
            pass

    parts = {
        "floor": vision_floor(floor_model, nhwc),
        "encode, NHWC batches": lambda: encode(nhwc),
        "encode, NCHW batches": lambda: encode(nchw),
        "loader + encode": lambda: encode(loader()),
        "loader alone": lambda: drain(loader()),
        "extract_features": harness(adapter, dataset, n, model),
    }
    times = in_rounds(parts, args.repeats)

    print(f"{args.model}, {n} samples of {dataset.id}, {args.repeats} rounds, medians")
    print(f"{'part':<24}{'wall s':>8}{'ratio':>7}{'cpu s':>9}{'ratio':>7}")
    floor = times["floor"]
    for part, runs in times.items():
        wall, cpu = median(ratios_to(floor, runs, 0)), median(ratios_to(floor, runs, 1))
        print(
            f"{part:<24}{median(w for w, _ in runs):>8.2f}{wall:>7.2f}"
            f"{median(c for _, c in runs):>9.2f}{cpu:>7.2f}"
        )


if __name__ == "__main__":
    main()
