"""The run history: every published run of each (dataset, N), and what changed between the
latest run and the one before, by the comparison ``prh-bench check`` makes
(``prh_bench.check.compare_runs``): scores that moved beyond the tolerance, scores and models
added or removed, features that drifted."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..check import Change, CheckError, CheckReport, compare_runs
from ..results import RunResult
from .model import Dataset


@dataclass
class History:
    dataset: Dataset
    runs: list[RunResult]  # newest first
    latest: RunResult
    previous: RunResult | None
    report: CheckReport | None = None
    refused: str = ""  # why the two runs cannot be compared (check's error, one line)
    added: list[str] = field(default_factory=list)  # models in the latest run only
    removed: list[str] = field(default_factory=list)  # models in the previous run only

    @property
    def compared(self) -> int:
        """How many scores both runs have."""
        ok = ("ok", "changed")
        return sum(c.status in ok for c in self.report.changes) if self.report else 0

    @property
    def moved(self) -> list[Change]:
        return [c for c in self.report.changes if c.status == "changed"] if self.report else []

    @property
    def new_scores(self) -> list[Change]:
        return [c for c in self.report.changes if c.status == "new"] if self.report else []

    @property
    def missing_scores(self) -> list[Change]:
        return [c for c in self.report.changes if c.status == "missing"] if self.report else []


def make_history(ds: Dataset, tolerance: float) -> History:
    runs = ds.runs  # oldest first
    latest = runs[-1]
    previous = runs[-2] if len(runs) > 1 else None
    history = History(ds, list(reversed(runs)), latest, previous)
    if previous is None:
        return history
    before, now = {m.id for m in previous.models}, {m.id for m in latest.models}
    history.added, history.removed = sorted(now - before), sorted(before - now)
    try:
        history.report = compare_runs(previous, latest, tolerance)
    except CheckError as exc:
        history.refused = str(exc)
    return history
