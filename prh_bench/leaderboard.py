"""The static leaderboard site: result files -> a context -> Jinja2 templates -> files.

``build_site(paths, output, settings)`` reads any number of result files (folders contribute
every ``*.json`` below them), merges them per (dataset, N), and writes a site that needs no
server and no JavaScript (JS only adds click-to-sort):

- ``index.html`` and ``board-<dataset>-<metric>.html``: language models ranked by alignment to
  a reference vision model, vision models ranked by mean alignment to the language models,
  each score beside its floors (the shuffled-pairs null and the random-init control);
- ``matrix-<dataset>-<metric>.html``: the language x vision alignment matrix as a heatmap;
- ``downstream-<dataset>-<metric>.html``: alignment versus downstream scores (bpb, HellaSwag,
  ...), scatter plots with a fit line and Pearson r / Spearman rho with bootstrap intervals;
- ``models/<slug>.html``: one page per model; ``models.html`` lists them;
- ``data.html`` with ``data/scores.csv``, ``data/leaderboard.json`` and the raw result files.

The whole site is built in a temporary folder beside ``output`` and swapped into place, so a
failed build leaves the previous site untouched. Figures are SVG, drawn at build time with
matplotlib (Agg), imported only here.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import PrhBenchError
from .results import ModelRecord, RunResult, ScoreRecord, expand_paths, read_result

if TYPE_CHECKING:
    import jinja2

DEFAULT_RESULTS = Path("leaderboard") / "results"
DEFAULT_SETTINGS = Path("leaderboard") / "site.toml"
SITE_MARKER = ".prh-bench-site"  # marks a folder this module built (and may replace)
CONTROL_TAGS = {"random-init", "control"}


class LeaderboardError(PrhBenchError):
    """No results to build from, bad site settings, or a reference model that is not there."""


# ---------------------------------------------------------------------------------------------
# settings


@dataclass
class SiteSettings:
    """``leaderboard/site.toml`` (keys at the top level or under ``[site]``)."""

    title: str = "prh-bench leaderboard"
    description: str = (
        "How alike do vision and language models see the world? Alignment of their "
        "representations on paired image-caption data (Huh et al. 2024, arXiv:2405.07987)."
    )
    reference_vision: str = "*dinov2*"  # an id or a glob; the largest match is the reference
    default_metric: str = "mutual_knn"
    default_dataset: str | None = None  # a dataset id; None: the one with the most models
    bootstrap_resamples: int = 2000  # for the correlation intervals
    templates: str | None = None  # a folder of template overrides (relative to site.toml)


def load_settings(path: str | os.PathLike[str] | None) -> SiteSettings:
    """Read site settings; ``None`` (or a missing default file) gives the defaults."""
    if path is None:
        return SiteSettings()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LeaderboardError(f"{path}: cannot read site settings: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LeaderboardError(f"{path}: malformed TOML: {exc}") from None
    data = data.get("site", data)
    known = {f.name: f for f in fields(SiteSettings)}
    for key, value in data.items():
        if key not in known:
            raise LeaderboardError(
                f"{path}: unknown key '{key}'; known keys: {', '.join(sorted(known))}"
            )
        expected = int if key == "bootstrap_resamples" else str
        if not isinstance(value, expected) or isinstance(value, bool):
            raise LeaderboardError(f"{path}: '{key}' must be a {expected.__name__}")
    settings = SiteSettings(**data)
    if settings.templates:
        settings.templates = str((path.parent / settings.templates).resolve())
    if settings.bootstrap_resamples < 100:
        raise LeaderboardError(f"{path}: bootstrap_resamples must be >= 100")
    return settings


# ---------------------------------------------------------------------------------------------
# the context: what the templates show


def slugify(text: str) -> str:
    """A file-name-safe slug; a hash suffix keeps ids that differ only in odd characters apart."""
    plain = text.replace("/", "--")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", plain).strip("-.")[:80] or "x"
    if slug != plain or "--" in text:  # "a--b" must not take the slug of "a/b"
        slug += "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return slug


def is_control(model: ModelRecord) -> bool:
    return bool(CONTROL_TAGS & set(model.tags))


def safe_url(value: Any) -> str | None:
    """The URL if it is http(s) (or a site-relative path), else None: no javascript:, data:..."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if any(ord(c) < 32 for c in text):
        return None
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        return text
    return None


@dataclass
class Run:
    run_id: str
    created: str
    prh_bench_version: str
    git_commit: str | None
    file: str  # the copy under data/runs/
    models: list[str]
    failures: list[dict[str, str]]


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
    key: str
    id: str
    n: int
    revision: str
    content_hash: str
    label: str
    slug: str
    models: dict[str, ModelRecord] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    metrics: dict[str, Metric] = field(default_factory=dict)
    scores: dict[str, dict[tuple[str, str], Score]] = field(default_factory=dict)


def _metric_key(score: ScoreRecord) -> tuple[str, str]:
    return score.metric, json.dumps(score.params, sort_keys=True)


def merge_results(results: Iterable[tuple[Path, RunResult]]) -> list[Dataset]:
    """Group runs by (dataset, N); a later run's score for the same pair and metric wins."""
    datasets: dict[tuple[str, int], Dataset] = {}
    ordered = sorted(results, key=lambda pr: (pr[1].created, pr[1].run_id))
    ns: dict[str, set[int]] = {}
    for _, r in ordered:
        ns.setdefault(r.dataset.id, set()).add(r.dataset.n)
    for _, r in ordered:
        key = (r.dataset.id, r.dataset.n)
        if key not in datasets:
            slug = slugify(r.dataset.id) + f"-n{r.dataset.n}"
            label = (
                r.dataset.id if len(ns[r.dataset.id]) == 1 else f"{r.dataset.id} (N={r.dataset.n})"
            )
            datasets[key] = Dataset(
                key=f"{r.dataset.id}@{r.dataset.n}",
                id=r.dataset.id,
                n=r.dataset.n,
                revision=r.dataset.revision,
                content_hash=r.dataset.content_hash,
                label=label,
                slug=slug,
            )
        ds = datasets[key]
        ds.runs.append(
            Run(
                run_id=r.run_id,
                created=r.created,
                prh_bench_version=r.prh_bench_version,
                git_commit=r.git_commit,
                file=f"data/runs/{ds.slug}/{slugify(r.run_id)}.json",
                models=[m.id for m in r.models],
                failures=[f.model_dump() for f in r.failures],
            )
        )
        for m in r.models:
            ds.models[m.id] = m
        for s in r.scores:
            name, params = _metric_key(s)
            ds.metrics.setdefault(f"{name}\0{params}", Metric("", name, s.params, ""))
            a, b = s.model_a, s.model_b
            la, lb = s.best_index
            ma, mb = ds.models.get(a), ds.models.get(b)
            if ma and mb and ma.modality == "vision" and mb.modality == "language":
                a, b, la, lb = b, a, lb, la  # language first
            ds.scores.setdefault(f"{name}\0{params}", {})[(a, b)] = Score(
                model_a=a,
                model_b=b,
                value=s.value,
                layer_a=la,
                layer_b=lb,
                null_mean=s.null.mean if s.null else None,
                null_std=s.null.std if s.null else None,
                p_value=s.null.p_value if s.null else None,
                run_id=r.run_id,
            )
    out = sorted(datasets.values(), key=lambda d: (d.id, d.n))
    for ds in out:  # name the metrics: plain name unless one dataset has several settings
        by_name: dict[str, int] = {}
        for m in ds.metrics.values():
            by_name[m.name] = by_name.get(m.name, 0) + 1
        renamed: dict[str, Metric] = {}
        scores: dict[str, dict[tuple[str, str], Score]] = {}
        for raw, m in sorted(ds.metrics.items()):
            params = ",".join(f"{k}={v}" for k, v in sorted(m.params.items()))
            m.key = m.name if by_name[m.name] == 1 or not params else f"{m.name}({params})"
            m.slug = slugify(m.key)
            renamed[m.key] = m
            scores[m.key] = ds.scores.get(raw, {})
        ds.metrics, ds.scores = renamed, scores
    return out


def _size(m: ModelRecord) -> tuple[int, str]:
    return (m.parameters or 0, m.id)


def pick_reference(ds: Dataset, pattern: str) -> ModelRecord | None:
    """The vision model ``pattern`` names (exact id first, else the largest glob match)."""
    vision = [m for m in ds.models.values() if m.modality == "vision" and not is_control(m)]
    exact = [m for m in vision if m.id == pattern]
    matches = exact or [m for m in vision if fnmatch.fnmatchcase(m.id, pattern)]
    return max(matches, key=_size) if matches else None


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
    return sum(values) / len(values) if values else None


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
    downstream: str
    n_models: int
    pearson: float | None
    pearson_ci: tuple[float, float] | None
    spearman: float | None
    spearman_ci: tuple[float, float] | None
    p_value: float | None
    figure: str
    lower_is_better: bool


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
        slug=slugify(model.id),
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
    heat = [
        [
            None if x is None else min(9, int(10 * (x - lo) / (hi - lo))) if hi > lo else 5
            for x in row
        ]
        for row in matrix
    ]
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


def _downstream_table(board: Board) -> dict[str, dict[str, float]]:
    """{downstream name: {language model: value}} over the ranked language models."""
    table: dict[str, dict[str, float]] = {}
    for r in board.language_rows:
        values = {k: d.value for k, d in r.model.downstream.items()}
        if r.model.bpb is not None:
            values["bpb"] = r.model.bpb
        for k, v in values.items():
            if math.isfinite(v):
                table.setdefault(k, {})[r.model.id] = v
    return table


# ---------------------------------------------------------------------------------------------
# figures (matplotlib, Agg, SVG)


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


def _svg(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def draw_heatmap(board: Board) -> bytes:
    plt = _mpl()
    import numpy as np

    rows, cols = board.languages, board.visions
    data = np.array([[np.nan if x is None else x for x in row] for row in board.matrix], float)
    fig, ax = plt.subplots(
        figsize=(max(4.0, 1.1 * len(cols) + 3), max(2.5, 0.45 * len(rows) + 1.8))
    )
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), [_tex_safe(c) for c in cols], rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), [_tex_safe(r) for r in rows])
    finite = data[np.isfinite(data)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(data[i, j]):
                ax.text(
                    j,
                    i,
                    f"{data[i, j]:.3f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if data[i, j] > mid else "white",
                )
    ax.set_xlabel("vision model")
    ax.set_ylabel("language model")
    ax.set_title(_tex_safe(f"{board.metric.key} alignment, {board.dataset.label}"))
    fig.colorbar(image, ax=ax, label=_tex_safe(board.metric.key))
    return _svg(fig)


def draw_scatter(board: Board, name: str, points: dict[str, float], corr: Correlation) -> bytes:
    plt = _mpl()
    import numpy as np

    assert board.reference is not None
    ids = sorted(points)
    alignment = {r.model.id: r.value for r in board.language_rows}
    x = np.array([points[m] for m in ids], float)
    y = np.array([alignment[m] for m in ids], float)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.scatter(x, y, color="#3b6ea8", zorder=3)
    for xi, yi, m in zip(x, y, ids, strict=True):
        ax.annotate(_tex_safe(m), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 50)
        ax.plot(xs, slope * xs + intercept, color="#c0392b", label="least-squares fit")
        ax.legend(loc="best", fontsize=7)

    def fmt(v: float | None, ci: tuple[float, float] | None) -> str:
        if v is None:
            return "n/a"
        return f"{v:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    ax.set_title(
        _tex_safe(
            f"{board.metric.key} alignment to {board.reference.id} vs {name}\n"
            f"Pearson r = {fmt(corr.pearson, corr.pearson_ci)}, "
            f"Spearman rho = {fmt(corr.spearman, corr.spearman_ci)}, n = {corr.n_models}"
        ),
        fontsize=8,
    )
    ax.set_xlabel(_tex_safe(name + (" (lower is better)" if corr.lower_is_better else "")))
    ax.set_ylabel(_tex_safe(f"alignment ({board.metric.key})"))
    ax.grid(alpha=0.3)
    return _svg(fig)


def add_correlations(board: Board, resamples: int) -> dict[str, bytes]:
    """Correlate alignment to the reference with each downstream score known for >= 3 models;
    returns the figures to write (by file name)."""
    from .correlate import correlation

    figures: dict[str, bytes] = {}
    if board.reference is None:
        board.correlation_note = "No reference vision model: nothing to correlate."
        return figures
    alignment = {r.model.id: r.value for r in board.language_rows}
    for name, points in sorted(_downstream_table(board).items()):
        if len(points) < 3:
            continue
        ids = sorted(points)
        stats = correlation(
            [points[m] for m in ids], [alignment[m] for m in ids], resamples=resamples
        )
        figure = f"figures/scatter-{board.slug}-{slugify(name)}.svg"
        corr = Correlation(
            downstream=name,
            n_models=len(ids),
            figure=figure,
            lower_is_better=name == "bpb" or name.endswith("bpb") or "perplexity" in name,
            **stats,
        )
        figures[figure] = draw_scatter(board, name, points, corr)
        board.correlations.append(corr)
    if not board.correlations:
        board.correlation_note = (
            f"A correlation needs a downstream score (bpb, HellaSwag, ...) for at least 3 of "
            f"the language models ranked against {board.reference.id}; "
            f"{len(board.language_rows)} are ranked and none has enough downstream scores."
        )
    return figures


# ---------------------------------------------------------------------------------------------
# rendering


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else "—"
    return str(value)


def _sort_value(value: Any) -> str:
    """A ``data-sort`` attribute value: numbers as repr, missing as empty."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value)) if isinstance(value, (int, float)) else str(value)


def _params(value: int | None) -> str:
    if not value:
        return "—"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)


def make_environment(templates: str | os.PathLike[str] | None = None) -> jinja2.Environment:
    """The site's Jinja2 environment: autoescape on, StrictUndefined (a missing field fails
    the build), the built-in filters, then every plugin's ``prepare_jinja2_environment``."""
    import jinja2

    loaders: list[jinja2.BaseLoader] = []
    if templates:
        loaders.append(jinja2.FileSystemLoader(str(templates)))
    loaders.append(jinja2.PackageLoader("prh_bench", "templates"))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        {
            "num": _fmt,
            "sort_value": _sort_value,
            "safe_url": safe_url,
            "params": _params,
            "slug": slugify,
        }
    )
    env.filters.setdefault("model_url", lambda model: None)  # plugins may give a real one
    from .plugins import get_plugin_manager

    get_plugin_manager().hook.prepare_jinja2_environment(env=env)
    return env


def _git_commit() -> str | None:
    sha = os.environ.get("GITHUB_SHA")
    if sha:
        return sha
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _build_date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")  # reproducible builds
    when = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def _csv_cell(value: Any) -> Any:
    """Neutralise spreadsheet formulas in text cells (ids are user-supplied)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _data_files(datasets: list[Dataset], boards: list[Board]) -> dict[str, bytes]:
    fields_ = [
        "dataset",
        "n",
        "metric",
        "model_a",
        "modality_a",
        "model_b",
        "modality_b",
        "value",
        "layer_a",
        "layer_b",
        "null_mean",
        "null_std",
        "p_value",
        "run_id",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields_)
    records = []
    for ds in datasets:
        for key, scores in ds.scores.items():
            for (a, b), s in sorted(scores.items()):
                row = {
                    "dataset": ds.id,
                    "n": ds.n,
                    "metric": key,
                    "model_a": a,
                    "modality_a": ds.models[a].modality if a in ds.models else None,
                    "model_b": b,
                    "modality_b": ds.models[b].modality if b in ds.models else None,
                    "value": s.value,
                    "layer_a": s.layer_a,
                    "layer_b": s.layer_b,
                    "null_mean": s.null_mean,
                    "null_std": s.null_std,
                    "p_value": s.p_value,
                    "run_id": s.run_id,
                }
                records.append(row)
                writer.writerow([_csv_cell(row[f]) for f in fields_])
    board_data = [
        {
            "dataset": b.dataset.id,
            "n": b.dataset.n,
            "metric": b.metric.key,
            "reference_vision": b.reference.id if b.reference else None,
            "language_ranking": [
                {
                    "rank": r.rank,
                    "model": r.model.id,
                    "value": r.value,
                    "null_mean": r.null_mean,
                    "control": r.control,
                    "control_model": r.control_model,
                }
                for r in b.language_rows
            ],
            "vision_ranking": [
                {
                    "rank": r.rank,
                    "model": r.model.id,
                    "mean_value": r.value,
                    "n": r.n,
                    "null_mean": r.null_mean,
                    "control": r.control,
                    "is_control": r.is_control,
                }
                for r in b.vision_rows
            ],
            "correlations": [
                {
                    k: getattr(c, k)
                    for k in (
                        "downstream",
                        "n_models",
                        "pearson",
                        "pearson_ci",
                        "spearman",
                        "spearman_ci",
                        "p_value",
                    )
                }
                for c in b.correlations
            ],
        }
        for b in boards
    ]
    doc = {"scores": records, "boards": board_data}
    return {
        "data/scores.csv": buffer.getvalue().encode(),
        "data/leaderboard.json": (json.dumps(doc, indent=1) + "\n").encode(),
    }


@dataclass
class BuildReport:
    output: Path
    pages: list[str]
    files: int
    datasets: list[str]
    metrics: list[str]


def find_results(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    given = [Path(p) for p in paths] or [DEFAULT_RESULTS]
    for p in given:
        if not p.exists():
            raise LeaderboardError(f"{p}: no such file or folder of results")
    found = expand_paths(given)
    if not found:
        where = ", ".join(str(p) for p in given)
        raise LeaderboardError(
            f"no result files (*.json) in {where}; run 'prh-bench run --output "
            f"{DEFAULT_RESULTS}' or name result files"
        )
    return found


def build_site(
    paths: Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    settings: SiteSettings | None = None,
    log: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build the static site from result files/folders into ``output`` (replaced atomically)."""
    settings = settings or SiteSettings()
    log = log or (lambda message: None)
    files = find_results(paths)
    results = [(p, read_result(p)) for p in files]
    datasets = merge_results(results)
    if not any(ds.metrics for ds in datasets):
        raise LeaderboardError("the result files hold no scores; nothing to show")
    # the reference must name a vision model of at least one dataset
    if not any(pick_reference(ds, settings.reference_vision) for ds in datasets):
        vision = sorted(
            {
                m.id
                for ds in datasets
                for m in ds.models.values()
                if m.modality == "vision" and not is_control(m)
            }
        )
        raise LeaderboardError(
            f"reference vision model '{settings.reference_vision}' matches no trained vision "
            f"model in the results (there: {', '.join(vision) or 'none'}); set "
            "reference_vision in site.toml or pass --reference"
        )
    metrics = sorted({k for ds in datasets for m in ds.metrics.values() for k in (m.name, m.key)})
    if settings.default_metric not in metrics:
        raise LeaderboardError(
            f"metric '{settings.default_metric}' has no scores in the results (there: "
            f"{', '.join(metrics)}); set default_metric in site.toml or pass --metric"
        )
    names = sorted({n for ds in datasets for n in (ds.id, ds.key, ds.label)})
    if settings.default_dataset is not None and settings.default_dataset not in names:
        raise LeaderboardError(
            f"dataset '{settings.default_dataset}' is in no result file (there: "
            f"{', '.join(sorted({ds.id for ds in datasets}))}); set default_dataset in site.toml"
        )
    boards = [
        make_board(ds, m, settings.reference_vision) for ds in datasets for m in ds.metrics.values()
    ]
    default = _default_board(boards, settings)
    out: dict[str, bytes] = {}
    for b in boards:
        if b.language_rows or b.vision_rows:
            b.heatmap = f"figures/heatmap-{b.slug}.svg"
            out[b.heatmap] = draw_heatmap(b)
        out.update(add_correlations(b, settings.bootstrap_resamples))
    out.update(_data_files(datasets, boards))
    for path, r in results:
        ds = next(d for d in datasets if (d.id, d.n) == (r.dataset.id, r.dataset.n))
        run = next(x for x in ds.runs if x.run_id == r.run_id)
        out[run.file] = path.read_bytes()
    models = _model_pages(datasets, boards)
    env = make_environment(settings.templates)
    common = {
        "site": settings,
        "datasets": datasets,
        "boards": boards,
        "default_board": default,
        "models": models,
        "build": {
            "version": _version(),
            "date": _build_date(),
            "commit": _git_commit(),
            "runs": sorted((r for ds in datasets for r in ds.runs), key=lambda r: r.created),
        },
    }

    def render(template: str, page: str, **context: Any) -> None:
        root = "../" * page.count("/")
        html = env.get_template(template).render(**common, **context, root=root, page=page)
        out[page] = html.encode()

    render("board.html", "index.html", board=default)
    for b in boards:
        render("board.html", f"board-{b.slug}.html", board=b)
        render("matrix.html", f"matrix-{b.slug}.html", board=b)
        render("downstream.html", f"downstream-{b.slug}.html", board=b)
    render("models.html", "models.html")
    for m in models:
        render("model.html", f"models/{m.slug}.html", entry=m)
    render("data.html", "data.html")
    static = _static_files()
    out.update(static)
    out[SITE_MARKER] = b"built by prh-bench leaderboard build; may be replaced by it\n"
    out[".nojekyll"] = b""  # GitHub Pages: serve files as they are
    _write_tree(Path(output), out)
    pages = sorted(p for p in out if p.endswith(".html"))
    log(f"built {len(pages)} pages ({len(out)} files) from {len(files)} result file(s)")
    return BuildReport(
        output=Path(output),
        pages=pages,
        files=len(out),
        datasets=[d.label for d in datasets],
        metrics=sorted({m.key for d in datasets for m in d.metrics.values()}),
    )


def _version() -> str:
    from .provenance import __version__

    return __version__


def _default_board(boards: list[Board], settings: SiteSettings) -> Board:
    def score(b: Board) -> tuple[int, int, int]:
        ds_match = settings.default_dataset in (b.dataset.id, b.dataset.key, b.dataset.label)
        return (
            int(ds_match),
            int(
                b.metric.name == settings.default_metric or b.metric.key == settings.default_metric
            ),
            len(b.dataset.models),
        )

    return max(boards, key=score)


@dataclass
class ModelEntry:
    """One model across every dataset it appears in."""

    id: str
    slug: str
    record: ModelRecord  # the latest record
    appearances: list[dict[str, Any]]  # per dataset: dataset, record, runs, scores
    downstream: list[dict[str, Any]]


def _model_pages(datasets: list[Dataset], boards: list[Board]) -> list[ModelEntry]:
    entries: dict[str, ModelEntry] = {}
    for ds in datasets:
        for mid, record in ds.models.items():
            entry = entries.setdefault(mid, ModelEntry(mid, slugify(mid), record, [], []))
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
                            "partner_slug": slugify(partner),
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
                    "runs": [r for r in ds.runs if mid in r.models],
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


def _static_files() -> dict[str, bytes]:
    from importlib.resources import files as package_files

    root = package_files("prh_bench") / "static"
    return {
        f"static/{item.name}": item.read_bytes()
        for item in sorted(root.iterdir(), key=lambda i: i.name)
        if item.is_file() and not item.name.startswith(".")
    }


def _write_tree(output: Path, files: dict[str, bytes]) -> None:
    """Write every file into a fresh folder beside ``output``, then swap it into place.

    An existing ``output`` is replaced only if it is empty or a site this module built (it holds
    the marker file), so ``-o .`` cannot delete a project.
    """
    output = output.resolve()
    if output.exists():
        if not output.is_dir():
            raise LeaderboardError(f"{output}: exists and is not a folder")
        if any(output.iterdir()) and not (output / SITE_MARKER).exists():
            raise LeaderboardError(
                f"{output}: not empty and not a site built by prh-bench; choose another "
                "--output folder or empty it"
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    try:
        for rel, data in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        os.chmod(tmp, 0o755)
        old = None
        if output.exists():
            old = output.with_name(f".{output.name}.old-{os.getpid()}")
            os.replace(output, old)
        os.replace(tmp, output)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------
# preview


def make_server(
    site: str | os.PathLike[str], port: int = 8000, host: str = "127.0.0.1", quiet: bool = False
):
    """An ``http.server`` serving ``site`` (not started; call ``serve_forever``)."""
    import functools
    import http.server

    site = Path(site)
    if not (site / "index.html").is_file():
        raise LeaderboardError(
            f"{site}: no built site (no index.html); run 'prh-bench leaderboard build -o {site}'"
        )

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            if not quiet:
                super().log_message(format, *args)

    handler = functools.partial(Handler, directory=str(site))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise LeaderboardError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
