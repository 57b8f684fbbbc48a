"""Slurm through submitit: one job array, one array task per extraction unit.

Each task runs ``prh_bench.worker.run_unit`` and writes into the shared feature store. The
task is a ``submitit.helpers.Checkpointable``, so a preempted task is requeued and resumes
from the feature store's checkpointed batches. ``cluster=local`` runs the same array through
submitit's local executor (what the tests do).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prh_bench import hookimpl
from prh_bench.executors import Executor, ExecutorError, ExtractionUnit, UnitResult
from prh_bench.worker import run_unit

INSTALL = "pip install 'prh-bench[distributed]' (or pip install submitit)"


def _task(submitit: Any) -> Any:
    """A requeueable callable; made here so the module imports without submitit."""

    class ExtractionTask(submitit.helpers.Checkpointable):
        def __call__(self, unit: ExtractionUnit) -> UnitResult:
            return run_unit(unit)

    return ExtractionTask()


class SubmititExecutor(Executor):
    name = "slurm"
    summary = "Slurm job array via submitit (cluster=local runs it on this machine)"
    options = {
        "cluster": "slurm",  # slurm | local | debug | None (submitit picks)
        "folder": None,  # logs and pickles; default <cache>/submitit/%j
        "timeout_min": 240,
        "gpus_per_node": None,  # None: 1, or 0 for --device cpu or a local cluster without CUDA
        "cpus_per_task": 8,
        "mem_gb": None,
        "slurm_partition": None,
        "slurm_array_parallelism": 64,
        "max_num_timeout": 3,  # requeues after a timeout (preemption requeues always)
    }
    passthrough = ("slurm_",)
    option_types = {
        "cluster": str,
        "folder": str,
        "timeout_min": int,
        "gpus_per_node": int,
        "cpus_per_task": int,
        "mem_gb": (int, float),
        "slurm_partition": str,
        "slurm_array_parallelism": int,
        "max_num_timeout": int,
    }

    def _gpus(self, units: Sequence[ExtractionUnit]) -> int:
        if self.config["gpus_per_node"] is not None:
            return int(self.config["gpus_per_node"])
        if any(u.device == "cpu" for u in units):
            return 0
        if self.config["cluster"] in ("local", "debug"):
            import torch

            return int(torch.cuda.is_available())
        return 1

    def run(
        self,
        units: Sequence[ExtractionUnit],
        *,
        progress: bool = False,
        stop_on_error: bool = False,
    ) -> list[UnitResult]:
        if not units:
            return []
        try:
            import submitit
        except ImportError:
            raise ExecutorError(f"the slurm executor needs submitit: {INSTALL}") from None
        folder = self.config["folder"] or str(Path(units[0].cache_dir) / "submitit" / "%j")
        try:
            ex = submitit.AutoExecutor(
                folder=folder,
                cluster=self.config["cluster"],
                slurm_max_num_timeout=int(self.config["max_num_timeout"]),
            )
        except (ValueError, RuntimeError, AssertionError) as exc:
            raise ExecutorError(
                f"submitit cannot use cluster '{self.config['cluster']}' here ({exc}); on a "
                "machine without Slurm use --executor-option cluster=local"
            ) from None
        params = {
            k: v
            for k, v in self.config.items()
            if k not in ("cluster", "folder", "gpus_per_node", "max_num_timeout") and v is not None
        }
        params["gpus_per_node"] = self._gpus(units)
        params.setdefault("name", "prh-bench")
        try:
            ex.update_parameters(**params)
        except (NameError, AssertionError) as exc:
            raise ExecutorError(f"bad slurm executor option: {exc}".splitlines()[0]) from None
        jobs = ex.map_array(_task(submitit), list(units))
        results = []
        for unit, job in zip(units, jobs, strict=True):
            try:
                results.append(job.result())
            except Exception as exc:  # noqa: BLE001 - the job died outside run_unit
                why = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
                results.append(UnitResult.lost(unit, f"job {job.job_id} failed: {why}"))
        return results


@hookimpl
def register_executors(register: Any) -> None:
    register(SubmititExecutor())
