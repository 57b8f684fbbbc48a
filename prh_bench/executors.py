"""Executors: who runs the extraction units (a local pool, Slurm through submitit, Ray).

A run is planned as one ``ExtractionUnit`` per model: a small picklable record (model id,
dataset spec, settings) with a deterministic ``unit_id``. An executor runs
``prh_bench.worker.run_unit`` on each, wherever it likes; every worker loads the plugins the
same way (entry points, plus the in-process plugins the unit names) and writes into the shared
feature store. The main process then loads every feature set from the store and scores the
pairs.

Executors come from plugins through the ``register_executors`` hook;
``prh_bench.registry.get_executor(name, options)`` finds one (unknown names fail with "did you
mean").
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import PluginError, PrhBenchError


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
    precision: str = "exact"  # the run's precision profile (models.PRECISIONS)
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
            "precision": self.precision,
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


# --------------------------------------------------------------------------- executors


class Executor:
    """Runs extraction units. Subclasses set ``name``, ``summary``, ``options`` (name ->
    default), ``option_types`` (name -> the type(s) a value other than None must have) and
    implement ``run``; ``with_options`` makes a configured copy."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    #: option-name prefixes passed through unchecked (e.g. "slurm_" to submitit)
    passthrough: ClassVar[tuple[str, ...]] = ()
    #: option name -> the type(s) its value must have (None is always allowed: the default)
    option_types: ClassVar[dict[str, type | tuple[type, ...]]] = {}

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
        for key, value in options.items():
            want = self.option_types.get(key)
            types = want if isinstance(want, tuple) else (want,)
            if want is None or value is None:
                continue
            if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
                names = " or ".join("a number" if t is float else _TYPE_NAMES[t] for t in types)
                raise ExecutorError(
                    f"executor '{self.name}' option '{key}' must be {names}, got {value!r}"
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


_TYPE_NAMES = {int: "an integer", str: "a string", bool: "true or false", float: "a number"}


def validate_executor(obj: Any) -> None:
    if not isinstance(getattr(obj, "name", None), str) or not callable(getattr(obj, "run", None)):
        raise PluginError(
            f"register_executors expects Executor instances (a 'name' and a 'run' method), "
            f"got {obj!r}"
        )


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
