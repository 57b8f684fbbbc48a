"""Result files: one JSON document per run, a typed schema validated on read and on write.

``<output>/<dataset>/<run_id>.json``; docs/results-format.md documents every field.
``Results.read(paths)`` is the one collection of runs (the site and ``load_results`` read
through it); ``load_results(paths)`` flattens any number of files into a pandas DataFrame
with one row per (model pair, metric).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .datasets import first_n_hash
from .errors import PrhBenchError
from .inputfile import read_json, read_text
from .storage import atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 3
#: older versions this prh-bench still reads (their new fields empty; see upgrade_v1)
READABLE_VERSIONS = (1, 2, 3)


class ResultsError(PrhBenchError):
    """A result file that is missing, not JSON, or not a prh-bench result of a known schema."""


class _Strict(BaseModel):
    # NaN stays NaN in the text, so the writer's read-back check names the field holding it
    model_config = ConfigDict(extra="forbid", frozen=False, ser_json_inf_nan="constants")


class Downstream(_Strict):
    value: float
    source: str


class PluginRecord(_Strict):
    name: str
    distribution: str | None = None
    version: str | None = None


class DatasetRecord(_Strict):
    """The data scored: its samples' hash and count, and the full dataset they come from."""

    id: str
    revision: str
    content_hash: str  # of the samples scored (the first n with --limit)
    n: int = Field(ge=1)
    full_content_hash: str | None = None  # the whole dataset's (None: unknown, version 1)
    full_n: int | None = Field(default=None, ge=1)


class Fingerprint(_Strict):
    """A model's features in brief: per layer, the kNN lists of a fixed subset of samples.

    ``layers[l]`` holds one list per sample in ``samples``, separated by ";", each the
    indices (space-separated, ascending) of that sample's ``k`` nearest samples by cosine.
    """

    samples: list[int]
    k: int = Field(ge=1)
    layers: list[str]


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
    fingerprint: Fingerprint | None = None  # None in version-1 files
    # (version 3) what the model really is and where its weights come from
    url: str | None = None
    source: str | None = None  # hub id, local path or package the weights were read from
    quantisation: str | None = None  # e.g. "GGUF Q4_K_M, dequantised to float32"
    notes: str | None = None  # instruct or base, code-tuned, fine-tune, ...
    control_of: str | None = None  # a random-init control: the trained model it belongs to


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
    schema_version: Literal[1, 2, 3] = SCHEMA_VERSION
    run_id: str
    created: str
    prh_bench_version: str
    git_commit: str | None = None
    environment: dict[str, Any]
    plugins: list[PluginRecord]
    config: dict[str, Any]
    # exact | reference (docs/metrics.md); None: a version-1 file, scored before profiles
    # existed (approximate quantile, float32 Gram)
    precision: Literal["exact", "reference"] | None = None
    dataset: DatasetRecord
    models: list[ModelRecord]
    scores: list[ScoreRecord]
    failures: list[Failure] = []
    correlations: list[CorrelationRecord] = []
    replicates: int = 0  # half-samples behind each score's interval (0: none)
    agreement: list[AgreementRecord] = []
    # (version 3) wall seconds per stage, in the order they ran (e.g. "load", "extract:<model>",
    # "scoring", "null", "intervals"); empty in older files
    timings: dict[str, float] = {}

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
    _check_numbers(data, source)
    if data["schema_version"] == 1:
        data = upgrade_v1(data)
    try:
        return RunResult.model_validate(data)
    except ValidationError as exc:
        raise ResultsError(f"{source}: invalid result file: {_explain(exc)}") from None


# Every number of a result file is finite, and every integer fits 64 bits: an undefined value
# is null only where the schema gives null a meaning (an undefined correlation, a layer pair
# the metric cannot score), never NaN, which JSON cannot hold and no reader agrees on.
INT_LIMIT = 2**63


def _bad_number(data: Any) -> tuple[tuple[Any, ...], Any] | None:
    """(where, value) of the first non-finite float or over-long integer in a document."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), data)]
    while stack:
        loc, node = stack.pop()
        if isinstance(node, dict):
            stack.extend(((*loc, k), v) for k, v in reversed(list(node.items())))
        elif isinstance(node, (list, tuple)):
            stack.extend(((*loc, i), v) for i, v in reversed(list(enumerate(node))))
        elif isinstance(node, float) and not math.isfinite(node):
            return loc, node
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) >= INT_LIMIT:
            return loc, node
    return None


def _where(data: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """``model 'x', field bpb``: the record a location is in, by its ids, and the field."""
    part, rest = (loc[0], loc[1:]) if loc else ("", ())
    items = data.get(part) if isinstance(part, str) else None
    if rest and isinstance(rest[0], int) and isinstance(items, list):
        record = items[rest[0]] if isinstance(items[rest[0]], dict) else {}
        names = {
            "models": lambda r: f"model {r.get('id')!r}",
            "scores": lambda r: (
                f"score {r.get('model_a')!r} vs {r.get('model_b')!r} ({r.get('metric')})"
            ),
            "correlations": lambda r: (
                f"correlation of {r.get('downstream')!r} with "
                f"{r.get('metric')} alignment to {r.get('vision_model')!r}"
            ),
        }
        if part in names:
            return f"{names[part](record)}, field {'.'.join(map(str, rest[1:]))}"
    return f"field {'.'.join(map(str, loc))}"


def _check_numbers(data: dict[str, Any], source: str) -> None:
    found = _bad_number(data)
    if found is not None:
        loc, value = found
        what = "too large an integer" if isinstance(value, int) else "not a finite number"
        shown = value if isinstance(value, float) else f"{str(value)[:20]}..."
        raise ResultsError(
            f"{source}: {_where(data, loc)} is {shown} ({what}); a result file holds only "
            "finite numbers: fix the input that produced it, or rerun"
        )


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 result as version 2: the data identity made honest, new fields empty.

    Version 1 recorded the full dataset's hash with the scored n. Without ``--limit`` that is
    the scored data too; with it, the scored samples were its first n, whose hash follows
    from it (``first_n_hash``). A limit that reached the full length scored the full data.
    """
    data = {**data, "schema_version": 1}
    dataset = data.get("dataset")
    if isinstance(dataset, dict) and "content_hash" in dataset and "n" in dataset:
        limit = (data.get("config") or {}).get("limit")
        full, n = dataset["content_hash"], dataset["n"]
        dataset = {**dataset, "full_content_hash": full}
        if limit is None or (isinstance(n, int) and isinstance(limit, int) and limit > n):
            dataset["full_n"] = n  # the whole dataset was scored
        elif isinstance(full, str) and isinstance(n, int):
            dataset["content_hash"] = first_n_hash(full, n)
        data["dataset"] = dataset
    return data


def read_result(path: str | os.PathLike[str]) -> RunResult:
    """Read and validate one result file."""
    return parse_result(read_json(path, ResultsError, "JSON"), str(path))


def result_text(result: RunResult, path: str | os.PathLike[str]) -> str:
    """The exact text of ``result``'s file, first parsed back through the reader's checks: the
    tool never writes a file it cannot read (the error names ``path``, which stays as it was)."""
    text = result.model_dump_json(indent=1) + "\n"
    parse_result(json.loads(text), f"{path} (not written)")
    return text


def save_result(result: RunResult, path: str | os.PathLike[str]) -> Path:
    """Write ``result`` to exactly ``path``, atomically, once its text reads back."""
    atomic_write_text(path, result_text(result, path))
    return Path(path)


def write_result(result: RunResult, output: str | os.PathLike[str]) -> Path:
    """Validate and write ``<output>/<dataset>/<run_id>.json`` atomically; return the path."""
    name = result.dataset.id.replace("/", "_").replace(":", "_")
    return save_result(result, Path(output) / name / f"{result.run_id}.json")


class DownstreamError(PrhBenchError):
    """A downstream-scores CSV that cannot be read, or a row in it that cannot be used."""


def read_downstream_csv(path: str | os.PathLike[str]) -> dict[str, dict[str, Downstream]]:
    """``model,metric,value[,source]`` rows -> {model: {metric: Downstream}}.

    Each value is a finite number, each (model, metric) given once; a bad row is one error
    naming the file, the line and the model.
    """
    path = Path(path)
    text = read_text(path, DownstreamError)
    out: dict[str, dict[str, Downstream]] = {}
    lines: dict[tuple[str, str], int] = {}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        missing = {"model", "metric", "value"} - set(reader.fieldnames or [])
        if missing:
            raise DownstreamError(
                f"{path}: downstream CSV needs columns model,metric,value[,source]; "
                f"missing {', '.join(sorted(missing))}"
            )
        for row in reader:
            line = reader.line_num
            model, metric = (row.get("model") or "").strip(), (row.get("metric") or "").strip()
            if not model or not metric:
                raise DownstreamError(f"{path}, line {line}: a row needs a model and a metric")
            where = f"{path}, line {line}, model {model!r}"
            try:
                value = float(row["value"])  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise DownstreamError(f"{where}: value {row['value']!r} is not a number") from None
            if not math.isfinite(value):
                raise DownstreamError(
                    f"{where}: value {row['value']!r} is not a finite number; give the score, "
                    "or leave the row out"
                )
            if (model, metric) in lines:
                raise DownstreamError(
                    f"{where}: {metric} is given twice (lines {lines[model, metric]} and "
                    f"{line}); keep one"
                )
            lines[model, metric] = line
            source = (row.get("source") or "").strip() or str(path)
            out.setdefault(model, {})[metric] = Downstream(value=value, source=source)
    except csv.Error as exc:  # raised before line_num counts the line it is reading
        line = reader.line_num + 1
        raise DownstreamError(f"{path}, line {line}: not valid CSV ({exc})") from None
    return out


def write_downstream_csv(
    path: str | os.PathLike[str], table: dict[str, dict[str, Downstream]]
) -> None:
    """Write ``model,metric,value,source`` rows (sorted), atomically; ``read_downstream_csv``
    reads it back. A non-finite value is refused, naming the model and metric."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", "metric", "value", "source"])
    for model_id in sorted(table):
        for name, d in sorted(table[model_id].items()):
            if not math.isfinite(d.value):
                raise DownstreamError(
                    f"{path} (not written): model {model_id!r}, {name} is {d.value} "
                    "(not a finite number)"
                )
            writer.writerow([model_id, name, repr(d.value), d.source])
    atomic_write_text(Path(path), buffer.getvalue())


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders contribute every regular ``*.json`` file below them, except in
    hidden folders (temporary and interrupted outputs live there)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            out.append(p)
            continue
        for found in sorted(p.rglob("*.json")):
            hidden = any(part.startswith(".") for part in found.relative_to(p).parts)
            if not hidden and found.is_file():  # a FIFO named *.json would block the reader
                out.append(found)
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
    def read(
        cls,
        paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        on_error: Callable[[Path, ResultsError], None] | None = None,
    ) -> Results:
        """Every result file of ``paths``. A file that cannot be read raises, or, given
        ``on_error``, is reported to it and left out."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        runs = []
        for path in expand_paths(paths):
            try:
                runs.append((path, read_result(path)))
            except ResultsError as exc:
                if on_error is None:
                    raise
                on_error(path, exc)
        return cls(runs)

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
