"""The site's figures: matplotlib (Agg) drawn at build time as SVG, imported only here."""

from __future__ import annotations

import io
import math
from typing import Any

from ..correlate import format_ci
from .downstream import Headline
from .model import Board, Correlation


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text (smaller, selectable)
            "svg.hashsalt": "prh-bench",  # stable ids: the same data gives the same file
            "font.size": 9,
        }
    )
    return plt


def _tex_safe(text: str) -> str:
    """Matplotlib reads $...$ as mathtext; a model id is plain text."""
    return text.replace("\\", "\\\\").replace("$", r"\$")


LABEL_CHARS = 60  # a longer id is cut in a figure (the pages show it whole)


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def _label(text: str) -> str:
    """A figure's text: plain (not mathtext), and short enough to lay out."""
    return _tex_safe(_short(text))


def _scale(values: Any) -> tuple[Any, int]:
    """``values`` times 2**-e, exactly, with ``e`` > 0 only where they are so huge that
    matplotlib's axis limits would overflow; the axis labels multiply it back."""
    import numpy as np

    finite = values[np.isfinite(values)]
    largest = float(np.max(np.abs(finite))) if finite.size else 0.0
    if largest <= 2.0**500:
        return values, 0
    e = math.frexp(largest)[1]
    return np.ldexp(values, -e), e


def _unscaled_ticks(axis: Any, e: int) -> None:
    if e:
        from matplotlib.ticker import FuncFormatter

        def unscaled(v: float, _pos: Any) -> str:
            try:
                return f"{math.ldexp(v, e):.3g}"
            except OverflowError:  # a tick beyond the largest float: leave it unlabelled
                return ""

        axis.set_major_formatter(FuncFormatter(unscaled))


def _svg(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def draw_heatmap(board: Board) -> bytes:
    """The language x vision matrix of a board, each cell labelled with its score."""
    plt = _mpl()
    import numpy as np

    rows, cols = board.languages, board.visions
    data = np.array([[np.nan if x is None else x for x in row] for row in board.matrix], float)
    fig, ax = plt.subplots(
        figsize=(max(4.0, 1.1 * len(cols) + 3), max(2.5, 0.45 * len(rows) + 1.8))
    )
    shown, e = _scale(data)
    image = ax.imshow(np.ma.masked_invalid(shown), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), [_label(c) for c in cols], rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), [_label(r) for r in rows])
    finite = data[np.isfinite(data)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(data[i, j]):
                ax.text(
                    j,
                    i,
                    f"{data[i, j]:.3g}" if e else f"{data[i, j]:.3f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if data[i, j] > mid else "white",
                )
    ax.set_xlabel("vision model")
    ax.set_ylabel("language model")
    ax.set_title(_label(f"{board.metric.key} alignment, {board.dataset.label}"))
    colorbar = fig.colorbar(image, ax=ax, label=_label(board.metric.key))
    _unscaled_ticks(colorbar.ax.yaxis, e)
    return _svg(fig)


def draw_scatter(board: Board, corr: Correlation) -> bytes:
    """A downstream score's points (downstream score, alignment with its interval); the
    least-squares line and the correlation only where there are enough models for them (the
    correlation has a record)."""
    plt = _mpl()
    import numpy as np

    assert board.reference is not None
    points, name, rec = corr.points, corr.name, corr.record
    ids = sorted(points)
    rows = {r.model.id: r for r in board.language_rows}
    x, ex = _scale(np.array([points[m] for m in ids], float))
    y, ey = _scale(np.array([rows[m].value for m in ids], float))
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    _unscaled_ticks(ax.xaxis, ex)
    _unscaled_ticks(ax.yaxis, ey)
    _error_bars(ax, x, y, [rows[m].interval for m in ids], ey)
    ax.scatter(x, y, color="#3b6ea8", zorder=3)
    for xi, yi, m in zip(x, y, ids, strict=True):
        ax.annotate(_label(m), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if rec is not None and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 50)
        ax.plot(xs, slope * xs + intercept, color="#c0392b", label="least-squares fit")
        ax.legend(loc="best", fontsize=7)
    if rec is not None:
        stats = (
            f"Pearson r = {format_ci(rec.pearson, rec.pearson_ci, 2)}, "
            f"Spearman rho = {format_ci(rec.spearman, rec.spearman_ci, 2)}, n = {rec.n_models}"
        )
    else:
        stats = f"n = {len(ids)}: too few models for a fit line or a correlation"
    ax.set_title(
        _tex_safe(
            f"{board.metric.key} alignment to {_short(board.reference.id)} vs {_short(name)}\n"
            + stats
        ),
        fontsize=8,
    )
    ax.set_xlabel(_label(name) + (" (lower is better)" if corr.lower_is_better else ""))
    ax.set_ylabel(_label(f"alignment ({board.metric.key})"))
    ax.grid(alpha=0.3)
    return _svg(fig)


# --------------------------------------------------------------------------- reading aids

CHANCE_COLOUR = "#6b6b6b"
UNTRAINED_COLOUR = "#a0522d"


def _error_bars(ax: Any, x: Any, y: Any, intervals: list[Any], e: int, vertical: bool = True):
    """95 % intervals as error bars (in the axis's scaled units), where a point has one."""
    import numpy as np

    have = [i for i, ci in enumerate(intervals) if ci is not None]
    if not have:
        return
    lo = np.ldexp(np.array([intervals[i][0] for i in have], float), -e)
    hi = np.ldexp(np.array([intervals[i][1] for i in have], float), -e)
    at, mid = (x[have], y[have]) if vertical else (y[have], x[have])
    err = np.vstack([np.maximum(mid - lo, 0), np.maximum(hi - mid, 0)])
    style = {"fmt": "none", "ecolor": "#3b6ea8", "elinewidth": 1, "capsize": 3, "zorder": 2}
    if vertical:
        ax.errorbar(at, mid, yerr=err, **style)
    else:
        ax.errorbar(mid, at, xerr=err, **style)


def _reference_lines(ax: Any, board: Board, e: int, vertical: bool = False) -> None:
    """The chance level (shuffled-pairs null) and the untrained level (random-init control)
    as labelled lines: horizontal on a y axis of scores, vertical on an x axis of them."""
    import math

    for level, text, colour, style in (
        (board.chance, "chance (shuffled captions)", CHANCE_COLOUR, ":"),
        (board.untrained, "untrained (random-init control)", UNTRAINED_COLOUR, "--"),
    ):
        if level is None:
            continue
        at = math.ldexp(level, -e)
        label = f"{text}: {level:.3f}"
        if vertical:
            ax.axvline(at, color=colour, linestyle=style, linewidth=1.2, label=label)
        else:
            ax.axhline(at, color=colour, linestyle=style, linewidth=1.2, label=label)


def _labels_apart(ax: Any, x: Any, y: Any, labels: list[str], size: float = 7) -> None:
    """Each point's label to its right, moved up until it overlaps no label placed before
    (bottom to top, in display units), with a thin line back to its point when moved: where
    the best models cluster their labels would otherwise print over each other."""
    fig = ax.figure
    fig.canvas.draw()  # the axes' final limits: display positions are known from here
    px = fig.dpi / 72  # pixels per point
    height, pad = 1.3 * size * px, 4 * px
    placed: list[tuple[float, float, float]] = []  # left, right, bottom of each label
    order = sorted(range(len(labels)), key=lambda i: (y[i], x[i]))
    for i in order:
        left, bottom = ax.transData.transform((x[i], y[i]))
        left, bottom = left + pad, bottom - height / 2
        right = left + 0.6 * size * px * len(labels[i])  # about the width of the text
        for other_left, other_right, other_bottom in sorted(placed, key=lambda b: b[2]):
            overlaps = left < other_right and other_left < right
            if overlaps and abs(bottom - other_bottom) < height:
                bottom = other_bottom + height
        placed.append((left, right, bottom))
        _, point_y = ax.transData.transform((x[i], y[i]))
        lift = bottom + height / 2 - point_y
        ax.annotate(
            labels[i],
            (x[i], y[i]),
            xytext=(pad, lift),
            textcoords="offset pixels",
            va="center",
            fontsize=size,
            arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.5}
            if lift > height
            else None,
        )


def _legend_above(ax: Any) -> None:
    """The legend above the axes, where it covers no point."""
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=7, frameon=False)


def draw_headline(headline: Headline) -> bytes:
    """The front page's headline: alignment to the reference (with its 95 % interval) against
    bits per byte, the chance and untrained levels as lines, and a fit line only where there
    are enough models for the correlation."""
    plt = _mpl()
    import numpy as np

    board = headline.board
    assert board.reference is not None
    pts = headline.points
    x, ex = _scale(np.array([p.bpb for p in pts], float))
    values = [p.value for p in pts] + [v for v in (board.chance, board.untrained) if v is not None]
    _, ey = _scale(np.array(values, float))
    y = np.ldexp(np.array([p.value for p in pts], float), -ey)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _unscaled_ticks(ax.xaxis, ex)
    _unscaled_ticks(ax.yaxis, ey)
    _reference_lines(ax, board, ey)
    _error_bars(ax, x, y, [p.interval for p in pts], ey)
    ax.scatter(x, y, color="#3b6ea8", zorder=3, label="language model (95 % interval)")
    rec = headline.correlation.record if headline.correlation else None
    if rec is not None and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 50)
        fit = f"least-squares fit (r = {format_ci(rec.pearson, rec.pearson_ci, 2)})"
        ax.plot(xs, slope * xs + intercept, color="#c0392b", label=_tex_safe(fit))
    if min(values) >= 0:
        ax.set_ylim(bottom=0)
    ax.margins(x=0.2)  # room for the labels of the outermost points
    ax.set_xlabel("bits per byte (lower is the better language model)")
    ax.set_ylabel(_label(f"{board.metric.key} alignment to {board.reference.id}"))
    _legend_above(ax)
    _labels_apart(ax, x, y, [_label(f"{p.model} ({p.value:.3f})") for p in pts])
    ax.grid(alpha=0.3)
    return _svg(fig)


def draw_scale(board: Board) -> bytes:
    """The language models' scores on the metric's scale from 0, each with its 95 % interval,
    beside the chance and untrained levels: what a score means next to its floors."""
    plt = _mpl()
    import numpy as np

    rows = board.language_rows
    values = [r.value for r in rows] + [v for v in (board.chance, board.untrained) if v is not None]
    _, e = _scale(np.array(values, float))
    x = np.ldexp(np.array([r.value for r in rows], float), -e)
    y = np.arange(len(rows))[::-1].astype(float)  # the best at the top
    fig, ax = plt.subplots(figsize=(6.4, max(1.8, 0.32 * len(rows) + 1.3)))
    _unscaled_ticks(ax.xaxis, e)
    _reference_lines(ax, board, e, vertical=True)
    _error_bars(ax, x, y, [r.interval for r in rows], e, vertical=False)
    ax.scatter(x, y, color="#3b6ea8", zorder=3, label="score (95 % interval)")
    ax.set_yticks(y, [_label(r.model.id) for r in rows])
    if min(values) >= 0:
        ax.set_xlim(left=0)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(_label(f"{board.metric.key} alignment (0 = nothing in common)"))
    _legend_above(ax)
    ax.grid(alpha=0.3, axis="x")
    return _svg(fig)
