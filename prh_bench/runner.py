"""The main job: models x dataset -> features; model pairs x metrics -> scores; one result file.

Usable from Python without Click::

    from prh_bench.runner import RunConfig, run
    outcome = run(RunConfig(models="offline", metrics=["mutual_knn"]))
    outcome.path, outcome.result.scores

``run`` reads as its four steps: ``plan_run`` (dataset, metrics, models, extraction units),
``extract_all`` (an executor runs one unit per model, ``--executor local|slurm|ray``, see
docs/distributed.md; its workers write the feature store, and every feature set is read back
from it), ``score_pairs`` and ``record_result``. ``--shard i/N`` runs only every N-th unit
from the i-th and stops before scoring: a run without ``--shard`` scores once all shards are
done. Each model's layers are clamped, normalised and prepared once per metric, and every
pair reuses those states. Pair scores are cached too (``<cache>/scores/``), so rerunning with
one more model computes only its pairs.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .config import check_types, read_toml
from .errors import PrhBenchError
from .models import PRECISIONS, ModelAdapter
from .results import (
    DatasetRecord,
    Downstream,
    Failure,
    Fingerprint,
    ModelRecord,
    PluginRecord,
    RunResult,
    ScoreRecord,
    read_downstream_csv,
    write_result,
)

if TYPE_CHECKING:
    from .store import FeatureSet

GROUPS = ("all", "offline", "vision", "language")


class ConfigError(PrhBenchError):
    """A run configuration (file or flags) that cannot be used."""


class SelectionError(PrhBenchError):
    """A model selection that leaves a needed modality empty."""


@dataclass
class RunConfig:
    """Everything a run needs; `prh-bench run` flags and run.toml keys have the same names."""

    # all, offline, vision, language, a comma list of ids, tags, globs or models by name (hf:...)
    models: str = "offline"
    dataset: str = "openclipart-1024"
    metrics: list[str] = field(default_factory=lambda: ["mutual_knn"])
    topk: int = 10
    pairs: Literal["cross", "all"] = "cross"
    device: str | None = None
    batch_size: int | None = None
    cache_dir: str | None = None
    output: str = "results"
    keep_going: bool = False
    limit: int | None = None  # the first N samples only (a different dataset key)
    q: float | None = 0.95
    null_permutations: int = 100
    seed: int = 0
    downstream: str | None = None  # a CSV file: model,metric,value[,source]
    executor: str = "local"  # who runs the extraction units: local, slurm, ray (plugins)
    executor_options: dict[str, Any] = field(default_factory=dict)
    shard: str | None = None  # "i/N": extract only units with index % N == i; no alignment
    precision: str = "exact"  # exact | reference: the reference's --precise or default run
    replicates: int = 20  # half-samples for each score's interval and honest score (0: none)

    def __post_init__(self) -> None:
        if self.pairs not in ("cross", "all"):
            raise ConfigError(f"pairs must be 'cross' or 'all', got {self.pairs!r}")
        if isinstance(self.metrics, str):
            self.metrics = [self.metrics]
        if not self.metrics:
            raise ConfigError("metrics is empty; name at least one (see 'prh-bench metrics')")
        if self.limit is not None and self.limit < 2:
            raise ConfigError(f"limit must be >= 2 samples, got {self.limit}")
        if self.null_permutations < 0:
            raise ConfigError(f"null_permutations must be >= 0, got {self.null_permutations}")
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.shard is not None:
            from .executors import parse_shard

            parse_shard(self.shard)
        if self.replicates < 0 or self.replicates % 2:
            raise ConfigError(
                f"replicates must be 0 or an even number (halves come in pairs), "
                f"got {self.replicates}"
            )


# run.toml's value types; a list for metrics is checked to hold strings
_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "models": str,
    "dataset": str,
    "metrics": (str, list),
    "topk": int,
    "pairs": str,
    "device": str,
    "batch_size": int,
    "cache_dir": str,
    "output": str,
    "keep_going": bool,
    "limit": int,
    "q": (float, int),
    "null_permutations": int,
    "seed": int,
    "downstream": str,
    "executor": str,
    "executor_options": dict,
    "shard": str,
    "precision": str,
    "replicates": int,
}


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run.toml (keys under ``[run]`` or at the top level) as a dict of RunConfig fields.

    Errors name the file, line and key.
    """
    data, text = read_toml(path, "run", ConfigError)
    # unknown keys first: a misspelt key explains more than a wrong value beside it
    check_types(
        {k: v for k, v in data.items() if k not in _CONFIG_TYPES},
        _CONFIG_TYPES,
        path,
        text,
        ConfigError,
    )
    check_types(data, _CONFIG_TYPES, path, text, ConfigError)
    if isinstance(data.get("metrics"), str):
        data["metrics"] = [data["metrics"]]
    return data


# --------------------------------------------------------------------------- selection


def select_models(spec: str) -> list[ModelAdapter]:
    """all | offline | vision | language | comma list of ids, aliases, tags, globs or models
    by name (``hf:ORG/NAME``: a part with a known prefix is never a glob or a tag)."""
    from .registry import get_model, get_registry, open_models

    reg = get_registry("model")
    everything = [e.obj for e in reg if isinstance(e.obj, ModelAdapter)]
    chosen: list[ModelAdapter] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        named = None if part in reg else open_models(part)
        if named is not None:
            found = named
        elif part == "all":
            found = everything
        elif part in ("vision", "language"):
            found = [m for m in everything if m.modality == part]
        elif part in reg:
            found = [get_model(part)]
        elif any(ch in part for ch in "*?["):
            found = [m for m in everything if fnmatch.fnmatch(m.id, part)]
            if not found:
                raise SelectionError(
                    f"--models pattern '{part}' matches no model; "
                    "run 'prh-bench models' to list them"
                )
        elif any(part in m.tags for m in everything):
            found = [m for m in everything if part in m.tags]
        else:
            reg.entry(part)  # raises the did-you-mean error
            found = []
        # by id: a model by name is opened anew each time it is named
        chosen.extend(m for m in found if m.id not in {c.id for c in chosen})
    if not chosen:
        raise SelectionError(f"--models '{spec}' selects no model")
    return chosen


def model_pairs(models: list[ModelAdapter], pairs: str) -> list[tuple[ModelAdapter, ModelAdapter]]:
    """cross: every (language, vision); all: every unordered pair, language first."""
    language = [m for m in models if m.modality == "language"]
    vision = [m for m in models if m.modality == "vision"]
    if pairs == "cross":
        missing = [
            name for name, group in (("language", language), ("vision", vision)) if not group
        ]
        if missing:
            raise SelectionError(
                f"no {missing[0]} model is selected (or available); --pairs cross scores "
                "language x vision pairs: add one to --models, or use --pairs all"
            )
        return [(a, b) for a in language for b in vision]
    ordered = language + vision
    out = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :]]
    if not out:
        raise SelectionError("--pairs all needs at least two models")
    return out


# --------------------------------------------------------------------------- the run


@dataclass
class RunOutcome:
    """A run's result file; with ``--shard``, no result (None) and only the units it ran."""

    result: RunResult | None
    path: Path | None
    units: list[Any] = field(default_factory=list)  # executors.UnitResult, one per unit run
    failures: list[Failure] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """A model was tried and failed (models skipped as unavailable do not count)."""
        failures = self.result.failures if self.result is not None else self.failures
        return any(f.stage != "availability" for f in failures)


@dataclass
class RunPlan:
    """What a run does, settled before any model is loaded; ``failures`` grows as it goes."""

    config: RunConfig
    device: str
    dataset: Any  # datasets.Dataset
    metrics: dict[str, Any]  # name -> metrics.Metric with the run's parameters
    downstream: dict[str, dict[str, Downstream]]  # from --downstream, by model id
    models: list[ModelAdapter]  # the available ones, in selection order
    executor: Any  # executors.Executor
    units: list[Any]  # executors.ExtractionUnit, this shard's only
    failures: list[Failure]


def run(
    config: RunConfig,
    *,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    progress: bool = True,
) -> RunOutcome:
    """Plan, extract, score and write one result file. Raises PrhBenchError on user errors.

    The result's ``timings`` says where the wall time went (``stage_timings``).
    """
    from .scoring import score_pairs
    from .stats import add_statistics

    started = time.perf_counter()
    plan = plan_run(config, log)
    timings = {"plan": time.perf_counter() - started}
    feats, units = extract_all(plan, log, progress)
    if config.shard is not None:  # alignment waits for every shard: a run without --shard
        return RunOutcome(None, None, units=units, failures=plan.failures)
    timings.update(extraction_timings(feats))
    warn_unscored_captions(feats, log)
    models = [m for m in plan.models if m.id in feats]
    scores = score_pairs(plan, model_pairs(models, config.pairs), feats, log, timings)
    with_stats = time.perf_counter()
    result = add_statistics(record_result(plan, models, feats, scores))
    timings["intervals"] = timings.get("intervals", 0.0) + time.perf_counter() - with_stats
    timings["total"] = time.perf_counter() - started
    result.timings = {stage: round(seconds, 3) for stage, seconds in timings.items()}
    return RunOutcome(result, write_result(result, config.output))


def warn_unscored_captions(feats: dict[str, FeatureSet], log: Callable[[str], None]) -> None:
    """Say where bits-per-byte holds captions of which no token was predicted: a caption of one
    token, from a tokenizer that adds no start token, scores 0 bits (the reference's formula),
    which pulls the model's mean down; bpb then compares across tokenizers only with care."""
    for model_id, fs in feats.items():
        bpb = fs.stats.get("bits_per_byte")
        if bpb is not None and int((bpb == 0).sum()):
            log(
                f"note: {model_id}: {int((bpb == 0).sum())} of {bpb.numel()} captions have no "
                "predicted token (one token and no start token) and count as 0 bits per byte, "
                "as in the reference; its mean bpb is lower than the captions' true cost"
            )


def extraction_timings(feats: dict[str, FeatureSet]) -> dict[str, float]:
    """``load:<model>`` and ``extract:<model>`` seconds of each feature set this run made, as its
    file's header records them (wherever a worker ran it); 0 for one read from the cache."""
    out: dict[str, float] = {}
    for model_id, fs in feats.items():
        fresh = not fs.from_cache
        load = float(fs.meta.get("load_seconds", 0.0)) if fresh else 0.0
        out[f"load:{model_id}"] = load
        out[f"extract:{model_id}"] = float(fs.meta.get("seconds", 0.0)) - load if fresh else 0.0
    return out


# --------------------------------------------------------------------------- plan


def plan_run(config: RunConfig, log: Callable[[str], None]) -> RunPlan:
    """Check the dataset, metrics and models, and cut the extraction into units.

    Everything a user can get wrong fails here, before any model is loaded.
    """
    from .registry import get_dataset, get_executor, get_metric

    device = _check_settings(config)
    dataset = get_dataset(config.dataset)
    ok, why = dataset.availability()
    if not ok:
        raise PrhBenchError(f"dataset '{dataset.id}' is not available here: {why}")
    metrics = {
        name: get_metric(name, **_metric_params(name, config.topk)) for name in config.metrics
    }
    n = len(dataset) if config.limit is None else min(config.limit, len(dataset))
    for metric in metrics.values():  # e.g. topk >= N: before any model is loaded
        metric.check_n(n)
    downstream = read_downstream_csv(config.downstream) if config.downstream else {}
    models, failures = _available_models(config, log)
    model_pairs(models, config.pairs)  # fail before any extraction if a modality is missing
    executor = get_executor(config.executor, config.executor_options)
    units = _units(config, dataset, models, device, log)
    return RunPlan(config, device, dataset, metrics, downstream, models, executor, units, failures)


def _check_settings(config: RunConfig) -> str:
    """The run's device, after checking the settings that need no dataset or model: the
    device (that it exists here only when this machine extracts) and the environment."""
    from .extract import check_device_name, checkpoint_seconds_from_env, resolve_device

    checkpoint_seconds_from_env()
    if config.device is not None:
        check_device_name(config.device)
    if config.executor == "local" or config.device is None:
        return resolve_device(config.device)
    return config.device  # a cluster's worker checks it where it runs


def _metric_params(name: str, topk: int) -> dict[str, Any]:
    from .registry import get_metric

    metric = get_metric(name)
    return {"topk": topk} if "topk" in metric.defaults else {}


def _available_models(
    config: RunConfig, log: Callable[[str], None]
) -> tuple[list[ModelAdapter], list[Failure]]:
    """The selected models that can run here; the others are skipped, or refused if named."""
    from .registry import is_model_by_name

    explicit = set(config.models.split(",")) - set(GROUPS)
    failures: list[Failure] = []
    runnable = []
    for m in select_models(config.models):
        ok, why = m.availability()
        if ok:
            runnable.append(m)
            continue
        if (m.id in explicit or is_model_by_name(m.id)) and not config.keep_going:
            raise PrhBenchError(f"model '{m.id}' is not available here: {why}")
        log(f"skipped {m.id}: {why}")
        failures.append(Failure(model=m.id, stage="availability", reason=why))
    return runnable, failures


def _units(
    config: RunConfig,
    dataset: Any,
    models: list[ModelAdapter],
    device: str,
    log: Callable[[str], None],
) -> list[Any]:
    """One extraction unit per model (only this shard's with ``--shard``)."""
    from .executors import ExtractionUnit, parse_shard
    from .store import cache_root
    from .worker import forwarded_env, in_process_plugins

    env, plugins = forwarded_env(), in_process_plugins()
    store = str(cache_root(config.cache_dir).expanduser().resolve())
    units = [
        ExtractionUnit(
            model_id=m.id,
            dataset=config.dataset,
            dataset_hash=dataset.content_hash,
            cache_dir=store,
            # a pinned worker sees its GPU as "cuda"; the default device stays the worker's own
            device=config.device or (device if config.executor == "local" else None),
            batch_size=config.batch_size,
            limit=config.limit,
            precision=config.precision,
            plugins=plugins,
            env=env,
        )
        for m in models
    ]
    if config.shard is not None:
        index, count = parse_shard(config.shard)
        units = [u for i, u in enumerate(units) if i % count == index]
        log(f"shard {index}/{count}: {len(units)} of {len(models)} extraction units")
    return units


# --------------------------------------------------------------------------- extract


def extract_all(
    plan: RunPlan, log: Callable[[str], None], progress: bool
) -> tuple[dict[str, FeatureSet], list[Any]]:
    """Run the units on the executor (its workers write the store); read back each feature set.

    A failed unit stops the run, or with ``keep_going`` becomes a failure of the plan.
    """
    from .worker import load_unit_features

    config = plan.config
    results = plan.executor.run(plan.units, progress=progress, stop_on_error=not config.keep_going)
    feats: dict[str, FeatureSet] = {}
    for unit_result in results:
        if unit_result.ok:
            try:
                fs = load_unit_features(unit_result)
            except PrhBenchError as exc:
                unit_result.ok, unit_result.error = False, str(exc)
        if not unit_result.ok:
            if not config.keep_going:
                unit_result.raise_error()
            log(f"failed {unit_result.model_id}: {unit_result.error}")
            plan.failures.append(
                Failure(model=unit_result.model_id, stage="extraction", reason=unit_result.error)
            )
            continue
        log(
            f"features {unit_result.model_id}: {fs.num_layers} layers x {fs.num_samples} samples"
            f"{' (cached)' if fs.from_cache else ''}"
        )
        feats[unit_result.model_id] = fs
    return feats, results


# --------------------------------------------------------------------------- record


def record_result(
    plan: RunPlan,
    models: list[ModelAdapter],
    feats: dict[str, FeatureSet],
    scores: list[ScoreRecord],
) -> RunResult:
    """The result: settings, provenance, dataset, models with their features, scores, failures."""
    from .provenance import environment, git_commit, prh_bench_version

    now = datetime.now(timezone.utc)
    return RunResult(
        run_id=now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6],
        created=now.isoformat(timespec="seconds"),
        prh_bench_version=prh_bench_version(),
        git_commit=git_commit(),
        environment=environment(plan.device),
        plugins=_plugins(),
        config={k: v for k, v in asdict(plan.config).items()},
        precision=plan.config.precision,
        dataset=_dataset_record(plan.dataset, feats),
        models=[_model_record(m, feats[m.id], plan.downstream.get(m.id, {})) for m in models],
        scores=scores,
        failures=plan.failures,
        replicates=plan.config.replicates,
    )


def _dataset_record(dataset: Any, feats: dict[str, FeatureSet]) -> DatasetRecord:
    """The samples scored, as the feature files' keys name them, and the dataset they are from."""
    scored = {(fs.meta["key"]["dataset_hash"], fs.num_samples) for fs in feats.values()}
    if len(scored) != 1:  # every model must have seen the same samples: never mix them
        raise PrhBenchError(
            f"the feature sets of this run are on different data {sorted(scored)}; "
            "clear the cache (prh-bench cache rm --all) and rerun"
        )
    ((content_hash, n),) = scored
    return DatasetRecord(
        id=dataset.id,
        revision=str(dataset.revision),
        content_hash=content_hash,
        n=n,
        full_content_hash=dataset.content_hash,
        full_n=len(dataset),
    )


def _plugins() -> list[PluginRecord]:
    from .plugins import loaded_plugins

    return [
        PluginRecord(name=p.name, distribution=p.distribution, version=p.version)
        for p in loaded_plugins()
    ]


def _model_record(m: ModelAdapter, fs: FeatureSet, extra: dict[str, Downstream]) -> ModelRecord:
    from .align import feature_fingerprint

    bpb = fs.stats.get("bits_per_byte")
    downstream = {
        name: Downstream(value=d.value, source=d.source)
        for name, d in m.metadata.downstream.items()
    }
    downstream.update(extra)
    return ModelRecord(
        id=m.id,
        modality=m.modality,
        family=m.family,
        revision=m.weights_revision(),
        parameters=m.metadata.parameters,
        num_layers=fs.num_layers,
        tags=list(m.tags),
        bpb=None if bpb is None else float(bpb.float().mean()),
        downstream=downstream,
        feature_file=str(fs.path),
        fingerprint=Fingerprint(**feature_fingerprint(fs.layers)),
        url=m.metadata.url,
        source=m.metadata.source,
        quantisation=m.metadata.quantisation,
        notes=m.metadata.notes,
        control_of=m.metadata.control_of,
    )


# --------------------------------------------------------------------------- display


def summary_rows(result: RunResult, metric: str | None = None) -> list[dict[str, Any]]:
    """One row per pair and metric: the score, its interval, its layers, and its floor."""
    from .stats import format_p, format_rank

    rows = []
    for s in result.scores:
        if metric and s.metric != metric:
            continue
        rows.append(
            {
                "model_a": s.model_a,
                "model_b": s.model_b,
                "metric": s.metric,
                "score": round(s.value, 4),
                "95% interval": _interval(s.interval),
                "honest": None if s.honest is None else round(s.honest, 4),
                "rank": format_rank(s.rank_range),
                "layers (a, b)": f"{s.best_index[0]}, {s.best_index[1]}",
                "null mean": None if s.null is None else round(s.null.mean, 4),
                "p": None if s.null is None else format_p(s.null.p_value, s.null.permutations),
            }
        )
    return rows


def timing_rows(timings: dict[str, float]) -> list[dict[str, Any]]:
    """The run's time breakdown as table rows: each model's loading and extraction on one row
    ("cached" when its features came from the cache), then scoring, null, intervals, total."""
    total = timings.get("total") or sum(timings.values()) or 1.0
    rows: list[dict[str, Any]] = []
    for stage, seconds in timings.items():
        kind, _, model = stage.partition(":")
        if kind == "load":
            continue  # shown on its model's extract row
        row: dict[str, Any] = {"stage": stage, "load s": "", "seconds": round(seconds, 1)}
        if kind == "extract":
            load = timings.get(f"load:{model}", 0.0)
            row["stage"] = f"extract {model}"
            if seconds == 0 and load == 0:
                row["seconds"] = "cached"
            else:
                row["load s"], row["seconds"] = round(load, 1), round(load + seconds, 1)
        seconds_shown = row["seconds"]
        share = seconds_shown / total if isinstance(seconds_shown, float) else 0.0
        row["share"] = "" if stage == "total" else f"{100 * share:.0f}%"
        rows.append(row)
    return rows


def _interval(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f"[{interval[0]:.4f}, {interval[1]:.4f}]"
