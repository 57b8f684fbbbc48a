"""The default executor: this machine, one worker per visible GPU (pinned with
CUDA_VISIBLE_DEVICES), else one worker in this process. Also adds ``prh-bench executors``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from prh_bench import hookimpl
from prh_bench.executors import Executor, ExtractionUnit, UnitResult
from prh_bench.worker import run_unit


def _pin(queue: Any) -> None:
    """Process-pool initializer: take one GPU id, before anything initialises CUDA."""
    if queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(queue.get())


def visible_gpus() -> list[str]:
    """The GPU ids this process may use (CUDA_VISIBLE_DEVICES, else every device)."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = [x.strip() for x in listed.split(",") if x.strip()]
        return ids[: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


class LocalExecutor(Executor):
    name = "local"
    summary = "this machine: one worker per visible GPU, else one worker in-process"
    options = {"workers": None}  # None: one per visible GPU (or 1); N: N worker processes
    option_types = {"workers": int}

    def plan(self, units: Sequence[ExtractionUnit]) -> tuple[int, list[str]]:
        """(worker count, GPU id per worker or []); one worker means in this process."""
        workers = self.config["workers"]
        # pin only for a bare cuda device: "cuda:1" names its GPU itself
        pinnable = all(u.device in (None, "cuda") for u in units)
        gpus = visible_gpus() if pinnable else []
        if workers is None:
            workers = len(gpus) if len(gpus) > 1 else 1
        workers = max(1, min(int(workers), len(units) or 1))
        return workers, gpus[:workers] if len(gpus) >= workers > 1 else []

    def run(
        self,
        units: Sequence[ExtractionUnit],
        *,
        progress: bool = False,
        stop_on_error: bool = False,
    ) -> list[UnitResult]:
        workers, pins = self.plan(units)
        if workers == 1:
            results = []
            for unit in units:
                results.append(run_unit(unit, in_process=True, progress=progress))
                if stop_on_error and not results[-1].ok:
                    break
            return results
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        queue = None
        if pins:
            queue = ctx.Queue()
            for gpu in pins:
                queue.put(gpu)
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_pin, initargs=(queue,)
        ) as pool:
            futures = [pool.submit(run_unit, unit) for unit in units]
            results = []
            for unit, future in zip(units, futures, strict=True):
                try:
                    results.append(future.result())
                except Exception as exc:  # noqa: BLE001 - a worker process died
                    results.append(UnitResult.lost(unit, f"its worker process died: {exc}"))
            return results


@hookimpl
def register_executors(register: Any) -> None:
    register(LocalExecutor())


@hookimpl
def register_commands(cli: Any) -> None:
    import click

    @cli.command(name="executors")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    def executors(as_json: bool) -> None:
        """List the executors `prh-bench run --executor` can use, and their options."""
        import json

        from tabulate import tabulate

        from prh_bench.registry import get_registry

        rows = [
            {
                "name": e.id,
                "plugin": e.plugin.name,
                "summary": getattr(e.obj, "summary", ""),
                "options": ", ".join(f"{k}={v}" for k, v in getattr(e.obj, "config", {}).items()),
            }
            for e in get_registry("executor")
        ]
        click.echo(json.dumps(rows, indent=2) if as_json else tabulate(rows, headers="keys"))
