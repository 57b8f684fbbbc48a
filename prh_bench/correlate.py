"""Alignment versus downstream scores: Pearson and Spearman with bootstrap 95% intervals and a
permutation p-value (scipy.stats), across the language models of a run.

The paper's figure: each language model's alignment to one vision model (DINOv2 there)
against its downstream quality (bits-per-byte, HellaSwag, GSM8K, ...).
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PrhBenchError
from .inputfile import read_json
from .results import (
    CorrelationRecord,
    Downstream,
    ModelRecord,
    RunResult,
    read_downstream_csv,
    save_result,
    write_downstream_csv,
)


class CorrelationError(PrhBenchError):
    """Not enough data to correlate, or an lm-evaluation-harness file that cannot be used."""


def read_lm_eval_json(
    path: str | Path, model: str | None = None
) -> tuple[str, dict[str, Downstream], list[str]]:
    """Scores from an lm-evaluation-harness results JSON: (model id, {task/metric: value},
    the task/metric names it reports without a finite number, which are left out)."""
    path = Path(path)
    data = read_json(path, CorrelationError, "lm-evaluation-harness JSON")
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise CorrelationError(
            f"{path}: no 'results' object; is this lm-evaluation-harness output?"
        )
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    model_args = str(config.get("model_args") or "")
    found = (
        model
        or data.get("model_name")
        or next(
            (a.split("=", 1)[1] for a in model_args.split(",") if a.startswith("pretrained=")), None
        )
    )
    if not found or not isinstance(found, str):
        raise CorrelationError(f"{path}: cannot tell which model it scores; pass --model")
    scores: dict[str, Downstream] = {}
    undefined: list[str] = []
    for task, metrics in data["results"].items():
        if not isinstance(metrics, dict):
            continue
        for key, value in metrics.items():
            name, _, _filter = key.partition(",")
            if name.endswith("_stderr") or isinstance(value, bool):
                continue
            if not isinstance(value, (int, float)):
                continue  # "N/A" and other text: not a score
            if not math.isfinite(value):
                undefined.append(f"{task}/{name}")
                continue
            scores[f"{task}/{name}"] = Downstream(
                value=float(value), source=f"lm-eval: {path.name}"
            )
    return found, scores, undefined


def _stat(kind: str):
    from scipy import stats

    def pearson(x, y):
        return stats.pearsonr(x, y).statistic

    def spearman(x, y):
        return stats.spearmanr(x, y).statistic

    return pearson if kind == "pearson" else spearman


def correlation(
    x: list[float], y: list[float], seed: int = 0, resamples: int = 2000
) -> dict[str, Any]:
    """Pearson and Spearman with bootstrap 95% CIs and a two-sided permutation p (Pearson)."""
    import numpy as np
    from scipy import stats

    x_arr, y_arr = _scaled(np.asarray(x, float)), _scaled(np.asarray(y, float))
    out: dict[str, Any] = {
        "pearson": None,
        "pearson_ci": None,
        "spearman": None,
        "spearman_ci": None,
        "p_value": None,
    }
    if len(x_arr) < 3 or np.ptp(x_arr) == 0 or np.ptp(y_arr) == 0:
        return out  # undefined: too few points or a constant variable
    for kind in ("pearson", "spearman"):
        fn = _stat(kind)
        out[kind] = float(fn(x_arr, y_arr))
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore")  # resamples that repeat one point are degenerate
            boot = stats.bootstrap(
                (x_arr, y_arr),
                fn,
                paired=True,
                vectorized=False,
                n_resamples=resamples,
                method="percentile",
                random_state=np.random.default_rng(seed),
            )
        # percentile interval over the resamples where the statistic is defined
        dist = np.asarray(boot.bootstrap_distribution, float)
        if np.isfinite(dist).sum() >= 0.5 * len(dist):
            low, high = np.nanpercentile(dist, [2.5, 97.5])
            out[f"{kind}_ci"] = (float(low), float(high))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        perm = stats.permutation_test(
            (x_arr, y_arr),
            _stat("pearson"),
            permutation_type="pairings",
            n_resamples=resamples,
            random_state=np.random.default_rng(seed),
        )
    out["p_value"] = float(perm.pvalue)
    return _undefined_as_none(out)


def _scaled(values: Any) -> Any:
    """``values`` times a power of two (exact) that brings the largest to about 1: Pearson's r
    is scale-free, and huge scores would overflow its sums."""
    import numpy as np

    largest = float(np.max(np.abs(values))) if len(values) else 0.0
    if largest == 0.0 or not math.isfinite(largest):
        return values
    return np.ldexp(values, -math.frexp(largest)[1])


def _undefined_as_none(out: dict[str, Any]) -> dict[str, Any]:
    """A statistic that came out NaN is undefined (None), and so are its interval and, for
    Pearson, the permutation p: never a number for an undefined correlation."""
    for kind in ("pearson", "spearman"):
        if out[kind] is not None and not math.isfinite(out[kind]):
            out[kind] = None
        ci = out[f"{kind}_ci"]
        if out[kind] is None or (ci is not None and not all(map(math.isfinite, ci))):
            out[f"{kind}_ci"] = None
    if out["pearson"] is None or (out["p_value"] is not None and not 0 <= out["p_value"] <= 1):
        out["p_value"] = None
    return out


CONTROL_TAGS = {"random-init", "control"}


def is_control(model: ModelRecord) -> bool:
    """A random-init (or other) control: a floor to compare with, never a reference."""
    return bool(CONTROL_TAGS & set(model.tags))


def reference_matches(models: Iterable[ModelRecord], pattern: str) -> list[ModelRecord]:
    """The vision models ``pattern`` names, the one rule for the reference vision model: an
    exact id names any vision model (a control too); otherwise the glob matches trained ones.
    Where several match, the site ranks against the largest, and ``correlate`` asks for one."""
    vision = [m for m in models if m.modality == "vision"]
    exact = [m for m in vision if m.id == pattern]
    return exact or [m for m in vision if not is_control(m) and fnmatch.fnmatchcase(m.id, pattern)]


def largest(models: Iterable[ModelRecord]) -> ModelRecord | None:
    """The model with the most parameters (ties: the last id), or None."""
    return max(models, key=lambda m: (m.parameters or 0, m.id), default=None)


def downstream_scores(model: ModelRecord) -> dict[str, float]:
    """A model's finite downstream scores by name, its measured bpb included."""
    values = {name: d.value for name, d in model.downstream.items()}
    if model.bpb is not None:
        values["bpb"] = model.bpb
    return {k: v for k, v in values.items() if math.isfinite(v)}


def correlate_alignment(
    alignment: dict[str, float],
    downstream: dict[str, dict[str, float]],
    vision_model: str,
    metric: str,
    seed: int = 0,
    resamples: int = 2000,
) -> list[CorrelationRecord]:
    """Correlate language models' alignment (``{model: value}``) with every downstream score
    (``{model: {name: value}}``) known for at least three of them, by name."""
    names = sorted({name for m in alignment for name in downstream.get(m, {})})
    records = []
    for name in names:
        models = sorted(m for m in alignment if name in downstream.get(m, {}))
        if len(models) < 3:
            continue
        stats = correlation(
            [alignment[m] for m in models],
            [downstream[m][name] for m in models],
            seed,
            resamples,
        )
        records.append(
            CorrelationRecord(
                vision_model=vision_model,
                metric=metric,
                downstream=name,
                n_models=len(models),
                models=models,
                **stats,
            )
        )
    return records


def correlate(
    result: RunResult,
    vision_model: str,
    metric: str = "mutual_knn",
    downstream: dict[str, dict[str, Downstream]] | None = None,
    seed: int = 0,
) -> list[CorrelationRecord]:
    """Correlate each language model's alignment to ``vision_model`` (an id or a glob naming
    one model) with every downstream metric known for at least three of them (bpb included)."""
    matches = reference_matches(result.models, vision_model)
    if len(matches) != 1:
        listed = ", ".join(m.id for m in result.models if m.modality == "vision") or "none"
        raise CorrelationError(
            f"--vision {vision_model!r} matches {len(matches)} vision models of run "
            f"{result.run_id} (vision models there: {listed}); name exactly one"
        )
    vision = matches[0].id
    language = {m.id: m for m in result.models if m.modality == "language"}
    alignment: dict[str, float] = {}
    for s in result.scores:
        if s.metric != metric:
            continue
        if s.model_b == vision and s.model_a in language:
            alignment[s.model_a] = s.value
        elif s.model_a == vision and s.model_b in language:
            alignment[s.model_b] = s.value
    if len(alignment) < 3:
        raise CorrelationError(
            f"only {len(alignment)} language models have a {metric} score against {vision}; "
            "a correlation needs at least 3"
        )
    table = {}
    for model_id in alignment:
        scores = downstream_scores(language[model_id])
        extra = (downstream or {}).get(model_id, {})
        scores.update({k: d.value for k, d in extra.items() if math.isfinite(d.value)})
        table[model_id] = scores
    return correlate_alignment(alignment, table, vision, metric, seed)


def save_correlations(result: RunResult, path: str | Path, records: list[CorrelationRecord]):
    """Store ``records`` in the result file at ``path``, replacing the ones for the same
    vision model and metric (rewritten atomically, once the new text reads back)."""
    if not records:
        return
    done = {(r.vision_model, r.metric) for r in records}
    kept = [c for c in result.correlations if (c.vision_model, c.metric) not in done]
    result.correlations = kept + records
    save_result(result, path)


def format_interval(ci: tuple[float, float], digits: int = 3) -> str:
    """``[0.401, 0.955]``: the one way a confidence interval is written (table, site, figure)."""
    return f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def format_ci(value: float | None, ci: tuple[float, float] | None, digits: int = 3) -> str:
    """``0.812 [0.401, 0.955]``: a statistic with its 95% interval; ``undefined`` when it is
    (too few points, a constant variable)."""
    if value is None:
        return "undefined"
    return f"{value:.{digits}f}" + (f" {format_interval(ci, digits)}" if ci else "")


def table_rows(records: list[CorrelationRecord]) -> list[dict[str, Any]]:
    """The rows ``prh-bench correlate`` prints, one per downstream metric."""
    return [
        {
            "downstream": r.downstream,
            "models": r.n_models,
            "pearson r [95% CI]": format_ci(r.pearson, r.pearson_ci),
            "spearman rho [95% CI]": format_ci(r.spearman, r.spearman_ci),
            "p (permutation)": "undefined" if r.p_value is None else f"{r.p_value:.3f}",
        }
        for r in records
    ]


@dataclass
class Imported:
    """What ``import_lm_eval`` did: scores written, and those reported without a number."""

    count: int
    undefined: list[str]  # "file: task/metric" left out (NaN or Infinity in the file)


def import_lm_eval(
    files: Iterable[str | Path], output: str | Path, model: str | None = None
) -> Imported:
    """Merge lm-evaluation-harness JSON files into the downstream CSV ``output`` (rows for the
    same model and metric are replaced; a score the file gives as NaN is left out, and its
    old row with it: the new evaluation has no number for it)."""
    table = read_downstream_csv(output) if Path(output).exists() else {}
    imported = Imported(0, [])
    for f in files:
        model_id, scores, undefined = read_lm_eval_json(f, model)
        mine = table.setdefault(model_id, {})
        for name in undefined:
            mine.pop(name, None)
        mine.update(scores)
        imported.count += len(scores)
        imported.undefined += [f"{Path(f).name}: {name}" for name in undefined]
    write_downstream_csv(output, {m: scores for m, scores in table.items() if scores})
    return imported
