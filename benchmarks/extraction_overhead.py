"""How much the harness costs over a bare forward loop on the same model and batches.

    python benchmarks/extraction_overhead.py --model efficientnet_lite0 \
        --dataset openclipart-1024 --samples 256 --repeats 2

The bare loop decodes, preprocesses and runs the loaded model batch by batch in one process
(what a hand-written script does). The harness is ``extract_features`` writing to a fresh
temporary cache each time (checkpointing, NaN checks, the safetensors file included), first
with no DataLoader workers (the like-for-like comparison), then with its default workers.
Each timing is the best of ``--repeats`` interleaved runs; weights load once, outside the timings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any


def bare_loop(loaded: Any, dataset: Any, n: int, batch_size: int, language: bool) -> float:
    import torch

    collate = loaded.collator()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            if language:
                from prh_bench import Sample

                captions = dataset.captions()[start : start + batch_size]
                samples = [Sample(str(start + i), None, (c,)) for i, c in enumerate(captions)]
            else:
                samples = [dataset[i] for i in range(start, min(n, start + batch_size))]
            layers, _ = loaded.encode(collate(samples))
            [t.cpu() for t in layers]
    return time.perf_counter() - t0


def harness(adapter: Any, dataset: Any, n: int, workers: int, preloaded: Any) -> float:
    from prh_bench.extract import extract_features

    # hand the already-loaded model to the loop so both timings exclude weight loading
    adapter = _Preloaded(adapter, preloaded)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        extract_features(
            adapter,
            dataset,
            cache_dir=tmp,
            limit=n,
            num_workers=workers,
            progress=False,
            device="cpu",
        )
        return time.perf_counter() - t0


class _Preloaded:
    """An adapter whose load() returns a model that is already in memory."""

    def __init__(self, adapter: Any, loaded: Any) -> None:
        self._adapter, self._loaded = adapter, loaded

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    def with_options(self, **options: Any) -> Any:
        return _Preloaded(self._adapter.with_options(**options), self._loaded)

    def load(self, device: str = "cpu", dtype: Any = None) -> Any:
        loaded = self._loaded

        class _NoClose:  # the harness closes what it loads; keep the weights for the next run
            def __getattr__(self, name: str) -> Any:
                return getattr(loaded, name)

            def close(self) -> None:
                pass

        return _NoClose()


def main() -> None:
    import torch

    from prh_bench import get_dataset, get_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--dataset", default="openclipart-1024")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    adapter = get_model(args.model)
    dataset = get_dataset(args.dataset)
    n = min(args.samples, len(dataset))
    loaded = adapter.load("cpu", torch.float32)
    language = adapter.modality == "language"
    bs = adapter.batch_size
    print(f"model {adapter.id}, {n} samples, batch {bs}, torch threads {torch.get_num_threads()}")

    from prh_bench.extract import _default_workers

    w = _default_workers(adapter.modality)
    # interleave the three so that a busy machine slows each of them alike
    times: dict[str, list[float]] = {"bare": [], "h0": [], "hw": []}
    for _ in range(args.repeats):
        times["bare"].append(bare_loop(loaded, dataset, n, bs, language))
        times["h0"].append(harness(adapter, dataset, n, 0, loaded))
        times["hw"].append(harness(adapter, dataset, n, w, loaded))
    bare, h0, hw = (min(times[k]) for k in ("bare", "h0", "hw"))
    print(f"bare loop:                 {bare:8.2f} s  ({n / bare:6.1f} samples/s)")
    print(f"harness, 0 workers:        {h0:8.2f} s  overhead {100 * (h0 / bare - 1):+.1f} %")
    print(f"harness, {w} worker(s):      {hw:8.2f} s  overhead {100 * (hw / bare - 1):+.1f} %")


if __name__ == "__main__":
    main()
