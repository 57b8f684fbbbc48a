"""The site's figures: matplotlib (Agg) drawn at build time as SVG, imported only here.

Every figure is drawn :data:`FIGURE_WIDTH` inches wide with :data:`FONT_SIZE` point text, so
that shown 366 px wide (a 390 px phone, less the page margins) its smallest text is still
10 px: 11 pt * 366 / (5.2 in * 72 pt/in) = 10.8 px, a little less where tick labels widen the
saved figure (10.2 px measured for a 15 x 12 heatmap). The scale figure sits inside the
reading panel, 31 px narrower (its border and padding), so it is drawn :data:`PANEL_FIGURE_WIDTH`
wide: 11 pt * 335 / (4.8 in * 72 + 8) = 10.4 px. Nothing may stick out of a figure's frame
(saving widens the figure to take it in): long axis labels take two lines, legends one column.
Alt texts that state what each figure
shows (:func:`heatmap_alt`, :func:`scatter_alt`) live here too, beside the drawing they describe.
"""

from __future__ import annotations

import io
import math
from typing import Any

from ..correlate import format_ci
from .downstream import Headline
from .model import Board, Correlation

FIGURE_WIDTH = 5.2  # inches
FONT_SIZE = 11  # points
PANEL_FIGURE_WIDTH = 4.8  # inches, for a figure in the reading panel

# The one colour scale of the matrix page, light (low) to dark (high): the heatmap's cells and
# the number table's (site.css .h0-.h9, the same hex values) take bin i's colour.
HEAT_COLOURS = (
    "#eff6fc",
    "#ddeaf7",
    "#ccdff1",
    "#b3d3e8",
    "#94c4df",
    "#6aaed6",
    "#2373b6",
    "#135fa7",
    "#08488e",
    "#08306b",
)
TEXT_DARK = "#1d2330"  # the site's text colour
# families: colour-blind-safe colours (Okabe-Ito, darkened where needed for 3:1 on white),
# each with its own marker so the legend reads without colour too
FAMILY_COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#8a6d00", "#56b4e9", "#1d2330")
FAMILY_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text (smaller, selectable)
            "svg.hashsalt": "prh-bench",  # stable ids: the same data gives the same file
            "font.size": FONT_SIZE,
            "axes.titlesize": FONT_SIZE,
            "axes.labelsize": FONT_SIZE,
            "xtick.labelsize": FONT_SIZE,
            "ytick.labelsize": FONT_SIZE,
            "legend.fontsize": FONT_SIZE,
            "legend.title_fontsize": FONT_SIZE,
        }
    )
    return plt


def luminance(colour: str) -> float:
    """WCAG 2 relative luminance of a ``#rrggbb`` colour."""

    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two ``#rrggbb`` colours (1 to 21)."""
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def text_colour(background: str) -> str:
    """Dark or white text, whichever contrasts more with ``background``."""
    return max((TEXT_DARK, "#ffffff"), key=lambda fg: contrast(fg, background))


def _tex_safe(text: str) -> str:
    """Matplotlib reads $...$ as mathtext; a model id is plain text."""
    return text.replace("\\", "\\\\").replace("$", r"\$")


LABEL_CHARS = 26  # a longer name is cut in a figure (the pages show it whole)


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    """``text`` cut to ``limit`` characters, keeping its end (``….random`` tells a control)."""
    return text if len(text) <= limit else text[: limit - 6] + "…" + text[-5:]


def _label(text: str, limit: int = LABEL_CHARS) -> str:
    """A figure's text: plain (not mathtext), and short enough to lay out."""
    return _tex_safe(_short(text, limit))


def short_names(ids: list[str]) -> list[str]:
    """Figure labels for model ids: a long id loses its ``org/`` prefix and is cut to
    LABEL_CHARS, unless that makes two labels the same (then every id is only cut)."""
    for name in (lambda i: i if len(i) <= LABEL_CHARS else i.rsplit("/", 1)[-1], lambda i: i):
        labels = [_label(name(i)) for i in ids]
        if len(set(labels)) == len(set(ids)):
            return labels
    return labels


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


def _number(x: float) -> str:
    """A score as text: three decimals, or three significant digits when far from 1."""
    return f"{x:.3f}" if x == 0 or 1e-3 <= abs(x) < 1e4 else f"{x:.3g}"


def draw_heatmap(board: Board) -> bytes:
    """The language x vision matrix of a board in the page's colour scale (``board.heat``,
    the bins the number table uses), each cell labelled with its score where it fits."""
    plt = _mpl()
    import numpy as np
    from matplotlib.colors import BoundaryNorm, ListedColormap

    rows, cols = board.languages, board.visions
    data = np.array([[np.nan if x is None else x for x in row] for row in board.matrix], float)
    bins = np.array([[np.nan if b is None else b for b in row] for row in board.heat], float)
    row_labels, col_labels = short_names(rows), short_names(cols)
    longest_col = max((len(c) for c in col_labels), default=1)
    steep = len(cols) > 4  # many columns: upright names take the least width
    # points: a row per 18, the column names below, title and colour bar above and below
    height = 18 * len(rows) + longest_col * FONT_SIZE * (0.62 if steep else 0.45) + 150
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, height / 72), layout="constrained")
    palette = ListedColormap(list(HEAT_COLOURS))
    ax.pcolormesh(
        np.ma.masked_invalid(bins),
        cmap=palette,
        norm=BoundaryNorm(np.arange(-0.5, 10), palette.N),
        edgecolors="#ffffff",
        linewidth=0.5,
    )
    ax.invert_yaxis()  # the best language model on top, as in the table
    ax.set_xticks(np.arange(len(cols)) + 0.5, col_labels)
    ax.tick_params(axis="x", labelrotation=90 if steep else 45)
    if not steep:
        for tick in ax.get_xticklabels():
            tick.set_ha("right")
            tick.set_rotation_mode("anchor")
    ax.set_yticks(np.arange(len(rows)) + 0.5, row_labels)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xlabel("vision model")
    ax.set_ylabel("language model")
    ax.set_title(_label(f"{board.metric.key} alignment, {board.dataset.label}", 44))
    shown, e = _scale(data)
    finite = shown[np.isfinite(shown)]
    if finite.size and finite.max() > finite.min():  # one value has no scale to show
        from matplotlib.cm import ScalarMappable

        edges = np.linspace(finite.min(), finite.max(), 11)
        scale = ScalarMappable(norm=BoundaryNorm(edges, palette.N), cmap=palette)
        bar = fig.colorbar(
            scale, ax=ax, orientation="horizontal", location="bottom", shrink=0.8, aspect=30
        )
        bar.set_ticks(edges[::5])
        bar.set_label(_label(f"{board.metric.key}, darker is more aligned", 44))
        if e:
            _unscaled_ticks(bar.ax.xaxis, e)
        else:
            from matplotlib.ticker import FuncFormatter

            bar.ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _number(v)))
    _annotate_cells(fig, ax, data, bins, e)
    return _svg(fig)


def _annotate_cells(fig: Any, ax: Any, data: Any, bins: Any, e: int) -> None:
    """Each cell's score in it, in the text colour its background needs; none where the
    widest number does not fit a cell (the table under the figure has them all)."""
    import numpy as np

    texts = []
    for (i, j), x in np.ndenumerate(data):
        if np.isfinite(x):
            background = HEAT_COLOURS[int(bins[i, j])]
            texts.append(
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    f"{x:.3g}" if e else _number(float(x)),
                    ha="center",
                    va="center",
                    color=text_colour(background),
                )
            )
    if not texts:
        return
    fig.canvas.draw()  # the layout is settled: cell and text sizes are final
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    cell_w, cell_h = box.width / data.shape[1], box.height / data.shape[0]
    sizes = [t.get_window_extent(renderer) for t in texts]
    if max(s.width for s in sizes) > 0.9 * cell_w or max(s.height for s in sizes) > cell_h:
        for t in texts:
            t.remove()


def family_styles(families: list[str]) -> dict[str, tuple[str, str]]:
    """A colour and a marker for each family, in sorted order (so every figure of a page gives
    a family the same look)."""
    out = {}
    for i, family in enumerate(sorted(set(families))):
        colour = FAMILY_COLOURS[i % len(FAMILY_COLOURS)]
        out[family] = (colour, FAMILY_MARKERS[i % len(FAMILY_MARKERS)])
    return out


def place_labels(ax: Any, xs: Any, ys: Any, labels: list[str], order: list[int]) -> list[int]:
    """Label points beside themselves without overlaps: each point in ``order`` (the most
    interesting first) takes the first of twelve spots around it that is inside the axes and
    clear of every marker and earlier label, else stays unlabelled. Returns those indices."""
    import numpy as np

    fig = ax.figure
    fig.canvas.draw()  # display coordinates are final once the layout has run
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    points = ax.transData.transform(np.column_stack([xs, ys]))
    r = 5 * fig.dpi / 72  # a marker's half-width, in display pixels
    from matplotlib.transforms import Bbox

    taken = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in points]
    spots = [
        (6, 3, "left", "bottom"),
        (-6, 3, "right", "bottom"),
        (6, -3, "left", "top"),
        (-6, -3, "right", "top"),
        (0, 8, "center", "bottom"),
        (0, -8, "center", "top"),
        (10, 0, "left", "center"),
        (-10, 0, "right", "center"),
        (8, 14, "left", "bottom"),  # further out, where the near spots are taken
        (-8, 14, "right", "bottom"),
        (8, -14, "left", "top"),
        (-8, -14, "right", "top"),
    ]
    unlabelled = []
    for i in order:
        for dx, dy, ha, va in spots:
            far = abs(dy) > 10  # a label further out is tied to its point by a thin line
            text = ax.annotate(
                labels[i],
                (xs[i], ys[i]),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                color=TEXT_DARK,
                arrowprops={"arrowstyle": "-", "color": "#5b6475", "lw": 0.6} if far else None,
            )
            text.set_in_layout(False)  # labels must not move the axes they were placed in
            box = text.get_window_extent(renderer).padded(2)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(t) for t in taken):
                taken.append(box)
                break
            text.remove()
        else:
            unlabelled.append(i)
    return unlabelled


def draw_scatter(board: Board, corr: Correlation) -> bytes:
    """A downstream score's points (downstream score, alignment with its 95 % interval),
    coloured by family, labelled where a label fits (best-aligned first); the least-squares
    line and the correlation only where there are enough models for them (the correlation has
    a record)."""
    plt = _mpl()
    import numpy as np

    assert board.reference is not None
    points, name, rec = corr.points, corr.name, corr.record
    ids = sorted(points)
    rows = {r.model.id: r for r in board.language_rows}
    families = {m: rows[m].model.family for m in ids}
    styles = family_styles(list(families.values()))
    x, ex = _scale(np.array([points[m] for m in ids], float))
    y, ey = _scale(np.array([rows[m].value for m in ids], float))
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, 4.6), layout="constrained")
    _unscaled_ticks(ax.xaxis, ex)
    _unscaled_ticks(ax.yaxis, ey)
    _error_bars(ax, x, y, [rows[m].interval for m in ids], ey)
    _family_points(ax, x, y, [families[m] for m in ids], styles)
    if rec is not None and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 50)
        ax.plot(
            xs, slope * xs + intercept, color="#5b6475", dashes=(4, 2), label="least-squares fit"
        )
    if rec is not None:
        stats = (
            f"Pearson r = {format_ci(rec.pearson, rec.pearson_ci, 2)}\n"
            f"Spearman rho = {format_ci(rec.spearman, rec.spearman_ci, 2)}, n = {rec.n_models}"
        )
    else:
        stats = f"n = {len(ids)}: too few models for a fit line"
    ax.margins(0.12)  # room for labels beside the outermost points
    ax.set_title(
        _tex_safe(f"{_short(board.metric.key)} alignment to {_short(board.reference.id)}\n" + stats)
    )
    ax.set_xlabel(_label(name) + (" (lower is better)" if corr.lower_is_better else ""))
    ax.set_ylabel(_label(f"alignment ({board.metric.key})"))
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, frameon=False)
    best_first = sorted(range(len(ids)), key=lambda i: (-y[i], ids[i]))
    place_labels(ax, x, y, short_names(ids), best_first)
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
    style = {"fmt": "none", "ecolor": "#5b6475", "elinewidth": 1, "capsize": 3, "zorder": 2}
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


def _family_points(ax: Any, x: Any, y: Any, families: list[str], styles: dict) -> None:
    """The points, each family in its colour and marker (one legend entry per family)."""
    for family, (colour, marker) in styles.items():
        mine = [i for i, f in enumerate(families) if f == family]
        if mine:
            ax.scatter(x[mine], y[mine], color=colour, marker=marker, s=36, zorder=3, label=family)


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
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, 4.8), layout="constrained")
    _unscaled_ticks(ax.xaxis, ex)
    _unscaled_ticks(ax.yaxis, ey)
    _reference_lines(ax, board, ey)
    _error_bars(ax, x, y, [p.interval for p in pts], ey)
    families = [p.family for p in pts]
    _family_points(ax, x, y, families, family_styles(families))
    rec = headline.correlation.record if headline.correlation else None
    if rec is not None and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 50)
        fit = f"least-squares fit (r = {format_ci(rec.pearson, rec.pearson_ci, 2)})"
        ax.plot(xs, slope * xs + intercept, color="#5b6475", dashes=(4, 2), label=_tex_safe(fit))
    if min(values) >= 0:
        ax.set_ylim(bottom=0)
    ax.margins(x=0.2)  # room for the labels of the outermost points
    ax.set_xlabel("bits per byte (lower: the better language model)")
    ax.set_ylabel(_label(f"alignment to {board.reference.id}", 34))
    ax.grid(alpha=0.3)
    # one column: two columns of long entries are wider than the figure (text shrinks on phones)
    fig.legend(loc="outside lower center", ncols=1, frameon=False)
    labels = short_names([p.model for p in pts])
    best_first = sorted(range(len(pts)), key=lambda i: (-y[i], pts[i].model))
    place_labels(ax, x, y, labels, best_first)
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
    height = max(2.4, 0.3 * len(rows) + 1.8)
    fig, ax = plt.subplots(figsize=(PANEL_FIGURE_WIDTH, height), layout="constrained")
    _unscaled_ticks(ax.xaxis, e)
    _reference_lines(ax, board, e, vertical=True)
    _error_bars(ax, x, y, [r.interval for r in rows], e, vertical=False)
    ax.scatter(x, y, color=FAMILY_COLOURS[0], zorder=3, label="score (95 % interval)")
    ax.set_yticks(y, short_names([r.model.id for r in rows]))
    if min(values) >= 0:
        ax.set_xlim(left=0)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    # two short lines: one long line centred under the axes (pushed right by the names) would
    # widen the saved figure and so shrink its text on a phone
    ax.set_xlabel(_label(f"{board.metric.key} alignment", 30) + "\n(0 = nothing in common)")
    fig.legend(loc="outside lower center", ncols=1, frameon=False)
    ax.grid(alpha=0.3, axis="x")
    return _svg(fig)


# -- alt texts: what a figure shows, in words and numbers ---------------------------------------


def heatmap_alt(board: Board) -> str:
    """The heatmap's alt text: its size and its highest and lowest cells."""
    cells = [
        (x, a, b)
        for a, row in zip(board.languages, board.matrix, strict=True)
        for b, x in zip(board.visions, row, strict=True)
        if x is not None
    ]
    what = (
        f"Heatmap of {board.metric.key} alignment on {board.dataset.label}: "
        f"{len(board.languages)} language models (rows) by {len(board.visions)} vision models "
        "(columns), darker is more aligned"
    )
    if not cells:
        return what + "; no scores."
    hi, lo = max(cells), min(cells)
    if len(cells) == 1:
        return what + f"; one score, {hi[1]} with {hi[2]} at {_number(hi[0])}."
    return (
        f"{what}; highest {hi[1]} with {hi[2]} at {_number(hi[0])}, "
        f"lowest {lo[1]} with {lo[2]} at {_number(lo[0])}."
    )


def scatter_alt(corr: Correlation, board: Board) -> str:
    """A scatter's alt text: the trend (Spearman rho with its interval) and the best point."""
    rec, name = corr.record, corr.name
    alignment = {r.model.id: r.value for r in board.language_rows}
    ids = [m for m in corr.points if m in alignment]
    rho = rec.spearman if rec is not None else None
    if rec is None:
        trend = f"against {name}, too few models for a trend"
    elif rho is None or abs(rho) < 0.1:
        trend = f"shows no clear trend with {name}"
    elif corr.lower_is_better:
        trend = f"{'rises' if rho < 0 else 'falls'} as {name} falls (better models)"
    else:
        trend = f"{'rises' if rho > 0 else 'falls'} as {name} rises"
    reference = board.reference.id if board.reference else "the reference vision model"
    text = (
        f"Scatter of {len(ids)} language models: {board.metric.key} alignment to {reference} "
        f"{trend}"
        + (f", Spearman rho {format_ci(rho, rec.spearman_ci, 2)}" if rec is not None else "")
    )
    if not ids:
        return text + "."
    best = max(ids, key=lambda m: (alignment[m], m))
    return (
        f"{text}; most aligned {best} at {_number(alignment[best])} "
        f"({name} {corr.points[best]:.3g})."
    )
