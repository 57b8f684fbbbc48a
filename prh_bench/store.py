"""The feature store: where features and pair scores live, and how they are written and read.

One safetensors file per key: (model id, weights revision, preprocessing, pooling, dtype,
dataset id + revision + content hash, adapter version, and for vision models the image
decoder's version). The file holds one ``[N, D_l]`` float32
tensor per layer (``layer.000``, ``layer.001``, ...), optional per-sample statistics
(``stat.bits_per_byte``) and a JSON header in the safetensors metadata (``prh_bench``).

Layout under the cache directory (``--cache-dir``, ``$PRH_BENCH_CACHE``, else
``~/.cache/prh-bench``)::

    features/<dataset-slug>/<model-slug>/<digest16>.safetensors   the finished features
    features/<dataset-slug>/<model-slug>/<digest16>.partial/      checkpointed batches
    features/<dataset-slug>/<model-slug>/<digest16>.lock          a filelock while computing
    scores/<digest24>.json                                         one pair's score record
    weights/<name>/                                                converted weights (adapters)

Everything is written to a temporary name and renamed (``os.replace``), so a killed run never
leaves a half-written file; a rerun resumes from the checkpointed batches. What a kill leaves
behind (temporary files, a conversion's scratch folder) is listed by ``cache ls`` and removed
by ``cache rm``, or at the next build of the same thing, always under that thing's lock. No
pickle anywhere. The extraction loop that fills the store is ``prh_bench.extract``; while it
runs, ``weights_dir()`` points into the run's cache (``using_cache``), so an adapter that
converts weights writes nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidInputError
from .images import DECODE_VERSION
from .storage import atomic_write, atomic_write_text, slug, writing

if TYPE_CHECKING:
    import torch

    from .datasets import Dataset
    from .models import ModelAdapter

FORMAT = "prh-bench-features/1"
METADATA_KEY = "prh_bench"
ENV_CACHE = "PRH_BENCH_CACHE"


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


# the cache of the extraction under way in this context (set by ``using_cache``)
_active_cache: ContextVar[str | os.PathLike[str] | None] = ContextVar(
    "prh_bench_cache", default=None
)


@contextmanager
def using_cache(cache_dir: str | os.PathLike[str] | None) -> Iterator[None]:
    """Within the block, ``weights_dir()`` without an argument lies in ``cache_dir``'s cache."""
    token = _active_cache.set(cache_dir)
    try:
        yield
    finally:
        _active_cache.reset(token)


def weights_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where adapters keep converted weights (e.g. a GGUF dequantised to safetensors): the
    argument's cache, else the cache of the extraction under way, else the default cache."""
    return cache_root(cache_dir if cache_dir is not None else _active_cache.get()) / "weights"


def build_folder(target: Path, build: Callable[[Path], None]) -> Path:
    """``target``, a folder built once by ``build(scratch)`` and renamed into place.

    A file lock (``<target>.lock``) keeps two processes from building it at once; whoever
    holds it first removes the scratch folders a killed build left (``.<name>.*.tmp`` beside
    the target: nobody else can be building them), so no stale scratch outlives the next build.
    """
    from filelock import FileLock

    if target.is_dir():
        return target
    with writing(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(target.name + ".lock"))):
        if target.is_dir():  # built by another process while we waited
            return target
        for stale in target.parent.glob(f".{target.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        with writing(target):
            # mkdir, not mkdtemp: the folder gets the umask's permissions, not 0700
            scratch = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
            scratch.mkdir()
            try:
                build(scratch)
                os.replace(scratch, target)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return target


def partial_dir(path: Path) -> Path:
    """The folder of checkpointed batches of the feature file ``path``."""
    return path.with_suffix(".partial")


def lock_path(path: Path) -> Path:
    """The file lock held while the feature file ``path`` is computed."""
    return path.with_suffix(".lock")


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class FeatureKey:
    """Everything that determines a feature file's content.

    An adapter's ``preprocessing()`` string carries its own settings that move features
    (padding scheme, truncation, pooling dtype, the batch size where padding is per batch);
    ``decode_version`` is ``prh_bench.images.DECODE_VERSION`` for vision models (how image
    bytes become pixels) and empty for language models, which never decode images.
    """

    model_id: str
    revision: str
    preprocessing: str
    pooling: str
    dtype: str
    dataset_id: str
    dataset_revision: str
    dataset_hash: str
    adapter_version: str
    decode_version: str = ""

    def as_dict(self) -> dict[str, str]:
        # an empty decode_version is left out, so language keys (and files) stay as they were
        return {
            k: getattr(self, k)
            for k in self.__dataclass_fields__
            if k != "decode_version" or self.decode_version
        }

    @property
    def digest(self) -> str:
        blob = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, cache_dir: str | os.PathLike[str] | None = None) -> Path:
        root = cache_root(cache_dir) / "features"
        folder = root / slug(self.dataset_id) / slug(self.model_id)
        return folder / f"{self.digest[:16]}.safetensors"


DTYPES = ("float32", "float16", "bfloat16")


def dtype_name(dtype: Any) -> str:
    """``torch.float16`` or ``"float16"`` -> ``"float16"``; anything else is refused."""
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise InvalidInputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return name


def feature_key(adapter: ModelAdapter, dataset: Dataset, dtype: str) -> FeatureKey:
    """The cache key of ``adapter`` on ``dataset`` computed in ``dtype``."""
    return FeatureKey(
        model_id=adapter.id,
        revision=adapter.weights_revision(),
        preprocessing=adapter.preprocessing(),
        pooling=adapter.pooling,
        dtype=dtype_name(dtype),
        dataset_id=dataset.id,
        dataset_revision=str(dataset.revision),
        dataset_hash=dataset.content_hash,
        adapter_version=str(adapter.adapter_version),
        decode_version=DECODE_VERSION if adapter.modality == "vision" else "",
    )


# --------------------------------------------------------------------------- feature files


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


def save_tensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: Path) -> None:
    """Write a safetensors file with ``meta`` as its JSON header, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {METADATA_KEY: json.dumps(meta, sort_keys=True)}

    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp, metadata=header)
        except OSError:
            raise
        except Exception as exc:  # safetensors reports I/O errors as its own type
            code = _os_error_code(exc)
            if code is None:
                raise
            raise OSError(code, os.strerror(code)) from exc  # disk full etc.: one line

    atomic_write(path, write)


def _os_error_code(exc: Exception) -> int | None:
    """The errno inside a safetensors error ("... (os error 28)"), if there is one."""
    found = re.search(r"os error (\d+)", str(exc))
    return int(found.group(1)) if found else None


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the JSON header of a safetensors file the store wrote."""
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


def split_tensors(
    tensors: dict[str, torch.Tensor],
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """``layer.*`` tensors in layer order, and ``stat.*`` tensors by statistic name."""
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
        tensors, meta = read_tensors(path)
        if meta.get("format") != FORMAT or meta.get("digest") != key.digest:
            raise ValueError("its key does not match")
        layers, stats = split_tensors(tensors)
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


# --------------------------------------------------------------------------- checkpoints


def load_chunks(folder: Path, digest: str) -> tuple[list[dict[str, torch.Tensor]], int]:
    """The checkpointed batches in order, and the index the next batch starts at."""
    chunks: list[dict[str, torch.Tensor]] = []
    done = 0
    if not folder.is_dir():
        return chunks, 0
    for file in sorted(folder.glob("chunk-*.safetensors")):
        try:
            tensors, meta = read_tensors(file)
        except Exception:  # a torn chunk: everything from it on is recomputed
            break
        if meta.get("digest") != digest or meta.get("start") != done:
            break
        chunks.append(tensors)
        done = meta["stop"]
    return chunks, done


def write_chunk(
    folder: Path, tensors: dict[str, torch.Tensor], digest: str, start: int, stop: int
) -> None:
    """Checkpoint the rows ``start:stop`` of the feature file with key ``digest``."""
    meta = {"format": FORMAT, "digest": digest, "start": start, "stop": stop}
    save_tensors(tensors, meta, folder / f"chunk-{start:09d}.safetensors")


# --------------------------------------------------------------------------- pair scores


@dataclass(frozen=True)
class ScoreCache:
    """Pair scores already computed, as JSON text, by everything that determines them.

    Feature files are content-addressed, so their names in ``parts`` identify model x data x
    settings; adding one model to a run computes only its pairs.
    """

    root: Path

    @classmethod
    def at(cls, cache_dir: str | os.PathLike[str] | None = None) -> ScoreCache:
        return cls(cache_root(cache_dir) / "scores")

    def path(self, parts: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
        return self.root / f"{digest}.json"

    def get(self, parts: dict[str, Any]) -> str | None:
        path = self.path(parts)
        return path.read_text() if path.exists() else None

    def put(self, parts: dict[str, Any], text: str) -> None:
        atomic_write_text(self.path(parts), text)


# --------------------------------------------------------------------------- cache listing


@dataclass
class CacheEntry:
    """A feature file (complete), its checkpointed batches (partial) or what a killed write
    left (temporary: a hidden ``.*.tmp`` file)."""

    path: Path
    model_id: str
    dataset_id: str
    num_samples: int | None
    num_layers: int | None
    size_bytes: int
    state: str = "complete"
    key: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    @property
    def lock(self) -> Path:
        """The lock of the feature key this entry belongs to."""
        digest = self.path.name.lstrip(".").split(".")[0]
        return self.path.parent / f"{digest}.lock"


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


def _complete_entry(file: Path) -> CacheEntry:
    try:
        meta = read_header(file)
    except Exception as exc:  # listed all the same: it is there and takes space
        return CacheEntry(
            file,
            file.parent.name,
            file.parent.parent.name,
            None,
            None,
            _size(file),
            error=f"{type(exc).__name__}: {exc}",
        )
    key = meta.get("key", {})
    return CacheEntry(
        file,
        key.get("model_id", "?"),
        key.get("dataset_id", "?"),
        meta.get("num_samples"),
        meta.get("num_layers"),
        _size(file),
        key=key,
    )


def _iter_cache(root: Path) -> Iterator[CacheEntry]:
    base = root / "features"
    if not base.is_dir():
        return
    for file in sorted(base.glob("*/*/*.safetensors")):
        yield _complete_entry(file)
    for folder in sorted(base.glob("*/*/*.partial")):
        yield CacheEntry(
            folder,
            folder.parent.name,
            folder.parent.parent.name,
            None,
            None,
            _size(folder),
            state="partial",
        )
    # a temporary file beside the features (a torn write of a whole feature file) or inside
    # a .partial folder is listed with that folder, so only the ones beside it show here
    for tmp in sorted(base.glob("*/*/.*.tmp")):
        yield CacheEntry(
            tmp,
            tmp.parent.name,
            tmp.parent.parent.name,
            None,
            None,
            _size(tmp),
            state="temporary",
        )


def list_cache(
    cache_dir: str | os.PathLike[str] | None = None,
    model: str | None = None,
    dataset: str | None = None,
) -> list[CacheEntry]:
    """The feature files, unfinished extractions and torn temporary files, optionally filtered."""
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
) -> tuple[list[CacheEntry], list[CacheEntry]]:
    """Delete the matching entries; returns (removed, in use).

    Each key's entries are removed under that key's lock, so a running extraction keeps its
    lock, its checkpoints and its temporary files: those entries are left and reported in use.
    """
    from filelock import FileLock, Timeout

    removed: list[CacheEntry] = []
    in_use: list[CacheEntry] = []
    by_lock: dict[Path, list[CacheEntry]] = {}
    for e in list_cache(cache_dir, model, dataset):
        by_lock.setdefault(e.lock, []).append(e)
    for lock_file, entries in by_lock.items():
        lock = FileLock(str(lock_file), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            in_use.extend(entries)
            continue
        try:
            for e in entries:
                if e.path.is_dir():
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    e.path.unlink(missing_ok=True)
                removed.append(e)
            # the lock file goes only while we hold it, never from under a running extraction
            lock_file.unlink(missing_ok=True)
        finally:
            lock.release()
    # drop folders left empty
    base = cache_root(cache_dir) / "features"
    for folder in sorted(base.glob("*/*"), reverse=True) + sorted(base.glob("*"), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed, in_use
