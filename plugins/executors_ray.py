"""Ray: one remote task per extraction unit, with ``num_gpus`` per task.

Starts a local Ray instance (``address=None``) or joins a cluster (``address=auto`` or
``ray://host:10001``); a Ray instance this executor started is shut down when it is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prh_bench import hookimpl
from prh_bench.executors import Executor, ExecutorError, ExtractionUnit, UnitResult
from prh_bench.worker import run_unit

INSTALL = "pip install 'prh-bench[distributed]' (or pip install ray)"


class RayExecutor(Executor):
    name = "ray"
    summary = "one Ray task per unit, on a local Ray instance or an existing cluster"
    options = {
        "address": None,  # None: start a local instance; "auto" or "ray://host:port": join one
        "local_num_cpus": None,  # CPUs of a local instance (None: all)
        "num_gpus": None,  # per task; None: 1 when the cluster has GPUs and the device is not cpu
        "num_cpus": 1,  # per task
        "max_retries": 3,  # a task whose worker dies is retried (it resumes from the store)
    }
    option_types = {
        "address": str,
        "local_num_cpus": int,
        "num_gpus": (int, float),
        "num_cpus": (int, float),
        "max_retries": int,
    }

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
            import ray
        except ImportError:
            raise ExecutorError(f"the ray executor needs Ray: {INSTALL}") from None
        started = not ray.is_initialized()
        if started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.config["address"] is None:
                kwargs["num_cpus"] = self.config["local_num_cpus"]
            else:
                kwargs["address"] = self.config["address"]
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ExecutorError(f"cannot start or join Ray: {exc}".splitlines()[0]) from None
        try:
            num_gpus = self.config["num_gpus"]
            if num_gpus is None:
                has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
                num_gpus = 1 if has_gpu and all(u.device != "cpu" for u in units) else 0
            task = ray.remote(
                num_gpus=num_gpus,
                num_cpus=self.config["num_cpus"],
                max_retries=self.config["max_retries"],
            )(run_unit)
            refs = [task.remote(unit) for unit in units]
            results = []
            for unit, ref in zip(units, refs, strict=True):
                try:
                    results.append(ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - the task died outside run_unit
                    why = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
                    results.append(UnitResult.lost(unit, f"its Ray task failed: {why}"))
            return results
        finally:
            if started:
                ray.shutdown()


@hookimpl
def register_executors(register: Any) -> None:
    register(RayExecutor())
