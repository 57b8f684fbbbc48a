"""How close the harness's extraction comes to the best bare forward loop, per model.

    python benchmarks/extraction_overhead.py                      # the default suite
    python benchmarks/extraction_overhead.py --models efficientnet_lite0 --samples 256

For every model (``--models``: a run's selection, default ``offline``, the default suite) it
loads the weights twice, once for each side, outside the timings, and then times, alternating
``--repeats`` times so that a busy machine slows both alike:

* the floor: the best bare loop written by hand for the model, on inputs made before the
  clock starts (decoded, preprocessed and collated images; captions tokenised and padded to
  the dataset's longest, as ``padding="global"`` requires, so both sides run the same padded
  inputs). Vision: the network in channels_last memory format under ``inference_mode``,
  forward hooks that pool each layer's output as it is made. Language: one forward with
  hidden states (and the logits, which the bits-per-byte statistic needs) and the pooling.
  It does not decode, tokenise, check or write anything;
* the harness: ``extract_features`` into a fresh temporary cache with its defaults (image
  decoding in DataLoader workers, NaN/inf checks, checkpoints, the safetensors file), on the
  same first ``--samples`` samples.

It prints the best time of each side and their ratio (harness / floor); the ratio is what
the bar (at most 1.2) is about. Absolute times on a shared machine are upper bounds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any


def floor_inputs(loaded: Any, dataset: Any, n: int, batch_size: int, language: bool) -> list:
    """The batches the floor runs, made before its clock starts."""
    import torch

    from prh_bench import Sample

    if language:
        captions = dataset.captions()
        loaded.prepare_texts(captions)  # padding to the whole dataset's longest caption
        samples = [Sample(str(i), None, (c,)) for i, c in enumerate(captions[:n])]
    else:
        samples = [dataset[i] for i in range(n)]
    collate = loaded.collator()
    batches = [collate(samples[s : s + batch_size]) for s in range(0, n, batch_size)]
    if not language:
        batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]
    return batches


def vision_floor(loaded: Any) -> Any:
    """A hand-written loop over ``loaded``'s network (a copy of its own): channels_last,
    hooks that pool each layer as it is made, nothing else."""
    import torch

    loaded.model.to(memory_format=torch.channels_last)
    for h in loaded._handles:  # this copy pools in the floor's hooks only
        h.remove()
    pooled: list[torch.Tensor] = []
    for _, module in loaded.modules:
        module.register_forward_hook(lambda _m, _a, out: pooled.append(out.mean((2, 3))))

    def run(batches: list) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for x in batches:
                pooled.clear()
                out = loaded.forward(x)
                if loaded.final:
                    pooled.append(out.mean((2, 3)))
        return time.perf_counter() - t0

    return run


def language_floor(loaded: Any, batches: list) -> float:
    """One forward with hidden states per batch, mean-pooled over real tokens."""
    import torch

    model = loaded.model
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            out = model(
                input_ids=b["input_ids"],
                attention_mask=b["attention_mask"],
                output_hidden_states=True,
            )
            m = b["attention_mask"].unsqueeze(-1)
            [(h * m).sum(1) / m.sum(1) for h in out.hidden_states]
    return time.perf_counter() - t0


def harness(adapter: Any, dataset: Any, n: int, preloaded: Any) -> float:
    from prh_bench.extract import extract_features

    adapter = _Preloaded(adapter, preloaded)  # both timings exclude weight loading
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        extract_features(adapter, dataset, cache_dir=tmp, limit=n, progress=False, device="cpu")
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


def bench(model_id: str, dataset: Any, samples: int, repeats: int) -> tuple[float, float]:
    """(floor, harness): the best of ``repeats`` alternating timings of each."""
    import torch

    from prh_bench import get_model

    adapter = get_model(model_id)
    n = min(samples, len(dataset))
    language = adapter.modality == "language"
    floor_model = adapter.load("cpu", torch.float32)
    harness_model = adapter.load("cpu", torch.float32)
    batches = floor_inputs(floor_model, dataset, n, adapter.batch_size, language)
    floor = (lambda b: language_floor(floor_model, b)) if language else vision_floor(floor_model)
    times: dict[str, list[float]] = {"floor": [], "harness": []}
    for _ in range(repeats):
        times["floor"].append(floor(batches))
        times["harness"].append(harness(adapter, dataset, n, harness_model))
    return min(times["floor"]), min(times["harness"])


def main() -> None:
    import torch

    from prh_bench import get_dataset
    from prh_bench.runner import select_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="offline", help="a run's --models (default: offline)")
    ap.add_argument("--dataset", default="openclipart-1024")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    dataset = get_dataset(args.dataset)
    models = [m for m in select_models(args.models) if m.availability()[0]]
    n = min(args.samples, len(dataset))
    print(
        f"{n} samples of {dataset.id}, best of {args.repeats}, torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"{'model':<28}{'batch':>6}{'floor s':>10}{'harness s':>11}{'ratio':>8}")
    for m in models:
        floor, harness_s = bench(m.id, dataset, n, args.repeats)
        print(
            f"{m.id:<28}{m.batch_size:>6}{floor:>10.2f}{harness_s:>11.2f}{harness_s / floor:>8.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
