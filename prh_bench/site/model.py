"""What the pages show: datasets, boards and rows built from the merged results collection.

Scores are oriented language -> vision where a pair is cross-modal, so a board reads
``scores[(language model, vision model)]``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..correlate import (
    correlate_alignment,
    downstream_scores,
    is_control,
    largest,
    reference_matches,
)
from ..results import CorrelationRecord, DatasetResults, ModelRecord, Results, RunResult
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
                )
        out.append(ds)
    return out


def pick_reference(ds: Dataset, pattern: str) -> ModelRecord | None:
    """The vision model ``pattern`` names in ``ds``; of several matches, the largest."""
    return largest(reference_matches(ds.models.values(), pattern))


def control_for(ds: Dataset, model: ModelRecord) -> ModelRecord | None:
    """The random-init control of a model: id ``<model>.random`` (or -random, _random), else
    the control of the same family and size."""
    controls = [m for m in ds.models.values() if is_control(m) and m.modality == model.modality]
    for m in controls:
        if re.sub(r"[._-](random|random-init|rand|init)$", "", m.id) == model.id:
            return m
    same = [m for m in controls if m.family == model.family and m.parameters == model.parameters]
    return same[0] if len(same) == 1 else None


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


@dataclass
class Correlation:
    """A correlation record (the result schema's) as the downstream page shows it."""

    record: CorrelationRecord
    figure: str  # "" for a saved correlation: its points are not in the results
    lower_is_better: bool
    points: dict[str, float]  # language model -> downstream value
    saved_in: str | None = None  # the run whose file holds it (``prh-bench correlate --save``)


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
    correlations: list[Correlation] = field(default_factory=list)
    correlation_note: str = ""
    heatmap: str = ""


def _row(
    rank: int, model: ModelRecord, scores: list[Score], control: list[Score], ctrl_id: str | None
) -> Row:
    nulls = [s.null_mean for s in scores if s.null_mean is not None]
    stds = [s.null_std for s in scores if s.null_std is not None]
    ps = [s.p_value for s in scores if s.p_value is not None]
    one = len(scores) == 1
    layers = f"{scores[0].layer_a}, {scores[0].layer_b}" if one else f"{len(scores)} pairs"
    return Row(
        rank=rank,
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
    )


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
        ctrl = control_for(ds, models[v]) if not is_control(models[v]) else None
        ctrl_scores = [
            scores[(s.model_a, ctrl.id)] for s in mine if ctrl and (s.model_a, ctrl.id) in scores
        ]
        vision_rows.append(_row(0, models[v], mine, ctrl_scores, ctrl.id if ctrl else None))
    vision_rows.sort(key=lambda r: (-r.value, r.model.id))
    for i, r in enumerate(vision_rows, 1):
        r.rank = i
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
                    0,
                    models[lm],
                    [scores[(lm, reference.id)]],
                    ctrl,
                    ref_ctrl.id if ref_ctrl else None,
                )
            )
    language_rows.sort(key=lambda r: (-r.value, r.model.id))
    for i, r in enumerate(language_rows, 1):
        r.rank = i
    # the matrix: language models (best first) x vision models (best first)
    row_ids = [r.model.id for r in language_rows] + [
        lm
        for lm in languages
        if lm not in {r.model.id for r in language_rows} and any((lm, v) in scores for v in visions)
    ]
    col_ids = [r.model.id for r in vision_rows]
    matrix = [
        [scores[(a, b)].value if (a, b) in scores else None for b in col_ids] for a in row_ids
    ]
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
    )


def add_correlations(board: Board, resamples: int) -> None:
    """Correlate alignment to the reference with each downstream score known for >= 3 of the
    ranked language models (``prh_bench.correlate``, the same function as ``correlate``)."""
    if board.reference is None:
        board.correlation_note = "No reference vision model: nothing to correlate."
        return
    alignment = {r.model.id: r.value for r in board.language_rows}
    downstream = {r.model.id: downstream_scores(r.model) for r in board.language_rows}
    records = correlate_alignment(
        alignment, downstream, board.reference.id, board.metric.key, resamples=resamples
    )
    for record in records:
        name = record.downstream
        board.correlations.append(
            Correlation(
                record=record,
                figure=f"figures/scatter-{board.slug}-{slug(name)}.svg",
                lower_is_better=_lower_is_better(name),
                points={m: downstream[m][name] for m in record.models},
            )
        )
    board.correlations += saved_correlations(board, {r.downstream for r in records})
    if not board.correlations:
        board.correlation_note = (
            f"A correlation needs a downstream score (bpb, HellaSwag, ...) for at least 3 of "
            f"the language models ranked against {board.reference.id}; "
            f"{len(board.language_rows)} are ranked and none has enough downstream scores."
        )


def _lower_is_better(name: str) -> bool:
    return name == "bpb" or name.endswith("bpb") or "perplexity" in name


def saved_correlations(board: Board, computed: set[str]) -> list[Correlation]:
    """Correlations ``prh-bench correlate --save`` stored in the board's runs, for its
    reference and metric, of downstream scores the site does not know itself (they came from
    a ``--downstream`` CSV); of several runs, the latest one's record of a name wins."""
    if board.reference is None:
        return []
    found: dict[str, Correlation] = {}
    for run in board.dataset.runs:  # oldest first
        for c in run.correlations:
            same = c.vision_model == board.reference.id and c.metric == board.metric.key
            if not same or c.downstream in computed:
                continue
            found[c.downstream] = Correlation(
                record=c,
                figure="",
                lower_is_better=_lower_is_better(c.downstream),
                points={},
                saved_in=run.run_id,
            )
    return [found[name] for name in sorted(found)]


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
                            "run_id": s.run_id,
                        }
                    )
            ranks = [
                {"board": b, "rank": r.rank, "total": len(rows_), "kind": kind}
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
