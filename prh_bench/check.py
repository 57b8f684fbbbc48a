"""Regression check: compare a new run against a baseline and fail on moved features, changed
or missing scores.

A new model release or a new version of a dependency shows up here before it reaches the
leaderboard. Runs on different data (dataset id, scored samples' hash or n) are refused
outright. Features are compared first, by each model's fingerprint (the kNN lists of a fixed
subset of samples, per layer): a changed preprocessing fails even when the best score
happens to stay within the tolerance.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from .align import fingerprint_drift
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


@dataclass(frozen=True)
class Drift:
    """A model whose features moved between the runs: the layer that moved most, and how much."""

    model: str
    layer: int | None  # None: the layers cannot be compared (their number changed)
    moved: float  # the fraction of the fingerprint's neighbours that changed (0..1)
    detail: str

    def line(self) -> str:
        where = f"layer {self.layer}" if self.layer is not None else "its layers"
        return f"features of {self.model} moved ({where}: {self.detail})"


@dataclass
class CheckReport:
    changes: list[Change]
    tolerance: float
    baseline_run: str
    new_run: str
    drifts: list[Drift] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each, never a failure

    @property
    def failed(self) -> list[Change]:
        return [c for c in self.changes if c.status in ("changed", "missing")]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.drifts

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

        problems = len(self.failed) + len(self.drifts)
        verdict = "passed" if self.ok else f"FAILED ({problems} problems)"
        lines = [
            f"## prh-bench check: {verdict}",
            "",
            f"Baseline `{self.baseline_run}`, new run `{self.new_run}`, "
            f"tolerance {self.tolerance}.",
            "",
            *(f"- {d.line()}" for d in self.drifts),
            *(f"- note: {n}" for n in self.notes),
            *([""] if self.drifts or self.notes else []),
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


#: the fraction of fingerprint neighbours that may change before a model counts as moved:
#: rounding on another device swaps a near-tie now and then; a changed preprocessing moves many
DRIFT_TOLERANCE = 0.05


def _data(run: RunResult) -> str:
    d = run.dataset
    return f"dataset {d.id} (n={d.n}, {d.content_hash[:12]})"


def compare_runs(
    baseline: RunResult,
    new: RunResult,
    tolerance: float = 0.01,
    drift_tolerance: float = DRIFT_TOLERANCE,
) -> CheckReport:
    """Fingerprints first (``Drift``), then every score; refuses runs on different data."""
    if tolerance < 0:
        raise CheckError(f"--tolerance must be >= 0, got {tolerance}")
    old_data, new_data = baseline.dataset, new.dataset
    if (old_data.id, old_data.content_hash, old_data.n) != (
        new_data.id,
        new_data.content_hash,
        new_data.n,
    ):
        raise CheckError(
            f"the baseline is on {_data(baseline)} but the new run on {_data(new)}; "
            "compare runs on the same data (same dataset and --limit)"
        )
    drifts, notes = compare_fingerprints(baseline, new, drift_tolerance)
    if baseline.precision != new.precision:
        notes.append(
            f"the baseline's precision profile is {baseline.precision or 'none (version 1)'}, "
            f"the new run's {new.precision or 'none (version 1)'}: scores may differ by it"
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
    return CheckReport(changes, tolerance, baseline.run_id, new.run_id, drifts, notes)


def compare_fingerprints(
    baseline: RunResult, new: RunResult, drift_tolerance: float = DRIFT_TOLERANCE
) -> tuple[list[Drift], list[str]]:
    """Models in both runs whose features moved more than ``drift_tolerance``, and notes."""
    new_models = {m.id: m for m in new.models}
    drifts: list[Drift] = []
    unavailable = []
    for old in baseline.models:
        cur = new_models.get(old.id)
        if cur is None:
            continue
        if old.fingerprint is None or cur.fingerprint is None:
            unavailable.append(old.id)
            continue
        a, b = old.fingerprint.model_dump(), cur.fingerprint.model_dump()
        moved = fingerprint_drift(a, b)
        if moved is None:
            detail = f"{len(a['layers'])} layers -> {len(b['layers'])}, or another subset"
            drifts.append(Drift(old.id, None, 1.0, detail))
            continue
        layer = max(range(len(moved)), key=moved.__getitem__)
        if moved[layer] > drift_tolerance:
            drifts.append(
                Drift(old.id, layer, moved[layer], f"{moved[layer]:.0%} of kNN neighbours changed")
            )
    notes = []
    if unavailable:
        notes.append(
            f"feature fingerprints are unavailable for {', '.join(unavailable)} (a version-1 "
            "result file has none): their features were not compared, only their scores"
        )
    return drifts, notes
