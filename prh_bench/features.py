"""The extraction loop and the feature store.

One safetensors file per key: (model id, weights revision, preprocessing, pooling, dtype,
dataset id + revision + content hash, adapter version). The file holds one ``[N, D_l]`` float32
tensor per layer (``layer.000``, ``layer.001``, ...), optional per-sample statistics
(``stat.bits_per_byte``) and a JSON header in the safetensors metadata (``prh_bench``).

Layout under the cache directory (``--cache-dir``, ``$PRH_BENCH_CACHE``, else
``~/.cache/prh-bench``)::

    features/<dataset-slug>/<model-slug>/<digest16>.safetensors   the finished features
    features/<dataset-slug>/<model-slug>/<digest16>.partial/      checkpointed batches
    features/<dataset-slug>/<model-slug>/<digest16>.lock          a filelock while computing
    weights/                                                       converted weights (adapters)

Everything is written to a temporary name and renamed (``os.replace``), so a killed run never
leaves a half-written file; a rerun resumes from the checkpointed batches. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidInputError, ModelError, PrhBenchError
from .storage import atomic_write, writing

if TYPE_CHECKING:
    import torch

    from .datasets import Dataset, Sample
    from .models import LoadedModel, ModelAdapter

FORMAT = "prh-bench-features/1"
METADATA_KEY = "prh_bench"
ENV_CACHE = "PRH_BENCH_CACHE"
ENV_CHECKPOINT = "PRH_BENCH_CHECKPOINT_SECONDS"
DEFAULT_CHECKPOINT_SECONDS = 30.0


# --------------------------------------------------------------------------- locations


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: the argument, else ``$PRH_BENCH_CACHE``, else ~/.cache/prh-bench."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "prh-bench"


def weights_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where adapters keep converted weights (e.g. a GGUF dequantised to safetensors)."""
    return cache_root(cache_dir) / "weights"


def slug(text: str) -> str:
    """A file-name-safe, readable form of an id (``org/name`` -> ``org--name``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.replace("/", "--")).strip("-") or "_"


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class FeatureKey:
    """Everything that determines a feature file's content."""

    model_id: str
    revision: str
    preprocessing: str
    pooling: str
    dtype: str
    dataset_id: str
    dataset_revision: str
    dataset_hash: str
    adapter_version: str

    def as_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @property
    def digest(self) -> str:
        blob = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, cache_dir: str | os.PathLike[str] | None = None) -> Path:
        root = cache_root(cache_dir) / "features"
        folder = root / slug(self.dataset_id) / slug(self.model_id)
        return folder / f"{self.digest[:16]}.safetensors"


def resolve_device(device: str | None = None) -> str:
    """The device to run on: as given, else cuda, then mps, then cpu."""
    if device:
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


_DTYPES = ("float32", "float16", "bfloat16")


def _dtype_name(dtype: Any) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise InvalidInputError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return name


def feature_key(adapter: ModelAdapter, dataset: Dataset, dtype: str) -> FeatureKey:
    """The cache key of ``adapter`` on ``dataset`` computed in ``dtype``."""
    return FeatureKey(
        model_id=adapter.id,
        revision=adapter.weights_revision(),
        preprocessing=adapter.preprocessing(),
        pooling=adapter.pooling,
        dtype=_dtype_name(dtype),
        dataset_id=dataset.id,
        dataset_revision=str(dataset.revision),
        dataset_hash=dataset.content_hash,
        adapter_version=str(adapter.adapter_version),
    )


# --------------------------------------------------------------------------- files


@dataclass
class FeatureSet:
    """Per-layer features of one model on one dataset, with their metadata."""

    layers: list[torch.Tensor]
    stats: dict[str, torch.Tensor]
    meta: dict[str, Any]
    path: Path
    from_cache: bool = False

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_samples(self) -> int:
        return int(self.layers[0].shape[0]) if self.layers else 0


def _atomic_save(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: Path) -> None:
    """Write a safetensors file under a temporary name in the same folder, then rename."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {METADATA_KEY: json.dumps(meta, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {})[METADATA_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of a feature file, without reading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {})[METADATA_KEY])


def _split_tensors(
    tensors: dict[str, torch.Tensor],
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    layer_names = sorted(k for k in tensors if k.startswith("layer."))
    layers = [tensors[k] for k in layer_names]
    stats = {k.removeprefix("stat."): v for k, v in tensors.items() if k.startswith("stat.")}
    return layers, stats


def load_cached(path: Path, key: FeatureKey) -> FeatureSet | None:
    """The feature file at ``path`` if it is complete and belongs to ``key``; else None.

    An unreadable or foreign file is reported with a warning and removed so it is recomputed.
    """
    if not path.exists():
        return None
    try:
        tensors, meta = _read(path)
        if meta.get("format") != FORMAT or meta.get("digest") != key.digest:
            raise ValueError("its key does not match")
        layers, stats = _split_tensors(tensors)
        if len(layers) != meta["num_layers"] or any(
            t.shape[0] != meta["num_samples"] for t in layers
        ):
            raise ValueError("its tensors do not match its header")
    except Exception as exc:  # a torn or foreign file must not stop a run
        warnings.warn(
            f"feature cache file {path} is unreadable ({type(exc).__name__}: {exc}); "
            "recomputing it",
            RuntimeWarning,
            stacklevel=3,
        )
        path.unlink(missing_ok=True)
        return None
    return FeatureSet(layers, stats, meta, path, from_cache=True)


# --------------------------------------------------------------------------- extraction


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


def _partial_dir(path: Path) -> Path:
    return path.with_suffix(".partial")


def _load_chunks(folder: Path, digest: str) -> tuple[list[dict[str, torch.Tensor]], int]:
    """The checkpointed batches in order, and the index the next batch starts at."""
    chunks: list[dict[str, torch.Tensor]] = []
    done = 0
    if not folder.is_dir():
        return chunks, 0
    for file in sorted(folder.glob("chunk-*.safetensors")):
        try:
            tensors, meta = _read(file)
        except Exception:  # a torn chunk: everything from it on is recomputed
            break
        if meta.get("digest") != digest or meta.get("start") != done:
            break
        chunks.append(tensors)
        done = meta["stop"]
    return chunks, done


def _cat(chunks: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    import torch

    return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]} if chunks else {}


def _environment(device: str) -> dict[str, Any]:
    import platform

    import torch

    from .provenance import __version__

    env: dict[str, Any] = {
        "prh_bench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def _default_workers(modality: str) -> int:
    # Decoding images is worth a worker process; tokenising captions is not.
    if modality != "vision":
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


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

    from .registry import get_dataset

    if checkpoint_seconds is None:  # how much work a kill may cost; the environment may say
        checkpoint_seconds = float(os.environ.get(ENV_CHECKPOINT, DEFAULT_CHECKPOINT_SECONDS))
    from .registry import get_model

    adapter = get_model(model) if isinstance(model, str) else model
    ds = get_dataset(dataset) if isinstance(dataset, str) else dataset
    if limit is not None:
        ds = _Prefix(ds, limit)
    if batch_size is not None:
        adapter = adapter.with_options(batch_size=batch_size)
    dev = resolve_device(device)
    dtype_name = _dtype_name(dtype or adapter.default_dtype(dev))
    key = feature_key(adapter, ds, dtype_name)
    path = key.path(cache_dir)

    if not force and (hit := load_cached(path, key)) is not None:
        return hit
    with writing(path.parent):  # a read-only or full cache folder is one clear line
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path.with_suffix(".lock")), timeout=lock_timeout)
        lock.acquire()
    with lock:
        # Another process may have finished this key while we waited for the lock.
        if not force and (hit := load_cached(path, key)) is not None:
            return hit
        if force:
            shutil.rmtree(_partial_dir(path), ignore_errors=True)
        return _compute(
            adapter, ds, key, path, dev, dtype_name, num_workers, progress, checkpoint_seconds
        )


def _compute(
    adapter: ModelAdapter,
    ds: Dataset,
    key: FeatureKey,
    path: Path,
    device: str,
    dtype_name: str,
    num_workers: int | None,
    progress: bool,
    checkpoint_seconds: float,
) -> FeatureSet:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    n = len(ds)
    if n == 0:
        raise InvalidInputError(f"dataset '{ds.id}' is empty: nothing to extract")
    partial = _partial_dir(path)
    chunks, start = _load_chunks(partial, key.digest)
    t0 = time.perf_counter()
    loaded: LoadedModel | None = None
    layer_names: list[str] = []
    if start < n:
        loaded = adapter.load(device, getattr(torch, dtype_name))
        layer_names = list(getattr(loaded, "layer_names", []) or [])
        workers = _default_workers(adapter.modality) if num_workers is None else num_workers
        if adapter.modality == "language":
            rows: Any = _Captions(ds.captions(), start)
        else:
            rows = _Rows(ds, start, n)
        loader = DataLoader(
            rows,
            batch_size=adapter.batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=loaded.collator(),
            persistent_workers=False,
        )
        pending: list[dict[str, torch.Tensor]] = []
        pending_start, cursor = start, start
        last_flush = time.monotonic()
        bar = tqdm(
            total=n,
            initial=start,
            desc=adapter.id,
            unit="sample",
            disable=not progress,
            leave=False,
        )
        try:
            with torch.inference_mode():
                for inputs in loader:
                    layers, stats = encode_with_retry(loaded, inputs, adapter.id)
                    layers = [t.detach().float().cpu() for t in layers]
                    _check_finite(layers, adapter.id, layer_names, cursor)
                    rows_here = int(layers[0].shape[0])
                    batch = {f"layer.{i:03d}": t for i, t in enumerate(layers)}
                    batch.update({f"stat.{k}": v.detach().float().cpu() for k, v in stats.items()})
                    pending.append(batch)
                    cursor += rows_here
                    bar.update(rows_here)
                    if time.monotonic() - last_flush >= checkpoint_seconds and cursor < n:
                        _write_chunk(partial, _cat(pending), key.digest, pending_start, cursor)
                        chunks.append(_cat(pending))
                        pending, pending_start, last_flush = [], cursor, time.monotonic()
        except PrhBenchError as exc:  # e.g. a corrupt image met by a decoding worker
            raise _from_worker(exc) from None
        finally:
            bar.close()
            loaded.close()
        chunks.extend(pending)
    if not chunks:
        raise ModelError(f"model '{adapter.id}' returned no features")
    tensors = _cat(chunks)
    layers, stats = _split_tensors(tensors)
    if layers[0].shape[0] != n:
        raise ModelError(
            f"model '{adapter.id}' returned {layers[0].shape[0]} feature rows for {n} samples"
        )
    meta: dict[str, Any] = {
        "format": FORMAT,
        "digest": key.digest,
        "key": key.as_dict(),
        "family": adapter.family,
        "modality": adapter.modality,
        "num_samples": n,
        "num_layers": len(layers),
        "layer_names": layer_names,
        "dims": [int(t.shape[1]) for t in layers],
        "stats": {k: float(v.mean()) for k, v in stats.items()},
        "parameters": adapter.metadata.parameters,
        "seconds": round(time.perf_counter() - t0, 3),
        "resumed_from": start,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": _environment(device),
    }
    _atomic_save(tensors, meta, path)
    shutil.rmtree(partial, ignore_errors=True)
    return FeatureSet(layers, stats, meta, path, from_cache=False)


def _from_worker(exc: PrhBenchError) -> PrhBenchError:
    """The user's one-line error, unwrapped from torch's report of a DataLoader worker."""
    text = str(exc)
    if "in DataLoader worker process" not in text:
        return exc
    # torch re-raises with the worker's traceback; its last line is "module.Type: message"
    message = text.strip().splitlines()[-1].partition(": ")[2]
    return type(exc)(message) if message else exc


def _write_chunk(
    folder: Path, tensors: dict[str, torch.Tensor], digest: str, start: int, stop: int
) -> None:
    meta = {"format": FORMAT, "digest": digest, "start": start, "stop": stop}
    _atomic_save(tensors, meta, folder / f"chunk-{start:09d}.safetensors")


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
        return hashlib.sha256(f"{self.base.content_hash}:{self.limit}".encode()).hexdigest()

    def captions(self) -> list[str]:
        return self.base.captions()[: self.limit]


# --------------------------------------------------------------------------- cache listing


@dataclass
class CacheEntry:
    path: Path
    model_id: str
    dataset_id: str
    num_samples: int | None
    num_layers: int | None
    size_bytes: int
    complete: bool
    key: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def _iter_cache(root: Path) -> Iterator[CacheEntry]:
    base = root / "features"
    if not base.is_dir():
        return
    for file in sorted(base.glob("*/*/*.safetensors")):
        try:
            meta = read_header(file)
            key = meta.get("key", {})
            yield CacheEntry(
                file,
                key.get("model_id", "?"),
                key.get("dataset_id", "?"),
                meta.get("num_samples"),
                meta.get("num_layers"),
                file.stat().st_size,
                True,
                key,
            )
        except Exception as exc:
            yield CacheEntry(
                file,
                file.parent.name,
                file.parent.parent.name,
                None,
                None,
                file.stat().st_size,
                True,
                error=f"{type(exc).__name__}: {exc}",
            )
    for folder in sorted(base.glob("*/*/*.partial")):
        size = sum(f.stat().st_size for f in folder.glob("*") if f.is_file())
        yield CacheEntry(
            folder, folder.parent.name, folder.parent.parent.name, None, None, size, False
        )


def list_cache(
    cache_dir: str | os.PathLike[str] | None = None,
    model: str | None = None,
    dataset: str | None = None,
) -> list[CacheEntry]:
    """The feature files (and unfinished runs) in the cache, optionally filtered."""
    out = []
    for e in _iter_cache(cache_root(cache_dir)):
        if model is not None and e.model_id not in (model, slug(model)):
            continue
        if dataset is not None and e.dataset_id not in (dataset, slug(dataset)):
            continue
        out.append(e)
    return out


def remove_cache(
    cache_dir: str | os.PathLike[str] | None = None,
    model: str | None = None,
    dataset: str | None = None,
) -> list[CacheEntry]:
    """Delete the matching feature files and unfinished runs; returns what was removed."""
    removed = list_cache(cache_dir, model, dataset)
    for e in removed:
        if e.path.is_dir():
            shutil.rmtree(e.path, ignore_errors=True)
        else:
            e.path.unlink(missing_ok=True)
        e.path.with_suffix(".lock").unlink(missing_ok=True)
    # drop folders left empty
    base = cache_root(cache_dir) / "features"
    for folder in sorted(base.glob("*/*"), reverse=True) + sorted(base.glob("*"), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed
