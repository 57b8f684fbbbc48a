"""The scoring step of a run: every metric x model pair, from the score cache or swept.

``score_pairs`` takes the run's plan (``runner.RunPlan``: its config, metrics and device), the
pairs and their feature sets. Each model's layers are clamped and normalised once, prepared
once per metric, and every pair reuses those states; the precision profile picks the outlier
quantile and the Gram's precision; each new score gets its shuffled-pairs null and, from the
run's shared half-samples, its interval and layer-honest score (``stats``). The wall seconds
of the three go into ``timings`` as ``scoring``, ``null`` and ``intervals``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .models import ModelAdapter
from .results import NullRecord, ScoreRecord

if TYPE_CHECKING:
    from .store import FeatureSet, ScoreCache


def score_pairs(
    plan: Any,
    pairs: list[tuple[ModelAdapter, ModelAdapter]],
    feats: dict[str, FeatureSet],
    log: Callable[[str], None],
    timings: dict[str, float] | None = None,
) -> list[ScoreRecord]:
    """Every metric x pair, from the score cache or swept (with its null) and cached.

    Each model's layers are preprocessed once, and prepared once per metric, lazily: a run
    whose scores are all cached prepares nothing. The precision profile picks the outlier
    quantile and the Gram's precision (``score_settings``). ``timings`` gets the seconds of
    the sweeps (with the preprocessing and the cache), the nulls and the intervals.
    """
    timings = {} if timings is None else timings
    for stage in ("scoring", "null", "intervals"):
        timings.setdefault(stage, 0.0)
    started, before = time.perf_counter(), timings["null"] + timings["intervals"]
    from .align import prepare_states, preprocess
    from .store import ScoreCache

    config = plan.config
    n = next(iter(feats.values())).num_samples
    settings = score_settings(config.precision, plan.device)
    options = {"q": config.q, "exact": settings["exact"]}
    device = plan.device if settings["gram"] == "tf32" else "cpu"
    ids = dict.fromkeys(m.id for pair in pairs for m in pair)  # each model once, in order
    layers = {i: preprocess([x.to(device) for x in feats[i].layers], i, **options) for i in ids}
    states: dict[tuple[str, str], list[Any]] = {}

    def prepared(model_id: str, metric_name: str) -> list[Any]:
        if (model_id, metric_name) not in states:
            states[(model_id, metric_name)] = prepare_states(
                plan.metrics[metric_name], layers[model_id]
            )
        return states[(model_id, metric_name)]

    with _timed(timings, "intervals"):
        replicated = _replicate_states(config, n)
    cache = ScoreCache.at(config.cache_dir)
    scores: list[ScoreRecord] = []
    for metric_name, metric in plan.metrics.items():
        metric.check_n(n)
        for a, b in pairs:
            # feature files are content-addressed: their names identify model x data x settings
            parts = {
                "a": f"{a.id}/{feats[a.id].path.stem}",
                "b": f"{b.id}/{feats[b.id].path.stem}",
                "metric": metric_name,
                "params": metric.params,
                "options": options,
                "gram": settings["gram"],
                "null": config.null_permutations,
                "seed": config.seed,
                "replicates": config.replicates,
            }
            record = _cached_score(cache, parts, log)
            if record is None:
                with _gram_precision(settings["gram"]):
                    sa, sb = prepared(a.id, metric_name), prepared(b.id, metric_name)
                    record = _score_pair(
                        config,
                        settings,
                        metric_name,
                        metric,
                        (a, b),
                        (sa, sb),
                        layers[b.id],
                        timings,
                    )
                    with _timed(timings, "intervals"):
                        _add_uncertainty(record, replicated, metric, (a.id, b.id), layers)
                cache.put(parts, record.model_dump_json())
            scores.append(record)
    # the sweeps' share is whatever the null and the intervals did not take
    others = timings["null"] + timings["intervals"] - before
    timings["scoring"] += time.perf_counter() - started - others
    return scores


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the block's wall seconds to ``timings[stage]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


def score_settings(precision: str, device: str) -> dict[str, Any]:
    """What a precision profile means for scoring on ``device``.

    exact: the sort-based quantile and a float32 Gram (the reference with ``--precise``).
    reference: the per-sample approximate quantile and, on CUDA, the Gram in TF32 (the
    reference's default run; TF32 exists only on CUDA, so elsewhere it is float32, which is
    the reference's own CPU run).
    """
    if precision == "exact":
        return {"exact": True, "gram": "float32"}
    return {"exact": False, "gram": "tf32" if device.startswith("cuda") else "float32"}


@contextmanager
def _gram_precision(gram: str) -> Iterator[None]:
    """CUDA matmuls inside the block use TF32 when ``gram == "tf32"``; restored after."""
    import torch

    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = gram == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def _cached_score(
    cache: ScoreCache, parts: dict[str, Any], log: Callable[[str], None]
) -> ScoreRecord | None:
    text = cache.get(parts)
    if text is None:
        return None
    try:
        return ScoreRecord.model_validate_json(text)
    except ValueError:
        log(f"warning: unreadable score cache {cache.path(parts)}; recomputing")
        return None


def _score_pair(
    config: Any,  # runner.RunConfig
    settings: dict[str, Any],
    metric_name: str,
    metric: Any,
    pair: tuple[ModelAdapter, ModelAdapter],
    states: tuple[list[Any], list[Any]],
    layers_b: Any,
    timings: dict[str, float],
) -> ScoreRecord:
    """The layer sweep of one pair, its best score and, if asked, its permutation null."""
    import numpy as np

    from .align import permutation_null, sweep
    from .stats import at_floor

    (a, b), (sa, sb) = pair, states
    matrix, best, best_index = sweep(metric, sa, sb)
    null = None
    if config.null_permutations:
        with _timed(timings, "null"):
            nl = permutation_null(
                metric, sa, sb, best, config.null_permutations, config.seed, layers_b=layers_b
            )
        null = NullRecord(
            permutations=nl.permutations,
            mean=nl.mean,
            std=nl.std,
            p_value=nl.p_value,
            at_floor=at_floor(nl.p_value, nl.permutations),
        )
    return ScoreRecord(
        model_a=a.id,
        model_b=b.id,
        metric=metric_name,
        params=dict(metric.params),
        value=best,
        best_index=best_index,
        matrix=[[None if np.isnan(v) else float(v) for v in row] for row in matrix],
        preprocessing={
            "q": config.q,
            "exact": settings["exact"],
            "gram": settings["gram"],
            "clamp_per_layer": False,
            "normalize": True,
            "concat": False,
        },
        null=null,
    )


def _replicate_states(config: Any, n: int) -> Any:  # config: runner.RunConfig
    """The run's shared half-samples (stats.ReplicateStates), or None with replicates = 0."""
    from .stats import ReplicateStates

    return ReplicateStates(n, config.replicates, config.seed) if config.replicates else None


def _add_uncertainty(
    record: ScoreRecord,
    replicated: Any,
    metric: Any,
    pair: tuple[str, str],
    layers: dict[str, Any],
) -> None:
    """The score's interval and layer-honest score from the shared half-samples."""
    if replicated is None:
        return
    a, b = pair
    u = replicated.uncertainty(metric, record.value, (a, layers[a]), (b, layers[b]))
    record.interval, record.se, record.replicates = u.interval, u.se, u.replicates
    record.honest, record.optimism = u.honest, u.optimism
