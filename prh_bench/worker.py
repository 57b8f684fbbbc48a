"""The worker: what an executor runs for one extraction unit, wherever it runs.

``run_unit(unit)`` gives the process the main process's plugins and settings
(``prepare_worker``), extracts the unit's features into the shared feature store and reports a
``UnitResult``; it never raises. The main process builds units with ``forwarded_env()`` and
``in_process_plugins()`` and reads each finished unit back with ``load_unit_features``.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import types
from pathlib import Path
from typing import Any

from .datasets import Dataset
from .errors import DatasetError, PrhBenchError
from .executors import ExecutorError, ExtractionUnit, UnitResult
from .extract import extract_features
from .plugins import get_plugin_manager, loaded_plugins, register_plugin
from .registry import get_dataset, get_model
from .store import FeatureKey, load_cached

#: environment variables a worker needs to see the same plugins and settings as the main process
FORWARDED_ENV = (
    "PRH_BENCH_LOAD_PLUGINS",
    "PRH_BENCH_CHECKPOINT_SECONDS",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, PrhBenchError) else f"{type(exc).__name__}: {exc}"


def prepare_worker(unit: ExtractionUnit) -> None:
    """Give a worker process the main process's plugins and PRH_BENCH settings."""
    for key, value in unit.env:
        os.environ[key] = value
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
        fs = extract_features(
            get_model(unit.model_id).for_precision(unit.precision),
            unit_dataset(unit),
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


def unit_dataset(unit: ExtractionUnit) -> Dataset:
    """The unit's dataset as this worker sees it, refused unless it is the data planned on."""
    dataset = get_dataset(unit.dataset)
    if dataset.content_hash != unit.dataset_hash:
        raise DatasetError(
            f"dataset '{unit.dataset}' on worker {socket.gethostname()} has content hash "
            f"{dataset.content_hash[:16]}, but the run was planned on {unit.dataset_hash[:16]}; "
            "every worker must see the same copy of the data"
        )
    return dataset


def load_unit_features(result: UnitResult) -> Any:
    """The FeatureSet a finished unit wrote, read back from the store in this process."""
    if result.features is not None:
        return result.features
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
