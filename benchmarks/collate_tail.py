"""The vision collator's batched tail against the per-sample transform, on one thread.

    python benchmarks/collate_tail.py                                   # lite0, 256 images
    python benchmarks/collate_tail.py --model efficientnet_lite2 --samples 512

On images decoded before the clock starts, in rounds (the order swapped every round), with
one torch thread as in a DataLoader worker:

* per sample: the model's transform on each image, ``torch.stack``, then the conversion to
  the network's memory format (what the collator did before it tabled the tail);
* tabled: ``ImageCollator`` as the model's ``collator()`` builds it (ToTensor + Normalize by a
  table of each 8-bit value, written in the network's memory format).

It checks that both give the same floats, then prints the median milliseconds per image and
the median of the rounds' ratios tabled / per sample.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).parent))
from extraction_overhead import in_rounds, ratios_to  # noqa: E402


def main() -> None:
    import torch

    from prh_bench import get_dataset, get_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--dataset", default="openclipart-1024")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5, help="rounds (default: 5)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    dataset = get_dataset(args.dataset)
    loaded = get_model(args.model).load("cpu", torch.float32)
    collate = loaded.collator()
    transform, memory_format = collate.transform, collate.memory_format or torch.contiguous_format
    samples = [dataset[i] for i in range(min(args.samples, len(dataset)))]
    batches = [samples[s : s + 32] for s in range(0, len(samples), 32)]

    def per_sample() -> list:
        return [
            torch.stack([transform(s.image) for s in b]).contiguous(memory_format=memory_format)
            for b in batches
        ]

    def tabled() -> list:
        return [collate(b) for b in batches]

    if not all(torch.equal(a, b) for a, b in zip(per_sample(), tabled(), strict=True)):
        raise SystemExit("the tabled tail does not give the per-sample floats")
    times = in_rounds({"per sample": per_sample, "tabled": tabled}, args.repeats)
    n = len(samples)
    print(f"{args.model}, {n} images of {dataset.id}, 1 thread, {args.repeats} rounds, medians")
    for name, runs in times.items():
        print(f"{name:<12}{median(w for w, _ in runs) / n * 1e3:>8.3f} ms per image")
    ratio = median(ratios_to(times["per sample"], times["tabled"], 0))
    print(f"tabled / per sample: {ratio:.2f} (the same floats: checked)")


if __name__ == "__main__":
    main()
