"""The main job: models x dataset -> features; model pairs x metrics -> scores; one result file.

Usable from Python without Click::

    from prh_bench.runner import RunConfig, run
    outcome = run(RunConfig(models="offline", metrics=["mutual_knn"]))
    outcome.path, outcome.result.scores

Extraction is one unit per model, run by an executor (``--executor local|slurm|ray``, see
docs/distributed.md) whose workers write the feature store; the alignment stage then reads
every feature set from the store. ``--shard i/N`` runs only every N-th unit from the i-th and
stops before alignment: a run without ``--shard`` scores once all shards are done.
Each model's layers are clamped,
normalised and prepared once per metric, and every pair reuses those states. Pair scores are
cached too (``<cache>/scores/``), so rerunning with one more model computes only its pairs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import platform
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from .errors import PrhBenchError
from .models import ModelAdapter
from .results import (
    DatasetRecord,
    Downstream,
    Failure,
    ModelRecord,
    NullRecord,
    PluginRecord,
    RunResult,
    ScoreRecord,
    write_result,
)
from .storage import atomic_write_text

GROUPS = ("all", "offline", "vision", "language")


class ConfigError(PrhBenchError):
    """A run configuration (file or flags) that cannot be used."""


class SelectionError(PrhBenchError):
    """A model selection that leaves a needed modality empty."""


@dataclass
class RunConfig:
    """Everything a run needs; `prh-bench run` flags and run.toml keys have the same names."""

    models: str = "offline"  # all, offline, vision, language, a comma list of ids, or globs
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
        if self.shard is not None:
            from .executors import parse_shard

            parse_shard(self.shard)


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run.toml as a dict of RunConfig fields; errors name the file, line and key."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: malformed TOML: {exc}") from None
    data = data.get("run", data)  # keys at the top level or under [run]
    known = {f.name: f for f in fields(RunConfig)}
    for key, value in data.items():
        line = next(
            (i for i, t in enumerate(text.splitlines(), 1) if t.strip().startswith(key)), None
        )
        where = f"{path}, line {line}" if line else str(path)
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key '{key}'; known keys: {', '.join(sorted(known))}"
            )
        expected = {
            "topk": int,
            "null_permutations": int,
            "seed": int,
            "keep_going": bool,
            "limit": int,
            "batch_size": int,
            "executor_options": dict,
        }.get(key)
        if expected and not (
            isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        ):
            raise ConfigError(f"{where}: key '{key}' must be {expected.__name__}, got {value!r}")
    if isinstance(data.get("metrics"), str):
        data["metrics"] = [data["metrics"]]
    return data


# --------------------------------------------------------------------------- selection


def select_models(spec: str) -> list[ModelAdapter]:
    """all | offline | vision | language | comma list of ids, aliases, tags or globs."""
    from .registry import get_registry

    reg = get_registry("model")
    everything = [e.obj for e in reg]
    chosen: list[ModelAdapter] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if part == "all":
            found = everything
        elif part in ("vision", "language"):
            found = [m for m in everything if m.modality == part]
        elif part in reg:
            found = [reg.get(part)]
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
        chosen.extend(m for m in found if m not in chosen)
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


# --------------------------------------------------------------------------- provenance


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: str) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
    }
    for dist in ("torch", "transformers", "timm", "open_clip_torch", "numpy"):
        try:
            env[dist] = version(dist)
        except PackageNotFoundError:
            env[dist] = None
    if device.startswith("cuda"):
        import torch

        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def _plugins() -> list[PluginRecord]:
    from .plugins import loaded_plugins

    return [
        PluginRecord(name=p.name, distribution=p.distribution, version=p.version)
        for p in loaded_plugins()
    ]


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


def _metric_params(name: str, topk: int) -> dict[str, Any]:
    from .registry import get_metric

    metric = get_metric(name)
    return {"topk": topk} if "topk" in metric.defaults else {}


def _score_cache_path(cache_dir: str | None, parts: dict[str, Any]) -> Path:
    from .features import cache_root

    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    return cache_root(cache_dir) / "scores" / f"{digest}.json"


def run(
    config: RunConfig,
    *,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    progress: bool = True,
) -> RunOutcome:
    """Extract, score and write one result file. Raises PrhBenchError on user errors."""
    import numpy as np

    from .align import permutation_null, prepare_states, preprocess, sweep
    from .correlate import read_downstream_csv
    from .executors import ExtractionUnit, parse_shard
    from .features import cache_root, resolve_device
    from .registry import get_dataset, get_executor, get_metric
    from .worker import forwarded_env, in_process_plugins, load_unit_features

    device = resolve_device(config.device)
    dataset = get_dataset(config.dataset)
    ok, why = dataset.availability()
    if not ok:
        raise PrhBenchError(f"dataset '{dataset.id}' is not available here: {why}")
    metrics = {
        name: get_metric(name, **_metric_params(name, config.topk)) for name in config.metrics
    }
    extra_downstream = read_downstream_csv(config.downstream) if config.downstream else {}

    selected = select_models(config.models)
    explicit = set(config.models.split(",")) - set(GROUPS)
    failures: list[Failure] = []
    runnable = []
    for m in selected:
        ok, why = m.availability()
        if ok:
            runnable.append(m)
            continue
        if m.id in explicit and not config.keep_going:
            raise PrhBenchError(f"model '{m.id}' is not available here: {why}")
        log(f"skipped {m.id}: {why}")
        failures.append(Failure(model=m.id, stage="availability", reason=why))

    model_pairs(runnable, config.pairs)  # fail before any extraction if a modality is missing
    executor = get_executor(config.executor, config.executor_options)

    # extraction: one unit per model; the executor's workers write the feature store
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
            plugins=plugins,
            env=env,
        )
        for m in runnable
    ]
    if config.shard is not None:
        index, count = parse_shard(config.shard)
        units = [u for i, u in enumerate(units) if i % count == index]
        log(f"shard {index}/{count}: {len(units)} of {len(runnable)} extraction units")
    results = executor.run(units, progress=progress, stop_on_error=not config.keep_going)
    feats: dict[str, Any] = {}
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
            failures.append(
                Failure(model=unit_result.model_id, stage="extraction", reason=unit_result.error)
            )
            continue
        log(
            f"features {unit_result.model_id}: {fs.num_layers} layers x {fs.num_samples} samples"
            f"{' (cached)' if fs.from_cache else ''}"
        )
        feats[unit_result.model_id] = fs
    if config.shard is not None:  # alignment waits for every shard: a run without --shard
        return RunOutcome(None, None, units=results, failures=failures)
    models = [m for m in runnable if m.id in feats]
    pairs = model_pairs(models, config.pairs)
    n = next(iter(feats.values())).num_samples

    # alignment: preprocess and prepare each model once per metric, then every pair
    options = {"q": config.q}
    layers = {m.id: preprocess(feats[m.id].layers, m.id, **options) for m in models}
    states: dict[tuple[str, str], list[Any]] = {}
    scores: list[ScoreRecord] = []
    for metric_name, metric in metrics.items():
        metric.check_n(n)
        for a, b in pairs:
            # feature files are content-addressed: their names identify model x data x settings
            parts = {
                "a": f"{a.id}/{feats[a.id].path.stem}",
                "b": f"{b.id}/{feats[b.id].path.stem}",
                "metric": metric_name,
                "params": metric.params,
                "options": options,
                "null": config.null_permutations,
                "seed": config.seed,
            }
            cached = _score_cache_path(config.cache_dir, parts)
            if cached.exists():
                try:
                    scores.append(ScoreRecord.model_validate_json(cached.read_text()))
                    continue
                except ValueError:
                    log(f"warning: unreadable score cache {cached}; recomputing")
            for model in (a, b):
                if (model.id, metric_name) not in states:
                    states[(model.id, metric_name)] = prepare_states(metric, layers[model.id])
            sa, sb = states[(a.id, metric_name)], states[(b.id, metric_name)]
            matrix, best, best_index = sweep(metric, sa, sb)
            null = None
            if config.null_permutations:
                nl = permutation_null(
                    metric,
                    sa,
                    sb,
                    best,
                    config.null_permutations,
                    config.seed,
                    layers_b=layers[b.id],
                )
                null = NullRecord(
                    permutations=nl.permutations, mean=nl.mean, std=nl.std, p_value=nl.p_value
                )
            record = ScoreRecord(
                model_a=a.id,
                model_b=b.id,
                metric=metric_name,
                params=dict(metric.params),
                value=best,
                best_index=best_index,
                matrix=[[None if np.isnan(v) else float(v) for v in row] for row in matrix],
                preprocessing={
                    **options,
                    "exact": False,
                    "clamp_per_layer": False,
                    "normalize": True,
                    "concat": False,
                },
                null=null,
            )
            atomic_write_text(cached, record.model_dump_json())
            scores.append(record)

    result = RunResult(
        run_id=datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        prh_bench_version=_version(),
        git_commit=_git_commit(),
        environment=environment(device),
        plugins=_plugins(),
        config={k: v for k, v in asdict(config).items()},
        dataset=DatasetRecord(
            id=dataset.id, revision=dataset.revision, content_hash=dataset.content_hash, n=n
        ),
        models=[_model_record(m, feats[m.id], extra_downstream.get(m.id, {})) for m in models],
        scores=scores,
        failures=failures,
    )
    return RunOutcome(result, write_result(result, config.output))


def _version() -> str:
    from .provenance import __version__

    return __version__


def _model_record(m: ModelAdapter, fs: Any, extra: dict[str, Downstream]) -> ModelRecord:
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
        revision=m.metadata.revision,
        parameters=m.metadata.parameters,
        num_layers=fs.num_layers,
        tags=list(m.tags),
        bpb=None if bpb is None else float(bpb.float().mean()),
        downstream=downstream,
        feature_file=str(fs.path),
    )


# --------------------------------------------------------------------------- display


def summary_rows(result: RunResult, metric: str | None = None) -> list[dict[str, Any]]:
    """One row per pair and metric: the score, its layers, and its floor."""
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
                "layers (a, b)": f"{s.best_index[0]}, {s.best_index[1]}",
                "null mean": None if s.null is None else round(s.null.mean, 4),
                "p": None if s.null is None else round(s.null.p_value, 4),
            }
        )
    return rows
