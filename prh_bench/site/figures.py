"""The site's figures: matplotlib (Agg) drawn at build time as SVG, imported only here."""

from __future__ import annotations

import io
import math
from typing import Any

from ..correlate import format_ci
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
    """A correlation's points (downstream score, alignment) with a least-squares line."""
    plt = _mpl()
    import numpy as np

    assert board.reference is not None
    points, name, rec = corr.points, corr.record.downstream, corr.record
    ids = sorted(points)
    alignment = {r.model.id: r.value for r in board.language_rows}
    x, ex = _scale(np.array([points[m] for m in ids], float))
    y, ey = _scale(np.array([alignment[m] for m in ids], float))
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    _unscaled_ticks(ax.xaxis, ex)
    _unscaled_ticks(ax.yaxis, ey)
    ax.scatter(x, y, color="#3b6ea8", zorder=3)
    for xi, yi, m in zip(x, y, ids, strict=True):
        ax.annotate(_label(m), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 50)
        ax.plot(xs, slope * xs + intercept, color="#c0392b", label="least-squares fit")
        ax.legend(loc="best", fontsize=7)

    ax.set_title(
        _tex_safe(
            f"{board.metric.key} alignment to {_short(board.reference.id)} vs {_short(name)}\n"
            f"Pearson r = {format_ci(rec.pearson, rec.pearson_ci, 2)}, "
            f"Spearman rho = {format_ci(rec.spearman, rec.spearman_ci, 2)}, n = {rec.n_models}"
        ),
        fontsize=8,
    )
    ax.set_xlabel(_label(name) + (" (lower is better)" if corr.lower_is_better else ""))
    ax.set_ylabel(_label(f"alignment ({board.metric.key})"))
    ax.grid(alpha=0.3)
    return _svg(fig)
