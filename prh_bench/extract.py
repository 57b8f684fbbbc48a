"""The extraction loop: a model's per-layer features on a dataset, into the feature store.

``extract_features`` returns the stored file when there is one; otherwise it loads the model
once, encodes the dataset batch by batch (out-of-memory batches retried in halves, NaN/inf
refused), checkpoints the batches at most every ``checkpoint_seconds`` so a killed run resumes,
and writes the finished file. Keys, paths and file formats are ``prh_bench.store``'s.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .datasets import first_n_hash
from .errors import InvalidInputError, ModelError, PrhBenchError
from .storage import writing
from .store import (
    FORMAT,
    FeatureKey,
    FeatureSet,
    dtype_name,
    feature_key,
    load_cached,
    load_chunks,
    lock_path,
    partial_dir,
    save_tensors,
    split_tensors,
    using_cache,
    write_chunk,
)

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from .datasets import Dataset, Sample
    from .models import LoadedModel, ModelAdapter

ENV_CHECKPOINT = "PRH_BENCH_CHECKPOINT_SECONDS"
DEFAULT_CHECKPOINT_SECONDS = 30.0


DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?|mps")


def check_device_name(device: str) -> None:
    """Refuse a device that is not cpu, cuda, cuda:N or mps (whatever this machine has)."""
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise InvalidInputError(f"device must be cpu, cuda, cuda:N or mps, got {device!r}")


def check_device_here(device: str) -> None:
    """Refuse a device this machine does not have, naming what it has."""
    import torch

    check_device_name(device)
    kind, _, index = device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (index and int(index) >= count):
            have = f"{count} CUDA device(s) (cuda:0 to cuda:{count - 1})" if count else "no CUDA"
            raise InvalidInputError(f"device '{device}' is not here: this machine has {have}")
    elif kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidInputError(f"device '{device}' is not here: this machine has no MPS")


def checkpoint_seconds_from_env() -> float:
    """``$PRH_BENCH_CHECKPOINT_SECONDS`` (a number of seconds >= 0), else the default."""
    raw = os.environ.get(ENV_CHECKPOINT)
    if raw is None or not raw.strip():
        return DEFAULT_CHECKPOINT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise InvalidInputError(
            f"{ENV_CHECKPOINT} must be a number of seconds >= 0 (e.g. 30), got {raw!r}"
        )
    return seconds


def resolve_device(device: str | None = None) -> str:
    """The device to run on: as given (checked to exist here), else cuda, then mps, then cpu."""
    if device:
        check_device_here(device)
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def extract_features(
    model: ModelAdapter | str,
    dataset: Dataset | str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    checkpoint_seconds: float | None = None,
    lock_timeout: float = -1,
    limit: int | None = None,
) -> FeatureSet:
    """Per-layer features of ``model`` on ``dataset``, from the cache or computed and cached.

    A rerun loads the file; a killed run resumes from its checkpointed batches (written at
    most every ``checkpoint_seconds``); a file lock keeps two processes from computing the
    same key. ``limit`` keeps the first N samples (a different dataset key). ``force``
    recomputes even when the file exists.
    """
    from filelock import FileLock

    from .registry import get_dataset, get_model

    if checkpoint_seconds is None:  # how much work a kill may cost; the environment may say
        checkpoint_seconds = checkpoint_seconds_from_env()
    dev = resolve_device(device)  # a device that is not here fails before any cache lookup
    adapter = get_model(model) if isinstance(model, str) else model
    ds = get_dataset(dataset) if isinstance(dataset, str) else dataset
    if limit is not None:
        ds = _Prefix(ds, limit)
    if batch_size is not None:
        adapter = adapter.with_options(batch_size=batch_size)
    dtype = dtype_name(dtype or adapter.default_dtype(dev))
    key = feature_key(adapter, ds, dtype)
    path = key.path(cache_dir)

    if not force and (hit := load_cached(path, key)) is not None:
        return hit
    with writing(path.parent):  # a read-only or full cache folder is one clear line
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path(path)), timeout=lock_timeout)
        lock.acquire()
    with lock:
        # Another process may have finished this key while we waited for the lock.
        if not force and (hit := load_cached(path, key)) is not None:
            return hit
        if force:
            shutil.rmtree(partial_dir(path), ignore_errors=True)
        with using_cache(cache_dir):  # weights an adapter converts go into this cache too
            return _compute(adapter, ds, key, path, dev, num_workers, progress, checkpoint_seconds)


def _compute(
    adapter: ModelAdapter,
    ds: Dataset,
    key: FeatureKey,
    path: Path,
    device: str,
    num_workers: int | None,
    progress: bool,
    checkpoint_seconds: float,
) -> FeatureSet:
    """Encode what the checkpoints lack, then write the feature file and drop the checkpoints."""
    n = len(ds)
    if n == 0:
        raise InvalidInputError(f"dataset '{ds.id}' is empty: nothing to extract")
    partial = partial_dir(path)
    chunks, start = load_chunks(partial, key.digest)
    t0 = time.perf_counter()
    layer_names: list[str] = []
    load_seconds = 0.0
    if start < n:
        layer_names, load_seconds = _encode_rest(
            adapter,
            ds,
            key,
            chunks,
            start,
            checkpoints=partial,
            device=device,
            num_workers=num_workers,
            progress=progress,
            checkpoint_seconds=checkpoint_seconds,
        )
    if not chunks:
        raise ModelError(f"model '{adapter.id}' returned no features")
    tensors = _cat(chunks)
    layers, stats = split_tensors(tensors)
    if layers[0].shape[0] != n:
        raise ModelError(
            f"model '{adapter.id}' returned {layers[0].shape[0]} feature rows for {n} samples"
        )
    meta = _header(adapter, key, layers, stats, layer_names, device, start, (t0, load_seconds))
    save_tensors(tensors, meta, path)
    shutil.rmtree(partial, ignore_errors=True)
    return FeatureSet(layers, stats, meta, path, from_cache=False)


def _encode_rest(
    adapter: ModelAdapter,
    ds: Dataset,
    key: FeatureKey,
    chunks: list[dict[str, torch.Tensor]],
    start: int,
    *,
    checkpoints: Path,
    device: str,
    num_workers: int | None,
    progress: bool,
    checkpoint_seconds: float,
) -> tuple[list[str], float]:
    """Encode samples ``start:`` into ``chunks``, checkpointing as it goes; the layer names
    and the seconds loading the model took."""
    import torch
    from tqdm.auto import tqdm

    n = len(ds)
    t0 = time.perf_counter()
    loaded = adapter.load(device, getattr(torch, key.dtype))
    load_seconds = time.perf_counter() - t0
    layer_names = list(getattr(loaded, "layer_names", []) or [])
    pending: list[dict[str, torch.Tensor]] = []
    pending_start, cursor = start, start
    last_flush = time.monotonic()
    bar = tqdm(
        total=n, initial=start, desc=adapter.id, unit="sample", disable=not progress, leave=False
    )
    try:
        with torch.inference_mode():
            for inputs in _loader(adapter, loaded, ds, start, num_workers):
                batch = _encode_batch(loaded, inputs, adapter.id, layer_names, cursor)
                _check_same_layers(batch, (chunks + pending or [batch])[0], adapter.id, cursor)
                pending.append(batch)
                rows_here = int(batch["layer.000"].shape[0])
                cursor += rows_here
                bar.update(rows_here)
                if time.monotonic() - last_flush >= checkpoint_seconds and cursor < n:
                    write_chunk(checkpoints, _cat(pending), key.digest, pending_start, cursor)
                    chunks.append(_cat(pending))
                    pending, pending_start, last_flush = [], cursor, time.monotonic()
    except PrhBenchError as exc:  # e.g. a corrupt image met by a decoding worker
        raise _from_worker(exc) from None
    finally:
        bar.close()
        loaded.close()
    chunks.extend(pending)
    return layer_names, load_seconds


def _loader(
    adapter: ModelAdapter, loaded: LoadedModel, ds: Dataset, start: int, num_workers: int | None
) -> Any:
    """Batches of collated inputs from sample ``start`` on, in order."""
    from torch.utils.data import DataLoader

    workers = _default_workers(adapter.modality) if num_workers is None else num_workers
    if adapter.modality == "language":
        captions = ds.captions()
        loaded.prepare_texts(captions)  # all of them: padding and checks see the dataset
        rows: Any = _Captions(captions, start)
    else:
        rows = _Rows(ds, start, len(ds))
    return DataLoader(
        rows,
        batch_size=adapter.batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=loaded.collator(),
        persistent_workers=False,
    )


def _encode_batch(
    loaded: LoadedModel, inputs: Any, model_id: str, layer_names: list[str], start: int
) -> dict[str, torch.Tensor]:
    """One batch's ``layer.NNN`` and ``stat.*`` tensors, float32 on the CPU, checked finite."""
    layers, stats = encode_with_retry(loaded, inputs, model_id)
    layers = [t.detach().float().cpu() for t in layers]
    _check_finite(layers, model_id, layer_names, start)
    batch = {f"layer.{i:03d}": t for i, t in enumerate(layers)}
    batch.update({f"stat.{k}": v.detach().float().cpu() for k, v in stats.items()})
    return batch


def _header(
    adapter: ModelAdapter,
    key: FeatureKey,
    layers: list[torch.Tensor],
    stats: dict[str, torch.Tensor],
    layer_names: list[str],
    device: str,
    resumed_from: int,
    times: tuple[float, float],
) -> dict[str, Any]:
    """The JSON header of a finished feature file: its key, shapes, timing and provenance.

    ``times``: when this process started computing (perf_counter) and how long loading the
    model took; ``seconds`` is this process's whole part, ``load_seconds`` the loading in it.
    """
    t0, load_seconds = times
    from .provenance import environment, prh_bench_version

    return {
        "format": FORMAT,
        "digest": key.digest,
        "key": key.as_dict(),
        "family": adapter.family,
        "modality": adapter.modality,
        "num_samples": int(layers[0].shape[0]),
        "num_layers": len(layers),
        "layer_names": layer_names,
        "dims": [int(t.shape[1]) for t in layers],
        "stats": {k: float(v.mean()) for k, v in stats.items()},
        "parameters": adapter.metadata.parameters,
        "seconds": round(time.perf_counter() - t0, 3),
        "load_seconds": round(load_seconds, 3),
        "resumed_from": resumed_from,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {"prh_bench": prh_bench_version(), **environment(device)},
    }


# --------------------------------------------------------------------------- batches


class _Rows:
    """A map-style dataset over a range of sample indices (vision: full samples)."""

    def __init__(self, dataset: Dataset, start: int, stop: int) -> None:
        self.dataset, self.start, self.stop = dataset, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> Sample:
        return self.dataset[self.start + i]


class _Captions:
    """Text-only samples from the dataset's captions: language models never decode images."""

    def __init__(self, captions: Sequence[str], start: int) -> None:
        self.captions, self.start = captions, start

    def __len__(self) -> int:
        return len(self.captions) - self.start

    def __getitem__(self, i: int) -> Sample:
        from .datasets import Sample

        j = self.start + i
        return Sample(str(j), None, (self.captions[j],))  # type: ignore[arg-type]


class _Prefix:
    """The first ``limit`` samples of a dataset, as a dataset with its own id and hash."""

    def __init__(self, dataset: Dataset, limit: int) -> None:
        if limit < 1:
            raise InvalidInputError(f"limit must be at least 1, got {limit}")
        self.base, self.limit = dataset, min(limit, len(dataset))
        self.id = dataset.id if self.limit == len(dataset) else f"{dataset.id}[:{self.limit}]"
        self.revision = dataset.revision

    def __len__(self) -> int:
        return self.limit

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.limit:
            raise IndexError(i)
        return self.base[i]

    @property
    def content_hash(self) -> str:
        if self.limit == len(self.base):
            return self.base.content_hash
        return first_n_hash(self.base.content_hash, self.limit)

    def captions(self) -> list[str]:
        return self.base.captions()[: self.limit]


def _default_workers(modality: str) -> int:
    # Decoding images is worth a worker process; tokenising captions is not.
    if modality != "vision":
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _cat(chunks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    import torch

    return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]} if chunks else {}


# --------------------------------------------------------------------------- failures


def _split_inputs(inputs: Any) -> tuple[Any, Any] | None:
    """Two halves of a batch of collated inputs along dim 0 (None when it has one row)."""
    import torch

    if isinstance(inputs, torch.Tensor):
        n = inputs.shape[0]
        return None if n < 2 else (inputs[: n // 2], inputs[n // 2 :])
    if isinstance(inputs, dict):
        parts = {k: _split_inputs(v) for k, v in inputs.items()}
        if any(p is None for p in parts.values()):
            return None
        return ({k: p[0] for k, p in parts.items()}, {k: p[1] for k, p in parts.items()})  # type: ignore[index]
    if isinstance(inputs, (list, tuple)):
        n = len(inputs)
        return None if n < 2 else (inputs[: n // 2], inputs[n // 2 :])
    return None


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return (bool(oom) and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def encode_with_retry(
    loaded: LoadedModel, inputs: Any, model_id: str
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """``loaded.encode(inputs)``; on out-of-memory, retry on halves, then fail clearly."""
    import torch

    try:
        return loaded.encode(inputs)
    except (RuntimeError, MemoryError) as exc:
        if not _is_oom(exc):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        halves = _split_inputs(inputs)
        if halves is None:
            raise ModelError(
                f"model '{model_id}' ran out of memory on a single sample; use a smaller model, "
                "another device (--device cpu) or a lower precision"
            ) from exc
        try:
            a_layers, a_stats = loaded.encode(halves[0])
            b_layers, b_stats = loaded.encode(halves[1])
        except (RuntimeError, MemoryError) as exc2:
            if not _is_oom(exc2):
                raise
            raise ModelError(
                f"model '{model_id}' ran out of memory even at half the batch; lower its "
                "batch size (batch_size=...) or run it on a device with more memory"
            ) from exc2
        layers = [torch.cat([a, b]) for a, b in zip(a_layers, b_layers, strict=True)]
        stats = {k: torch.cat([a_stats[k], b_stats[k]]) for k in a_stats}
        return layers, stats


def _check_finite(layers: list[torch.Tensor], model_id: str, names: list[str], start: int) -> None:
    import torch

    for i, t in enumerate(layers):
        if not bool(torch.isfinite(t).all()):
            name = names[i] if i < len(names) else str(i)
            raise ModelError(
                f"model '{model_id}' produced NaN/inf features in layer {i} ({name}) for samples "
                f"from index {start}; try float32 (dtype='float32') or check the weights"
            )


def _check_same_layers(
    batch: dict[str, torch.Tensor], first: dict[str, torch.Tensor], model_id: str, start: int
) -> None:
    """Every batch has the first batch's layers, widths and statistics: nothing is cut to fit."""
    if batch.keys() != first.keys():
        count = sum(k.startswith("layer.") for k in batch)
        before = sum(k.startswith("layer.") for k in first)
        what = f"{count} layers" if count != before else f"statistics {sorted(batch)}"
        was = f"{before}" if count != before else f"{sorted(first)}"
        raise ModelError(
            f"model '{model_id}' returned {what} for samples from index {start}, but {was} "
            "before; an adapter must return the same layers for every batch"
        )
    for name, tensor in batch.items():
        if tensor.shape[1:] != first[name].shape[1:]:
            raise ModelError(
                f"model '{model_id}' returned {name} of shape {list(tensor.shape[1:])} per sample "
                f"for samples from index {start}, but {list(first[name].shape[1:])} before; an "
                "adapter must return the same layers for every batch"
            )


def _from_worker(exc: PrhBenchError) -> PrhBenchError:
    """The user's one-line error, unwrapped from torch's report of a DataLoader worker."""
    text = str(exc)
    if "in DataLoader worker process" not in text:
        return exc
    # torch re-raises with the worker's traceback; its last line is "module.Type: message"
    message = text.strip().splitlines()[-1].partition(": ")[2]
    return type(exc)(message) if message else exc
