"""Result files: one JSON document per run, a typed schema validated on read and on write.

``<output>/<dataset>/<run_id>.json``; docs/results-format.md documents every field.
``Results.read(paths)`` is the one collection of runs (the site and ``load_results`` read
through it); ``load_results(paths)`` flattens any number of files into a pandas DataFrame
with one row per (model pair, metric).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import PrhBenchError
from .storage import atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 has none of the uncertainty fields: they load empty


class ResultsError(PrhBenchError):
    """A result file that is missing, not JSON, or not a prh-bench result of a known schema."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Downstream(_Strict):
    value: float
    source: str


class PluginRecord(_Strict):
    name: str
    distribution: str | None = None
    version: str | None = None


class DatasetRecord(_Strict):
    id: str
    revision: str
    content_hash: str
    n: int = Field(ge=1)


class ModelRecord(_Strict):
    id: str
    modality: Literal["vision", "language"]
    family: str
    revision: str | None = None
    parameters: int | None = None
    num_layers: int = Field(ge=1)
    tags: list[str] = []
    bpb: float | None = None
    downstream: dict[str, Downstream] = {}
    feature_file: str | None = None


class NullRecord(_Strict):
    """The shuffled-pairs floor: the same score with B's samples permuted."""

    permutations: int = Field(ge=1)
    mean: float
    std: float
    p_value: float = Field(ge=0, le=1)
    at_floor: bool | None = None  # no permutation reached the score: p <= 1 / (permutations + 1)


class ScoreRecord(_Strict):
    model_a: str
    model_b: str
    metric: str
    params: dict[str, Any] = {}
    value: float
    best_index: tuple[int, int]
    matrix: list[list[float | None]]
    preprocessing: dict[str, Any]
    null: NullRecord | None = None
    # sampling uncertainty (prh_bench.stats; empty in version 1 and with --replicates 0)
    interval: tuple[float, float] | None = None  # 95 %, delete-d jackknife by halves
    se: float | None = None
    replicates: list[float] = []  # the best score on each of the run's shared half-samples
    honest: float | None = None  # value minus optimism: the layer-honest score
    optimism: float | None = None  # what choosing the best of all layer pairs adds
    rank_range: tuple[int, int] | None = None  # 95 % rank range among this metric's pairs

    @field_validator("matrix")
    @classmethod
    def _rectangular(cls, matrix: list[list[float | None]]) -> list[list[float | None]]:
        if not matrix or len({len(row) for row in matrix}) != 1 or not matrix[0]:
            raise ValueError("matrix must be a non-empty rectangular list of rows")
        return matrix


class CorrelationRecord(_Strict):
    vision_model: str
    metric: str
    downstream: str
    n_models: int
    pearson: float | None
    pearson_ci: tuple[float, float] | None
    spearman: float | None
    spearman_ci: tuple[float, float] | None
    p_value: float | None
    models: list[str]


class AgreementRecord(_Strict):
    """Kendall's tau between two metrics' rankings of the same model pairs."""

    metric_a: str
    metric_b: str
    n_pairs: int
    tau: float | None
    interval: tuple[float, float] | None = None
    p_value: float | None = None


class Failure(_Strict):
    model: str
    stage: str
    reason: str


class RunResult(_Strict):
    schema_version: Literal[1, 2] = SCHEMA_VERSION
    run_id: str
    created: str
    prh_bench_version: str
    git_commit: str | None = None
    environment: dict[str, Any]
    plugins: list[PluginRecord]
    config: dict[str, Any]
    dataset: DatasetRecord
    models: list[ModelRecord]
    scores: list[ScoreRecord]
    failures: list[Failure] = []
    correlations: list[CorrelationRecord] = []
    replicates: int = 0  # half-samples behind each score's interval (0: none)
    agreement: list[AgreementRecord] = []

    def model(self, model_id: str) -> ModelRecord:
        for m in self.models:
            if m.id == model_id:
                return m
        raise KeyError(model_id)


def _explain(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse_result(data: Any, source: str = "<data>") -> RunResult:
    if not isinstance(data, dict):
        raise ResultsError(f"{source}: not a prh-bench result (a JSON object was expected)")
    if "schema_version" not in data or "run_id" not in data:
        raise ResultsError(f"{source}: not a prh-bench result file (no schema_version/run_id)")
    if data["schema_version"] not in READABLE_VERSIONS:
        raise ResultsError(
            f"{source}: schema_version {data['schema_version']!r} is not supported by this "
            f"prh-bench (it reads versions {', '.join(map(str, READABLE_VERSIONS))}); "
            "upgrade prh-bench or rerun"
        )
    try:
        return RunResult.model_validate(data)
    except ValidationError as exc:
        raise ResultsError(f"{source}: invalid result file: {_explain(exc)}") from None


def read_result(path: str | os.PathLike[str]) -> RunResult:
    """Read and validate one result file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such result file") from None
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return parse_result(data, str(path))


def write_result(result: RunResult, output: str | os.PathLike[str]) -> Path:
    """Validate and write ``<output>/<dataset>/<run_id>.json`` atomically; return the path."""
    RunResult.model_validate(result.model_dump())  # never write what cannot be read back
    path = (
        Path(output)
        / result.dataset.id.replace("/", "_").replace(":", "_")
        / (f"{result.run_id}.json")
    )
    atomic_write_text(path, result.model_dump_json(indent=1) + "\n")
    return path


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders contribute every ``*.json`` below them."""
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(p.rglob("*.json")) if p.is_dir() else [p])
    return out


def metric_key(score: ScoreRecord) -> tuple[str, str]:
    """A metric with its parameters: scores with equal keys measure the same thing."""
    return score.metric, json.dumps(score.params, sort_keys=True)


@dataclass
class DatasetResults:
    """The runs on one (dataset, N), merged: a later run's model record and score win."""

    dataset: DatasetRecord  # the first run's record
    runs: list[tuple[Path, RunResult]] = field(default_factory=list)  # oldest first
    models: dict[str, ModelRecord] = field(default_factory=dict)
    # metric_key -> (model_a, model_b) -> (score, the run it comes from)
    scores: dict[tuple[str, str], dict[tuple[str, str], tuple[ScoreRecord, RunResult]]] = field(
        default_factory=dict
    )


@dataclass
class Results:
    """Result files read and validated, each with the path it came from: the one collection
    that the site, ``load_results`` and the commands read runs through."""

    runs: list[tuple[Path, RunResult]]

    @classmethod
    def read(cls, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> Results:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        return cls([(path, read_result(path)) for path in expand_paths(paths)])

    def by_dataset(self) -> list[DatasetResults]:
        """One merged entry per (dataset id, N), sorted by id then N; runs merge oldest first."""
        merged: dict[tuple[str, int], DatasetResults] = {}
        for path, run in sorted(self.runs, key=lambda pr: (pr[1].created, pr[1].run_id)):
            key = (run.dataset.id, run.dataset.n)
            entry = merged.setdefault(key, DatasetResults(dataset=run.dataset))
            entry.runs.append((path, run))
            entry.models.update((m.id, m) for m in run.models)
            for s in run.scores:
                entry.scores.setdefault(metric_key(s), {})[(s.model_a, s.model_b)] = (s, run)
        return [merged[key] for key in sorted(merged)]

    def select(
        self, dataset: str | None = None, metric: str | None = None
    ) -> Iterator[tuple[Path, RunResult, ScoreRecord]]:
        """Every score (unmerged) of the given dataset id and metric name, file order."""
        for path, run in self.runs:
            if dataset is not None and run.dataset.id != dataset:
                continue
            for s in run.scores:
                if metric is None or s.metric == metric:
                    yield path, run, s

    def frame(self) -> pd.DataFrame:
        """One row per (model pair, metric) over every run."""
        import pandas as pd

        rows = []
        for path, result, s in self.select():
            models = {m.id: m for m in result.models}
            a, b = models.get(s.model_a), models.get(s.model_b)
            rows.append(
                {
                    "run_id": result.run_id,
                    "created": result.created,
                    "dataset": result.dataset.id,
                    "n": result.dataset.n,
                    "model_a": s.model_a,
                    "modality_a": a.modality if a else None,
                    "model_b": s.model_b,
                    "modality_b": b.modality if b else None,
                    "metric": s.metric,
                    "params": json.dumps(s.params, sort_keys=True),
                    "value": s.value,
                    "layer_a": s.best_index[0],
                    "layer_b": s.best_index[1],
                    "null_mean": s.null.mean if s.null else None,
                    "p_value": s.null.p_value if s.null else None,
                    "file": str(path),
                    "p_at_floor": s.null.at_floor if s.null else None,
                    "permutations": s.null.permutations if s.null else None,
                    "ci_low": s.interval[0] if s.interval else None,
                    "ci_high": s.interval[1] if s.interval else None,
                    "se": s.se,
                    "honest": s.honest,
                    "optimism": s.optimism,
                    "rank_low": s.rank_range[0] if s.rank_range else None,
                    "rank_high": s.rank_range[1] if s.rank_range else None,
                }
            )
        return pd.DataFrame(rows)


def load_results(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> pd.DataFrame:
    """A DataFrame with one row per (model pair, metric) over the given result files/folders."""
    return Results.read(paths).frame()
