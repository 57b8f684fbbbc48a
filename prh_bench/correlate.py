"""Alignment versus downstream scores: Pearson and Spearman with bootstrap 95% intervals and a
permutation p-value (scipy.stats), across the language models of a run.

The paper's figure: each language model's alignment to one vision model (DINOv2 there)
against its downstream quality (bits-per-byte, HellaSwag, GSM8K, ...).
"""

from __future__ import annotations

import csv
import fnmatch
import json
import warnings
from pathlib import Path
from typing import Any

from .errors import PrhBenchError
from .results import CorrelationRecord, Downstream, RunResult


class CorrelationError(PrhBenchError):
    """Not enough data to correlate, or a downstream file that cannot be read."""


def read_downstream_csv(path: str | Path) -> dict[str, dict[str, Downstream]]:
    """``model,metric,value[,source]`` rows -> {model: {metric: Downstream}}."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise CorrelationError(f"{path}: cannot read downstream file: {exc.strerror}") from None
    out: dict[str, dict[str, Downstream]] = {}
    with handle:
        reader = csv.DictReader(handle)
        missing = {"model", "metric", "value"} - set(reader.fieldnames or [])
        if missing:
            raise CorrelationError(
                f"{path}: downstream CSV needs columns model,metric,value[,source]; "
                f"missing {', '.join(sorted(missing))}"
            )
        for line, row in enumerate(reader, start=2):
            try:
                value = float(row["value"])
            except (TypeError, ValueError):
                raise CorrelationError(
                    f"{path}, line {line}: value {row['value']!r} is not a number"
                ) from None
            source = (row.get("source") or "").strip() or str(path)
            out.setdefault(row["model"].strip(), {})[row["metric"].strip()] = Downstream(
                value=value, source=source
            )
    return out


def read_lm_eval_json(
    path: str | Path, model: str | None = None
) -> tuple[str, dict[str, Downstream]]:
    """Scores from an lm-evaluation-harness results JSON: (model id, {task/metric: value})."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CorrelationError(
            f"{path}: not a readable lm-evaluation-harness JSON: {exc}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise CorrelationError(
            f"{path}: no 'results' object; is this lm-evaluation-harness output?"
        )
    config = data.get("config") or {}
    model_args = str(config.get("model_args") or "")
    found = (
        model
        or data.get("model_name")
        or next(
            (a.split("=", 1)[1] for a in model_args.split(",") if a.startswith("pretrained=")), None
        )
    )
    if not found:
        raise CorrelationError(f"{path}: cannot tell which model it scores; pass --model")
    scores: dict[str, Downstream] = {}
    for task, metrics in data["results"].items():
        for key, value in metrics.items():
            name, _, _filter = key.partition(",")
            if name.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            scores[f"{task}/{name}"] = Downstream(
                value=float(value), source=f"lm-eval: {path.name}"
            )
    return found, scores


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

    x_arr, y_arr = np.asarray(x, float), np.asarray(y, float)
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
    return out


def correlate(
    result: RunResult,
    vision_model: str,
    metric: str = "mutual_knn",
    downstream: dict[str, dict[str, Downstream]] | None = None,
    seed: int = 0,
) -> list[CorrelationRecord]:
    """Correlate each language model's alignment to ``vision_model`` (an id or a glob) with
    every downstream metric known for at least three of them (bpb included)."""
    vision_ids = [m.id for m in result.models if m.modality == "vision"]
    matches = [v for v in vision_ids if v == vision_model] or fnmatch.filter(
        vision_ids, vision_model
    )
    if len(matches) != 1:
        listed = ", ".join(vision_ids) or "none"
        raise CorrelationError(
            f"--vision {vision_model!r} matches {len(matches)} vision models of run "
            f"{result.run_id} (vision models there: {listed}); name exactly one"
        )
    vision = matches[0]
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
    table: dict[str, dict[str, float]] = {}
    for model_id in alignment:
        record = language[model_id]
        scores = {name: d.value for name, d in record.downstream.items()}
        if record.bpb is not None:
            scores["bpb"] = record.bpb
        scores.update({k: d.value for k, d in (downstream or {}).get(model_id, {}).items()})
        table[model_id] = scores
    names = sorted({name for scores in table.values() for name in scores})
    records = []
    for name in names:
        models = sorted(m for m in alignment if name in table[m])
        if len(models) < 3:
            continue
        stats = correlation([alignment[m] for m in models], [table[m][name] for m in models], seed)
        records.append(
            CorrelationRecord(
                vision_model=vision,
                metric=metric,
                downstream=name,
                n_models=len(models),
                models=models,
                **stats,
            )
        )
    return records
