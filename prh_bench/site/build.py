"""Building the site: result files -> boards -> Jinja2 templates -> a folder swapped into place.

The whole site is built in a temporary folder beside ``output`` and swapped into place, so a
failed build leaves the previous site untouched.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..correlate import format_interval, is_control
from ..provenance import git_commit
from ..results import Results, expand_paths
from ..storage import slug
from .figures import draw_heatmap, draw_scatter
from .model import (
    Board,
    Dataset,
    add_correlations,
    default_board,
    make_board,
    make_datasets,
    model_entries,
    pick_reference,
)
from .settings import DEFAULT_RESULTS, LeaderboardError, SiteSettings

if TYPE_CHECKING:
    import jinja2

SITE_MARKER = ".prh-bench-site"  # marks a folder this module built (and may replace)


def safe_url(value: Any) -> str | None:
    """The URL if it is absolute http(s), else None: no javascript:, data:, nor a relative path
    (a link a plugin gives names another site)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if any(ord(c) < 32 for c in text):
        return None
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        return text
    return None


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


def make_environment(
    templates: str | os.PathLike[str] | None = None, settings: SiteSettings | None = None
) -> jinja2.Environment:
    """The site's Jinja2 environment: autoescape on, StrictUndefined (a missing field fails
    the build), the built-in filters, then every plugin's ``prepare_jinja2_environment``
    (given the site's settings)."""
    import jinja2

    from ..plugins import call_hook

    loaders: list[jinja2.BaseLoader] = []
    if templates:
        loaders.append(jinja2.FileSystemLoader(str(templates)))
    loaders.append(jinja2.PackageLoader("prh_bench.site", "templates"))
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
            "slug": slug,
            "interval": format_interval,
        }
    )
    env.filters.setdefault("model_url", lambda model: None)  # plugins may give a real one
    # one by one, so a plugin that raises is named in one line
    call_hook("prepare_jinja2_environment", env=env, settings=settings or SiteSettings())
    return env


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
    results = Results.read(files)
    datasets = make_datasets(results)
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
    default = default_board(boards, settings.default_dataset, settings.default_metric)
    out: dict[str, bytes] = {}
    for b in boards:
        if b.language_rows or b.vision_rows:
            b.heatmap = f"figures/heatmap-{b.slug}.svg"
            out[b.heatmap] = draw_heatmap(b)
        add_correlations(b, settings.bootstrap_resamples)
        for corr in b.correlations:
            if corr.figure:  # a saved correlation has no points to draw
                out[corr.figure] = draw_scatter(b, corr)
    out.update(_data_files(datasets, boards))
    for ds in datasets:
        for path, run in ds.merged.runs:
            out[ds.files[run.run_id]] = path.read_bytes()
    models = model_entries(datasets, boards)
    env = make_environment(settings.templates, settings)
    common = {
        "site": settings,
        "datasets": datasets,
        "boards": boards,
        "default_board": default,
        "models": models,
        "build": {
            "version": _version(),
            "date": _build_date(),
            "commit": git_commit(),
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
    from .. import __version__

    return __version__


def _static_files() -> dict[str, bytes]:
    from importlib.resources import files as package_files

    root = package_files("prh_bench.site") / "static"
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
