"""Alignment against downstream quality: the downstream page's points and correlations, and
the front page's headline (alignment to the reference against bits per byte).

At small numbers of models a correlation says little and a fit line says less: every point is
shown with its value, the models left out are listed with the reason, and the correlation (its
fit line and intervals) is shown only from ``correlation_min_models`` models on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..correlate import correlate_alignment, downstream_scores, format_ci, is_control
from ..storage import slug
from .model import Board, Correlation


def lower_is_better(name: str) -> bool:
    return name == "bpb" or name.endswith("bpb") or "perplexity" in name


def add_correlations(board: Board, resamples: int, min_models: int) -> None:
    """One ``Correlation`` per downstream score any trained language model of the dataset
    has: the ranked models' points, the others with the reason they are left out, and a
    correlation record (``prh_bench.correlate``, as ``prh-bench correlate`` computes it)
    only from ``min_models`` points on."""
    if board.reference is None:
        board.correlation_note = "No reference vision model: nothing to correlate."
        return
    ref, metric = board.reference.id, board.metric.key
    alignment = {r.model.id: r.value for r in board.language_rows if not r.is_control}
    language = sorted(
        (m for m in board.dataset.models.values() if m.modality == "language"), key=lambda m: m.id
    )
    values = {m.id: downstream_scores(m) for m in language}
    names = sorted({n for m in language if not is_control(m) for n in values[m.id]})
    for name in names:
        points = {m: values[m][name] for m in sorted(alignment) if name in values[m]}
        dropped = [
            (m.id, _why_dropped(m.id, is_control(m), name, alignment, values, board))
            for m in language
            if m.id not in points
        ]
        record = None
        if len(points) >= min_models:
            [record] = correlate_alignment(
                {m: alignment[m] for m in points},
                {m: {name: v} for m, v in points.items()},
                ref,
                metric,
                resamples=resamples,
            )
        board.correlations.append(
            Correlation(
                name=name,
                lower_is_better=lower_is_better(name),
                points=points,
                record=record,
                figure=f"figures/scatter-{board.slug}-{slug(name)}.svg" if points else "",
                dropped=dropped,
            )
        )
    board.correlations += saved_correlations(board, set(names), min_models)
    if not board.correlations:
        board.correlation_note = (
            f"None of the {len(language)} language models of {board.dataset.label} has a "
            "downstream score (bpb, HellaSwag, ...), so there is nothing to plot. prh-bench run "
            "measures bpb for causal language models; other scores come with "
            "'prh-bench run --downstream scores.csv' (model,metric,value[,source])."
        )


def _why_dropped(
    model: str,
    control: bool,
    name: str,
    alignment: dict[str, float],
    values: dict[str, dict[str, float]],
    board: Board,
) -> str:
    if control:
        return "a random-init control (a floor, not a model of some quality)"
    has = name in values[model]
    if model not in alignment:
        assert board.reference is not None
        missing = f"no {board.metric.key} score against {board.reference.id}"
        return missing + (f" (its {name} is {values[model][name]:.3f})" if has else f", no {name}")
    return f"no {name} value"


def saved_correlations(board: Board, computed: set[str], min_models: int) -> list[Correlation]:
    """Correlations ``prh-bench correlate --save`` stored in the board's runs, for its
    reference and metric, of downstream scores the site does not know itself (they came from
    a ``--downstream`` CSV); of several runs, the latest one's record of a name wins. One of
    fewer than ``min_models`` models is listed without its statistics."""
    if board.reference is None:
        return []
    found: dict[str, Correlation] = {}
    for run in board.dataset.runs:  # oldest first
        for c in run.correlations:
            same = c.vision_model == board.reference.id and c.metric == board.metric.key
            if not same or c.downstream in computed:
                continue
            found[c.downstream] = Correlation(
                name=c.downstream,
                lower_is_better=lower_is_better(c.downstream),
                points={},  # the file keeps the statistics, not the points
                record=c if c.n_models >= min_models else None,
                saved_in=run.run_id,
                saved_models=list(c.models),
            )
    return [found[name] for name in sorted(found)]


@dataclass
class Point:
    model: str
    family: str
    bpb: float
    value: float
    interval: tuple[float, float] | None


@dataclass
class Headline:
    """The paper's headline on the front page: each language model's alignment to the reference
    vision model against its bits per byte (lower is a better language model)."""

    board: Board
    points: list[Point]  # the ranked language models with a bpb, best bpb first
    ranked: int  # trained language models with a score against the reference
    min_models: int
    correlation: Correlation | None  # the bpb correlation, where it has a record
    figure: str = ""
    without_bpb: list[str] = field(default_factory=list)

    @property
    def shown(self) -> bool:
        return len(self.points) >= 2

    @property
    def finding(self) -> str:
        """What the figure shows, in words and numbers (its alt text and caption)."""
        board = self.board
        assert board.reference is not None
        what = (
            f"{board.metric.key} alignment to {board.reference.id} against bits per byte for "
            f"{len(self.points)} language models"
        )
        rec = self.correlation.record if self.correlation else None
        if rec is not None:
            trend = "falls" if (rec.pearson or 0) < 0 else "rises"
            return (
                f"{what}: Pearson r = {format_ci(rec.pearson, rec.pearson_ci, 2)}, Spearman "
                f"rho = {format_ci(rec.spearman, rec.spearman_ci, 2)}; alignment {trend} as "
                "bpb rises (lower bpb is the better language model)."
            )
        each = "; ".join(f"{p.model} {p.value:.3f} at {p.bpb:.2f} bpb" for p in self.points)
        return (
            f"{what}: {each}. No fit line: a correlation is shown from {self.min_models} models "
            f"on, and {len(self.points)} have a bpb."
        )


def make_headline(board: Board, min_models: int) -> Headline:
    trained = [r for r in board.language_rows if not r.is_control]  # a control is a floor
    points = [
        Point(r.model.id, r.model.family, r.model.bpb, r.value, r.interval)
        for r in trained
        if r.model.bpb is not None
    ]
    points.sort(key=lambda p: (p.bpb, p.model))
    bpb = next((c for c in board.correlations if c.name == "bpb" and c.record), None)
    return Headline(
        board=board,
        points=points,
        ranked=len(trained),
        min_models=min_models,
        correlation=bpb,
        figure=f"figures/headline-{board.slug}.svg" if len(points) >= 2 else "",
        without_bpb=[r.model.id for r in trained if r.model.bpb is None],
    )
