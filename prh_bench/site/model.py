"""What the pages show: datasets, boards and rows built from the merged results collection.

Scores are oriented language -> vision where a pair is cross-modal, so a board reads
``scores[(language model, vision model)]``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..correlate import is_control, largest, reference_matches
from ..results import (
    CorrelationRecord,
    DatasetResults,
    ModelRecord,
    NullRecord,
    Results,
    RunResult,
)
from ..stats import Z95, at_floor, jackknife_factor, rank_ranges
from ..storage import slug


@dataclass
class Score:
    """One score, oriented language -> vision where the pair is cross-modal."""

    model_a: str
    model_b: str
    value: float
    layer_a: int
    layer_b: int
    null_mean: float | None
    null_std: float | None
    p_value: float | None
    run_id: str
    # the statistics of the run (None where the run has none: version 1, --replicates 0)
    permutations: int | None = None
    at_floor: bool = False  # no permutation reached the score: p <= 1 / (permutations + 1)
    interval: tuple[float, float] | None = None
    honest: float | None = None
    replicates: list[float] = field(default_factory=list)
    # the half-samples the replicates were scored on (stats.half_samples of N, the number of
    # replicates and the seed, on the same samples): equal keys, equal subsets
    subsets: tuple[Any, ...] | None = None


@dataclass
class Metric:
    key: str  # name, plus its parameters where one dataset holds several settings of it
    name: str
    params: dict[str, Any]
    slug: str


@dataclass
class Dataset:
    """One (dataset, N) of the collection, as the site names and links it."""

    merged: DatasetResults
    key: str
    label: str
    slug: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    scores: dict[str, dict[tuple[str, str], Score]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # run id -> its copy under data/runs/

    @property
    def id(self) -> str:
        return self.merged.dataset.id

    @property
    def n(self) -> int:
        return self.merged.dataset.n

    @property
    def revision(self) -> str:
        return self.merged.dataset.revision

    @property
    def content_hash(self) -> str:
        return self.merged.dataset.content_hash

    @property
    def models(self) -> dict[str, ModelRecord]:
        return self.merged.models

    @property
    def runs(self) -> list[RunResult]:
        return [run for _, run in self.merged.runs]


def make_datasets(results: Results) -> list[Dataset]:
    """The collection's (dataset, N) entries with site names; metrics are named by their plain
    name unless one dataset holds several settings of it."""
    merged = results.by_dataset()
    sizes: dict[str, int] = {}
    for entry in merged:
        sizes[entry.dataset.id] = sizes.get(entry.dataset.id, 0) + 1
    out = []
    for entry in merged:
        ident, n = entry.dataset.id, entry.dataset.n
        ds = Dataset(
            merged=entry,
            key=f"{ident}@{n}",
            label=ident if sizes[ident] == 1 else f"{ident} (N={n})",
            slug=slug(ident) + f"-n{n}",
        )
        ds.files = {run.run_id: f"data/runs/{ds.slug}/{slug(run.run_id)}.json" for run in ds.runs}
        by_name: dict[str, int] = {}
        for name, _ in entry.scores:
            by_name[name] = by_name.get(name, 0) + 1
        for (name, _), scores in sorted(entry.scores.items()):
            params = next(iter(scores.values()))[0].params
            text = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
            key = name if by_name[name] == 1 or not text else f"{name}({text})"
            ds.metrics[key] = Metric(key, name, params, slug(key))
            ds.scores[key] = {}
            for score, run in scores.values():
                a, b = score.model_a, score.model_b
                la, lb = score.best_index
                ma, mb = entry.models.get(a), entry.models.get(b)
                if ma and mb and ma.modality == "vision" and mb.modality == "language":
                    a, b, la, lb = b, a, lb, la  # language first
                null = score.null
                ds.scores[key][(a, b)] = Score(
                    model_a=a,
                    model_b=b,
                    value=score.value,
                    layer_a=la,
                    layer_b=lb,
                    null_mean=null.mean if null else None,
                    null_std=null.std if null else None,
                    p_value=null.p_value if null else None,
                    run_id=run.run_id,
                    permutations=null.permutations if null else None,
                    at_floor=_at_floor(null),
                    interval=score.interval,
                    honest=score.honest,
                    replicates=list(score.replicates),
                    subsets=_subsets(run) if score.replicates else None,
                )
        out.append(ds)
    return out


def _subsets(run: RunResult) -> tuple[Any, ...]:
    d = run.dataset
    return (d.n, run.replicates, run.config.get("seed"), d.content_hash)


def _at_floor(null: NullRecord | None) -> bool:
    """Whether no permutation reached the score (schema-2 files say it; older ones by p)."""
    if null is None:
        return False
    return null.at_floor if null.at_floor is not None else at_floor(null.p_value, null.permutations)


def pick_reference(ds: Dataset, pattern: str) -> ModelRecord | None:
    """The vision model ``pattern`` names in ``ds``; of several matches, the largest."""
    return largest(reference_matches(ds.models.values(), pattern))


def _belongs(control: ModelRecord, model: ModelRecord) -> bool:
    if control.control_of is not None:  # schema 3: the adapter says whose control it is
        return control.control_of == model.id
    # older files: the id is the model's plus a suffix
    return _CONTROL_SUFFIX.sub("", control.id) == model.id


_CONTROL_SUFFIX = re.compile(r"[._-](random|random-init|rand|init)$")


def controls_of(ds: Dataset, model: ModelRecord) -> list[ModelRecord]:
    """The random-init controls of ``model`` in ``ds``, by id: those whose ``control_of``
    names it (schema 3), or, in files that predate that field, whose id is the model's plus
    ``.random`` (or -random, _random, .rand, .init). Never a guess by family or size: two
    models of one size are not the same network."""
    return sorted(
        (
            m
            for m in ds.models.values()
            if is_control(m) and m.modality == model.modality and _belongs(m, model)
        ),
        key=lambda m: m.id,
    )


def owner_of(ds: Dataset, control: ModelRecord) -> str | None:
    """The trained model a control belongs to: its ``control_of``, or (older files) the
    model of ``ds`` whose id it extends; None for a model that is not a control."""
    if not is_control(control):
        return None
    if control.control_of is not None:
        return control.control_of
    base = _CONTROL_SUFFIX.sub("", control.id)
    return base if base != control.id and base in ds.models else None


def control_for(ds: Dataset, model: ModelRecord) -> ModelRecord | None:
    """The random-init control the boards compare ``model`` with (the first of
    ``controls_of``), or None."""
    if is_control(model):
        return None
    found = controls_of(ds, model)
    return found[0] if found else None


def _mean(values: list[float]) -> float | None:
    if not values:
        return None
    mean = sum(values) / len(values)
    # huge scores overflow the sum; dividing first keeps the mean finite
    return mean if math.isfinite(mean) else sum(v / len(values) for v in values)


def heat_bin(x: float, lo: float, hi: float) -> int:
    """The colour bin 0..9 of ``x`` in [lo, hi] (halved first: hi - lo may overflow)."""
    if not hi > lo:
        return 5
    return max(0, min(9, int(10 * ((x / 2 - lo / 2) / (hi / 2 - lo / 2)))))


@dataclass
class Row:
    rank: int
    model: ModelRecord
    slug: str
    value: float
    null_mean: float | None
    null_std: float | None
    p_value: float | None
    control: float | None
    control_model: str | None
    layers: str  # "language layer, vision layer" (vision rows: mean over language models)
    n: int  # how many scores the value summarises
    is_control: bool
    # uncertainty (None where the runs have none)
    interval: tuple[float, float] | None = None
    honest: float | None = None
    rank_range: tuple[int, int] | None = None  # among this table's rows, at 95 %
    permutations: int | None = None
    at_floor: bool = False
    replicates: list[float] = field(default_factory=list)
    subsets: tuple[Any, ...] | None = None


@dataclass
class Correlation:
    """One downstream score against alignment, as the downstream page shows it: every point
    with its value, the ranked models left out and why, and the correlation record only where
    enough models have the score (``correlation_min_models``)."""

    name: str
    lower_is_better: bool
    points: dict[str, float]  # language model -> downstream value
    record: CorrelationRecord | None  # None: too few models for a correlation
    figure: str = ""  # "" for a saved correlation: its points are not in the results
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (model, why)
    saved_in: str | None = None  # the run whose file holds it (``prh-bench correlate --save``)
    saved_models: list[str] = field(default_factory=list)  # the models of a saved correlation


@dataclass
class Board:
    """Everything shown for one (dataset, metric)."""

    dataset: Dataset
    metric: Metric
    slug: str
    reference: ModelRecord | None
    reference_control: ModelRecord | None
    reference_note: str
    language_rows: list[Row]
    vision_rows: list[Row]
    languages: list[str]  # matrix rows, best first
    visions: list[str]  # matrix columns, best first
    matrix: list[list[float | None]]
    heat: list[list[int | None]]  # colour bins 0..9 of the matrix cells
    intervals: list[list[tuple[float, float] | None]] = field(default_factory=list)
    correlations: list[Correlation] = field(default_factory=list)
    correlation_note: str = ""
    heatmap: str = ""
    scale_figure: str = ""

    @property
    def chance(self) -> float | None:
        """The chance level: the mean shuffled-pairs null of the (trained) language models'
        scores."""
        nulls = [
            r.null_mean for r in self.language_rows if r.null_mean is not None and not r.is_control
        ]
        return _mean(nulls) if nulls else None

    @property
    def untrained(self) -> float | None:
        """The untrained level: the (trained) language models' mean score against the
        reference's random-init control."""
        controls = [
            r.control for r in self.language_rows if r.control is not None and not r.is_control
        ]
        return _mean(controls) if controls else None

    @property
    def permutations(self) -> int | None:
        """The number of shuffles behind the language rows' p-values (None: none, or several)."""
        found = {r.permutations for r in self.language_rows if r.permutations}
        return found.pop() if len(found) == 1 else None

    def value_of(self, model_id: str) -> float | None:
        """A language model's score against the reference (None: it has none)."""
        return next((r.value for r in self.language_rows if r.model.id == model_id), None)


def _combined(scores: list[Score]) -> tuple[list[float], tuple[float, float] | None]:
    """The replicates and 95 % interval of the mean of ``scores``: the mean on each shared
    half-sample, spread as ``prh_bench.stats`` spreads one score. Empty and None unless all
    were scored on the same subsets."""
    keys = {s.subsets for s in scores}
    if len(keys) != 1 or None in keys:
        return [], None
    reps = [_mean(list(col)) or 0.0 for col in zip(*(s.replicates for s in scores), strict=True)]
    value = _mean([s.value for s in scores]) or 0.0
    if len(reps) < 2:
        return reps, None
    centre = _mean(reps) or 0.0
    sd = math.sqrt(sum((r - centre) ** 2 for r in reps) / (len(reps) - 1))
    se = jackknife_factor(scores[0].subsets[0]) * sd  # type: ignore[index]
    interval = (value - Z95 * se, value + Z95 * se)
    # scores near the float range's ends overflow the spread: no interval rather than inf
    return reps, interval if all(map(math.isfinite, interval)) else None


def _row(model: ModelRecord, scores: list[Score], control: list[Score], ctrl_id: str | None) -> Row:
    nulls = [s.null_mean for s in scores if s.null_mean is not None]
    stds = [s.null_std for s in scores if s.null_std is not None]
    ps = [s.p_value for s in scores if s.p_value is not None]
    honest = [s.honest for s in scores if s.honest is not None]
    one = len(scores) == 1
    layers = f"{scores[0].layer_a}, {scores[0].layer_b}" if one else f"{len(scores)} pairs"
    if one:
        replicates, interval = scores[0].replicates, scores[0].interval
    else:
        replicates, interval = _combined(scores)
    perms = {s.permutations for s in scores}
    # the largest p is at the floor only if every p is, with the same B
    floor = len(perms) == 1 and all(s.at_floor for s in scores)
    return Row(
        rank=0,
        model=model,
        slug=slug(model.id),
        value=_mean([s.value for s in scores]) or 0.0,
        null_mean=_mean(nulls) if len(nulls) == len(scores) else None,
        null_std=_mean(stds) if len(stds) == len(scores) else None,
        p_value=ps[0] if one and ps else (max(ps) if len(ps) == len(scores) else None),
        control=_mean([s.value for s in control]) if control else None,
        control_model=ctrl_id if control else None,
        layers=layers,
        n=len(scores),
        is_control=is_control(model),
        interval=interval,
        honest=_mean(honest) if len(honest) == len(scores) else None,
        permutations=next(iter(perms)) if len(perms) == 1 else None,
        at_floor=floor,
        replicates=replicates,
        subsets=scores[0].subsets if replicates else None,
    )


def rank(rows: list[Row]) -> None:
    """Sort rows best first, number them, and give each its 95 % rank range among them
    (``prh_bench.stats.rank_ranges``, from the replicates, when every row was scored on the
    same half-samples; otherwise none)."""
    rows.sort(key=lambda r: (-r.value, r.model.id))
    for i, r in enumerate(rows, 1):
        r.rank = i
    keys = {r.subsets for r in rows}
    if len(rows) < 2 or len(keys) != 1 or None in keys:
        for r in rows:
            r.rank_range = (1, 1) if len(rows) == 1 and r.replicates else None
        return
    ranges = rank_ranges(
        {r.model.id: r.value for r in rows},
        {r.model.id: r.replicates for r in rows},
        rows[0].subsets[0],  # type: ignore[index]
    )
    for r in rows:
        r.rank_range = ranges[r.model.id]


def make_board(ds: Dataset, metric: Metric, reference_pattern: str) -> Board:
    scores = ds.scores[metric.key]
    models = ds.models
    languages = sorted(m for m in models if models[m].modality == "language")
    visions = sorted(m for m in models if models[m].modality == "vision")
    reference = pick_reference(ds, reference_pattern)
    note = ""
    if reference is None:  # fall back to the best-aligned trained vision model
        note = (
            f"No vision model of this dataset matches '{reference_pattern}'; "
            "ranking against the trained vision model with the highest mean alignment."
        )
    # vision models: mean over the language models each was scored with
    vision_rows: list[Row] = []
    for v in visions:
        mine = [scores[(lm, v)] for lm in languages if (lm, v) in scores]
        if not mine:
            continue
        ctrl = control_for(ds, models[v])
        ctrl_scores = [
            scores[(s.model_a, ctrl.id)] for s in mine if ctrl and (s.model_a, ctrl.id) in scores
        ]
        vision_rows.append(_row(models[v], mine, ctrl_scores, ctrl.id if ctrl else None))
    rank(vision_rows)
    for r in vision_rows:
        if r.n > 1:
            r.layers = f"mean of {r.n}"
    if reference is None:
        trained = [r.model for r in vision_rows if not r.is_control]
        reference = trained[0] if trained else None
    ref_ctrl = control_for(ds, reference) if reference else None
    language_rows: list[Row] = []
    if reference is not None:
        for lm in languages:
            if (lm, reference.id) not in scores:
                continue
            ctrl = [scores[(lm, ref_ctrl.id)]] if ref_ctrl and (lm, ref_ctrl.id) in scores else []
            language_rows.append(
                _row(
                    models[lm],
                    [scores[(lm, reference.id)]],
                    ctrl,
                    ref_ctrl.id if ref_ctrl else None,
                )
            )
    rank(language_rows)
    # the matrix: language models (best first) x vision models (best first)
    row_ids = [r.model.id for r in language_rows] + [
        lm
        for lm in languages
        if lm not in {r.model.id for r in language_rows} and any((lm, v) in scores for v in visions)
    ]
    col_ids = [r.model.id for r in vision_rows]
    cells = [[scores.get((a, b)) for b in col_ids] for a in row_ids]
    matrix = [[None if s is None else s.value for s in row] for row in cells]
    present = [x for row in matrix for x in row if x is not None]
    lo, hi = (min(present), max(present)) if present else (0.0, 1.0)
    heat = [[None if x is None else heat_bin(x, lo, hi) for x in row] for row in matrix]
    return Board(
        dataset=ds,
        metric=metric,
        slug=f"{ds.slug}-{metric.slug}",
        reference=reference,
        reference_control=ref_ctrl,
        reference_note=note,
        language_rows=language_rows,
        vision_rows=vision_rows,
        languages=row_ids,
        visions=col_ids,
        matrix=matrix,
        heat=heat,
        intervals=[[None if s is None else s.interval for s in row] for row in cells],
    )


def default_board(boards: list[Board], default_dataset: str | None, default_metric: str) -> Board:
    """The front page's board: the default dataset and metric, else the most models."""

    def score(b: Board) -> tuple[int, int, int]:
        ds_match = default_dataset in (b.dataset.id, b.dataset.key, b.dataset.label)
        metric_match = default_metric in (b.metric.name, b.metric.key)
        return int(ds_match), int(metric_match), len(b.dataset.models)

    return max(boards, key=score)


@dataclass
class ModelEntry:
    """One model across every dataset it appears in."""

    id: str
    slug: str
    record: ModelRecord  # the latest record
    appearances: list[dict[str, Any]]  # per dataset: dataset, record, runs, scores
    downstream: list[dict[str, Any]]


def model_entries(datasets: list[Dataset], boards: list[Board]) -> list[ModelEntry]:
    entries: dict[str, ModelEntry] = {}
    for ds in datasets:
        for mid, record in ds.models.items():
            entry = entries.setdefault(mid, ModelEntry(mid, slug(mid), record, [], []))
            entry.record = record
            rows = []
            for key, scores in ds.scores.items():
                for (a, b), s in sorted(scores.items(), key=lambda kv: -kv[1].value):
                    if mid not in (a, b):
                        continue
                    mine, other = (s.layer_a, s.layer_b) if mid == a else (s.layer_b, s.layer_a)
                    partner = b if mid == a else a
                    prec = ds.models.get(partner)
                    rows.append(
                        {
                            "metric": key,
                            "partner": partner,
                            "partner_slug": slug(partner),
                            "value": s.value,
                            "layer": mine,
                            "depth": mine / (record.num_layers - 1)
                            if record.num_layers > 1
                            else 1.0,
                            "partner_layer": other,
                            "partner_layers": prec.num_layers if prec else None,
                            "null_mean": s.null_mean,
                            "p_value": s.p_value,
                            "permutations": s.permutations,
                            "at_floor": s.at_floor,
                            "interval": s.interval,
                            "honest": s.honest,
                            "run_id": s.run_id,
                        }
                    )
            ranks = [
                {
                    "board": b,
                    "rank": r.rank,
                    "rank_range": r.rank_range,
                    "total": len(rows_),
                    "kind": kind,
                }
                for b in boards
                if b.dataset is ds
                for kind, rows_ in (("language", b.language_rows), ("vision", b.vision_rows))
                for r in rows_
                if r.model.id == mid
            ]
            entry.appearances.append(
                {
                    "dataset": ds,
                    "record": record,
                    "runs": [r for r in ds.runs if any(m.id == mid for m in r.models)],
                    "scores": rows,
                    "ranks": ranks,
                }
            )
    for entry in entries.values():
        seen: dict[str, dict[str, Any]] = {}
        rec = entry.record
        if rec.bpb is not None:
            seen["bpb"] = {"name": "bpb", "value": rec.bpb, "source": "measured by prh-bench"}
        for name, d in rec.downstream.items():
            seen[name] = {"name": name, "value": d.value, "source": d.source}
        entry.downstream = [seen[k] for k in sorted(seen)]
    return sorted(entries.values(), key=lambda e: (e.record.modality, e.id))
