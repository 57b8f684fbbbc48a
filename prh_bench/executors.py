"""Executors: who runs the extraction units (a local pool, Slurm through submitit, Ray).

A run is planned as one ``ExtractionUnit`` per model: a small picklable record (model id,
dataset spec, settings) with a deterministic ``unit_id``. An executor runs ``run_unit`` on each,
wherever it likes; every worker loads the plugins the same way (entry points, plus the
in-process plugins the unit names) and writes into the shared feature store. The main
process then loads every feature set from the store and scores the pairs.

Executors come from plugins through the ``register_executors`` hook; ``get_executor(name,
options)`` finds one (unknown names fail with "did you mean").
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import socket
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import PluginError, PrhBenchError

#: environment variables a worker needs to see the same plugins and settings as the main process
FORWARDED_ENV = (
    "PRH_BENCH_LOAD_PLUGINS",
    "PRH_BENCH_CHECKPOINT_SECONDS",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)


class ExecutorError(PrhBenchError):
    """An executor that cannot run here, a bad executor option, or a unit lost by a worker."""


@dataclass(frozen=True)
class ExtractionUnit:
    """One model's features on one dataset: what a worker computes and writes to the store."""

    model_id: str
    dataset: str  # the dataset spec the worker opens (an id or local:PATH)
    dataset_hash: str
    cache_dir: str  # absolute: every worker writes the same store
    device: str | None = None
    batch_size: int | None = None
    limit: int | None = None
    # (registered name, module, sys.path root) of in-process plugins the worker must load too
    plugins: tuple[tuple[str, str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    @property
    def unit_id(self) -> str:
        """A hash of what the unit computes, not of where it runs: the same on every executor
        and every shard (the device is left out; the feature key records the dtype it chose)."""
        spec = {
            "model": self.model_id,
            "dataset": self.dataset,
            "dataset_hash": self.dataset_hash,
            "batch_size": self.batch_size,
            "limit": self.limit,
        }
        blob = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class UnitResult:
    """What a worker reports back: where its features are, or why it failed."""

    unit_id: str
    model_id: str
    ok: bool
    path: str | None = None
    key: dict[str, str] | None = None
    from_cache: bool = False
    error: str | None = None
    error_type: str | None = None  # "module.Class" of the exception the worker met
    worker: str = ""
    # in-process only (never sent between processes): the features and the exception itself
    features: Any = field(default=None, repr=False, compare=False)
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    def raise_error(self) -> None:
        """Raise the worker's error in this process: the same one-line user error where it is a
        prh-bench error, else an ExecutorError that names the unit."""
        if self.exception is not None:
            raise self.exception
        module, _, name = (self.error_type or "").rpartition(".")
        cls = (
            getattr(sys.modules.get(module), name, None) if module.startswith("prh_bench") else None
        )
        if isinstance(cls, type) and issubclass(cls, PrhBenchError):
            try:
                exc = cls(self.error)
            except TypeError:  # an error class with another constructor
                exc = ExecutorError(self.error or "")
            raise exc
        raise ExecutorError(
            f"unit {self.unit_id} ({self.model_id}) failed on {self.worker or 'a worker'}: "
            f"{self.error}"
        )

    @classmethod
    def lost(cls, unit: ExtractionUnit, why: str) -> UnitResult:
        """A unit whose worker died or whose job failed outside ``run_unit``."""
        return cls(unit.unit_id, unit.model_id, False, error=why, error_type="executor")


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PrhBenchError) else f"{type(exc).__name__}: {exc}"


def prepare_worker(unit: ExtractionUnit) -> None:
    """Give a worker process the main process's plugins and PRH_BENCH settings."""
    for key, value in unit.env:
        os.environ[key] = value
    from .plugins import get_plugin_manager, register_plugin

    pm = get_plugin_manager()
    for name, module, root in unit.plugins:
        if pm.has_plugin(name):
            continue
        if root and root not in sys.path:
            sys.path.append(root)
        register_plugin(importlib.import_module(module), name=name)


def run_unit(
    unit: ExtractionUnit, *, in_process: bool = False, progress: bool = False
) -> UnitResult:
    """Extract one unit's features into the store; never raises (failures are reported).

    Module level, so every executor (process pool, submitit, Ray) pickles it by reference.
    """
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        if not in_process:
            prepare_worker(unit)
        from .extract import extract_features

        fs = extract_features(
            unit.model_id,
            unit.dataset,
            cache_dir=unit.cache_dir,
            device=unit.device,
            batch_size=unit.batch_size,
            limit=unit.limit,
            progress=progress,
        )
    except Exception as exc:  # noqa: BLE001 - reported; the main process decides
        return UnitResult(
            unit.unit_id,
            unit.model_id,
            False,
            error=_reason(exc),
            error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            worker=worker,
            exception=exc if in_process else None,
        )
    return UnitResult(
        unit.unit_id,
        unit.model_id,
        True,
        path=str(fs.path),
        key=dict(fs.meta["key"]),
        from_cache=fs.from_cache,
        worker=worker,
        features=fs if in_process else None,
    )


def load_unit_features(result: UnitResult) -> Any:
    """The FeatureSet a finished unit wrote, read back from the store in this process."""
    if result.features is not None:
        return result.features
    from .store import FeatureKey, load_cached

    fs = None
    if result.path and result.key:
        fs = load_cached(Path(result.path), FeatureKey(**result.key))
    if fs is None:
        raise ExecutorError(
            f"unit {result.unit_id} ({result.model_id}) finished on {result.worker}, but its "
            f"feature file {result.path} is missing or unreadable here; the feature store "
            "(--cache-dir) must be on a file system every worker shares"
        )
    fs.from_cache = result.from_cache
    return fs


def in_process_plugins() -> tuple[tuple[str, str, str], ...]:
    """Plugins registered in this process (not through entry points) that a worker can import."""
    from .plugins import get_plugin_manager, loaded_plugins

    pm = get_plugin_manager()
    out = []
    for info in loaded_plugins():
        plugin = pm.get_plugin(info.name)
        file = getattr(plugin, "__file__", None)
        if info.distribution is not None or not isinstance(plugin, types.ModuleType) or not file:
            continue
        path = Path(file).resolve()
        depth = plugin.__name__.count(".") + (path.name == "__init__.py")
        out.append((info.name, plugin.__name__, str(path.parents[depth])))
    return tuple(out)


def forwarded_env() -> tuple[tuple[str, str], ...]:
    return tuple((k, os.environ[k]) for k in FORWARDED_ENV if k in os.environ)


# --------------------------------------------------------------------------- executors


class Executor:
    """Runs extraction units. Subclasses set ``name``, ``summary``, ``options`` (name ->
    default) and implement ``run``; ``with_options`` makes a configured copy."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    #: option-name prefixes passed through unchecked (e.g. "slurm_" to submitit)
    passthrough: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        unknown = [
            k for k in options if k not in self.options and not k.startswith(self.passthrough)
        ]
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            extra = f" (and any {'/'.join(self.passthrough)}* option)" if self.passthrough else ""
            raise ExecutorError(
                f"executor '{self.name}' has no option '{unknown[0]}'; its options: {known}{extra}"
            )
        self.config: dict[str, Any] = {**self.options, **options}

    def with_options(self, **options: Any) -> Executor:
        return type(self)(**{**self.config, **options})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    def run(
        self,
        units: Sequence[ExtractionUnit],
        *,
        progress: bool = False,
        stop_on_error: bool = False,
    ) -> list[UnitResult]:
        """One result per unit, in order (an in-process executor may stop after a failure when
        ``stop_on_error``: then the list ends with that failure)."""
        raise NotImplementedError


def validate_executor(obj: Any) -> None:
    if not isinstance(getattr(obj, "name", None), str) or not callable(getattr(obj, "run", None)):
        raise PluginError(
            f"register_executors expects Executor instances (a 'name' and a 'run' method), "
            f"got {obj!r}"
        )


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON where it parses (60, true, null), else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ExecutorError(f"executor option '{text}' must be KEY=VALUE, e.g. timeout_min=60")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def get_executor(name: str, options: dict[str, Any] | None = None) -> Executor:
    """The registered executor ``name`` configured with ``options``."""
    from .registry import get_registry

    base = get_registry("executor").get(name)
    return base.with_options(**(options or {}))


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> (i, N) with 0 <= i < N."""
    index, sep, count = str(text).partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise ExecutorError(f"--shard must be i/N with 0 <= i < N (e.g. 0/4 ... 3/4), got '{text}'")
    return i, n
