"""Regression check: compare a new run against a baseline and fail on changed or missing scores.

A new model release or a new version of a dependency shows up here before it reaches the
leaderboard. Runs on different data (dataset id or content hash) are refused outright.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .errors import PrhBenchError
from .results import RunResult
from .storage import atomic_write_text


class CheckError(PrhBenchError):
    """Two runs that cannot be compared (different dataset, or nothing in common)."""


@dataclass(frozen=True)
class Change:
    model_a: str
    model_b: str
    metric: str
    baseline: float | None
    new: float | None
    status: str  # "ok", "changed", "missing", "new"

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.new is None:
            return None
        return self.new - self.baseline


@dataclass
class CheckReport:
    changes: list[Change]
    tolerance: float
    baseline_run: str
    new_run: str

    @property
    def failed(self) -> list[Change]:
        return [c for c in self.changes if c.status in ("changed", "missing")]

    @property
    def ok(self) -> bool:
        return not self.failed

    def rows(self, only_problems: bool = False) -> list[dict]:
        return [
            {
                "model_a": c.model_a,
                "model_b": c.model_b,
                "metric": c.metric,
                "baseline": c.baseline,
                "new": c.new,
                "delta": None if c.delta is None else round(c.delta, 6),
                "status": c.status,
            }
            for c in self.changes
            if not only_problems or c.status != "ok"
        ]

    def markdown(self) -> str:
        from tabulate import tabulate

        verdict = "passed" if self.ok else f"FAILED ({len(self.failed)} problems)"
        lines = [
            f"## prh-bench check: {verdict}",
            "",
            f"Baseline `{self.baseline_run}`, new run `{self.new_run}`, "
            f"tolerance {self.tolerance}.",
            "",
        ]
        shown = self.rows(only_problems=True)
        if shown:
            lines.append(tabulate(shown, headers="keys", tablefmt="github"))
        else:
            lines.append(f"All {len(self.changes)} scores are within the tolerance.")
        return "\n".join(lines) + "\n"

    def write_markdown(self, path: str | os.PathLike[str]) -> None:
        """The markdown report (for a CI comment), written atomically."""
        atomic_write_text(path, self.markdown())


def _key(s) -> tuple[str, str, str, str]:
    return (s.model_a, s.model_b, s.metric, json.dumps(s.params, sort_keys=True))


def compare_runs(baseline: RunResult, new: RunResult, tolerance: float = 0.01) -> CheckReport:
    if tolerance < 0:
        raise CheckError(f"--tolerance must be >= 0, got {tolerance}")
    if (baseline.dataset.id, baseline.dataset.content_hash) != (
        new.dataset.id,
        new.dataset.content_hash,
    ):
        raise CheckError(
            f"the baseline is on dataset {baseline.dataset.id} ({baseline.dataset.content_hash[:12]})"
            f" but the new run on {new.dataset.id} ({new.dataset.content_hash[:12]}); "
            "compare runs on the same data"
        )
    old_scores = {_key(s): s for s in baseline.scores}
    new_scores = {_key(s): s for s in new.scores}
    old_metrics = {k[2:] for k in old_scores}
    if not old_metrics & {k[2:] for k in new_scores}:
        raise CheckError(
            "the runs share no metric with the same parameters (baseline: "
            f"{sorted(m for m, _ in old_metrics)}); rerun with the baseline's --metric/--topk"
        )
    changes = []
    for key, old in sorted(old_scores.items()):
        cur = new_scores.get(key)
        if cur is None:
            changes.append(Change(*key[:3], old.value, None, "missing"))
            continue
        status = "ok" if abs(cur.value - old.value) <= tolerance else "changed"
        changes.append(Change(*key[:3], old.value, cur.value, status))
    for key, cur in sorted(new_scores.items()):
        if key not in old_scores:
            changes.append(Change(*key[:3], None, cur.value, "new"))
    return CheckReport(changes, tolerance, baseline.run_id, new.run_id)
