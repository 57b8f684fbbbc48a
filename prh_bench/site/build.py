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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..correlate import format_interval, is_control
from ..provenance import git_commit
from ..results import Results, ResultsError, expand_paths
from ..stats import format_rank
from ..storage import slug, writing
from .downstream import add_correlations, make_headline
from .explain import dataset_text, metric_text
from .figures import draw_headline, draw_heatmap, draw_scale, draw_scatter, heatmap_alt, scatter_alt
from .history import make_history
from .model import (
    Board,
    Dataset,
    Row,
    controls_of,
    default_board,
    make_board,
    make_datasets,
    model_entries,
    owner_of,
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


def _p_value(value: float | None, permutations: int | None = None, floor: bool = False) -> str:
    """A permutation p-value; at the floor (no permutation reached the score) the bound it
    is, ``<= 1/(B+1)``, never a number that looks exact."""
    if floor and permutations:
        return f"<= 1/{permutations + 1}"
    return _fmt(value, 3)


def _signed(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:+.{digits}f}"


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
    if templates is not None and not Path(templates).is_dir():
        raise LeaderboardError(f"templates folder {templates} does not exist")
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
            "p_value": _p_value,
            "rank_range": format_rank,
            "signed": _signed,
            "heatmap_alt": heatmap_alt,  # alt texts that state what a figure shows
            "scatter_alt": scatter_alt,
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
        "p_at_floor",
        "permutations",
        "ci_low",
        "ci_high",
        "honest",
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
                    "p_at_floor": s.at_floor if s.p_value is not None else None,
                    "permutations": s.permutations,
                    "ci_low": s.interval[0] if s.interval else None,
                    "ci_high": s.interval[1] if s.interval else None,
                    "honest": s.honest,
                }
                records.append(row)
                writer.writerow([_csv_cell(row[f]) for f in fields_])
    board_data = [
        {
            "dataset": b.dataset.id,
            "n": b.dataset.n,
            "metric": b.metric.key,
            "reference_vision": b.reference.id if b.reference else None,
            "reference_control": b.reference_control.id if b.reference_control else None,
            "chance": b.chance,
            "untrained": b.untrained,
            "language_ranking": [
                {
                    "rank": r.rank,
                    "model": r.model.id,
                    "value": r.value,
                    **_uncertainty(r),
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
                    **_uncertainty(r),
                    "n": r.n,
                    "null_mean": r.null_mean,
                    "control": r.control,
                    "is_control": r.is_control,
                }
                for r in b.vision_rows
            ],
            "correlations": [
                {
                    k: getattr(c.record, k)
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
                if c.record is not None  # below the minimum of models: no correlation
            ],
        }
        for b in boards
    ]
    doc = {"scores": records, "boards": board_data}
    return {
        "data/scores.csv": buffer.getvalue().encode(),
        "data/leaderboard.json": (json.dumps(doc, indent=1) + "\n").encode(),
    }


def _uncertainty(row: Row) -> dict[str, Any]:
    return {
        "interval": list(row.interval) if row.interval else None,
        "honest": row.honest,
        "rank_range": list(row.rank_range) if row.rank_range else None,
        "p_value": row.p_value,
        "p_at_floor": row.at_floor if row.p_value is not None else None,
    }


@dataclass
class BuildReport:
    output: Path
    pages: list[str]
    files: int
    datasets: list[str]
    metrics: list[str]
    skipped: list[str] = field(default_factory=list)  # result files left out (unreadable)


def find_results(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The result files of ``paths`` (default: leaderboard/results/). Folders are scanned
    without the sites built inside them: a site's copies of the runs are not more runs."""
    given = [Path(p) for p in paths] or [DEFAULT_RESULTS]
    for p in given:
        if not p.exists():
            raise LeaderboardError(f"{p}: no such file or folder of results")
    found = [f for f in expand_paths(given) if f in given or not _in_a_site(f, given)]
    if not found:
        where = ", ".join(str(p) for p in given)
        raise LeaderboardError(
            f"no result files (*.json) in {where}; run 'prh-bench run --output "
            f"{DEFAULT_RESULTS}' or name result files"
        )
    return found


def _in_a_site(path: Path, roots: list[Path]) -> bool:
    """Whether a folder between ``path`` and the root it was found under is a built site."""
    for root in roots:
        if root.is_dir() and path.is_relative_to(root):
            folder = path.parent
            while folder != root and folder.is_relative_to(root):
                if (folder / SITE_MARKER).exists():
                    return True
                folder = folder.parent
            return (root / SITE_MARKER).exists()
    return False


def build_site(
    paths: Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    settings: SiteSettings | None = None,
    log: Callable[[str], None] | None = None,
    strict: bool = False,
) -> BuildReport:
    """Build the static site from result files/folders into ``output`` (replaced atomically).

    A result file that cannot be read is left out with one line in ``log`` naming it and why;
    with ``strict`` it fails the build instead.
    """
    settings = settings or SiteSettings()
    log = log or (lambda message: None)
    recover_site(Path(output))
    files = find_results(paths)
    skipped: dict[str, str] = {}

    def skip(path: Path, error: ResultsError) -> None:
        if strict:
            raise LeaderboardError(f"{error} (--strict: no build with a bad result file)")
        skipped[str(path)] = str(error)
        log(f"warning: left out {error}")

    results = Results.read(files, on_error=skip)
    if not results.runs:
        first = next(iter(skipped.values()))
        more = f" (and {len(skipped) - 1} more unreadable files)" if len(skipped) > 1 else ""
        raise LeaderboardError(f"no result file can be read: {first}{more}")
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
        if b.language_rows:
            b.scale_figure = f"figures/scale-{b.slug}.svg"
            out[b.scale_figure] = draw_scale(b)
        add_correlations(b, settings.bootstrap_resamples, settings.correlation_min_models)
        for corr in b.correlations:
            if corr.figure:  # a saved correlation has no points to draw
                out[corr.figure] = draw_scatter(b, corr)
    headline = make_headline(default, settings.correlation_min_models)
    if headline.figure:
        out[headline.figure] = draw_headline(headline)
    histories = [make_history(ds, settings.history_tolerance) for ds in datasets]
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
        "histories": histories,
        "metric_texts": {b.metric.name: metric_text(b.metric.name) for b in boards},
        "dataset_texts": {ds.id: dataset_text(ds.id, settings.datasets) for ds in datasets},
        "controls_of": controls_of,
        "owner_of": owner_of,
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

    render("board.html", "index.html", board=default, headline=headline)
    for b in boards:
        render("board.html", f"board-{b.slug}.html", board=b, headline=None)
        render("matrix.html", f"matrix-{b.slug}.html", board=b)
        render("downstream.html", f"downstream-{b.slug}.html", board=b)
    render("models.html", "models.html")
    for m in models:
        render("model.html", f"models/{m.slug}.html", entry=m)
    render("data.html", "data.html")
    render("history.html", "history.html")
    static = _static_files()
    out.update(static)
    out[SITE_MARKER] = b"built by prh-bench leaderboard build; may be replaced by it\n"
    out[".nojekyll"] = b""  # GitHub Pages: serve files as they are
    _write_tree(Path(output), out)
    pages = sorted(p for p in out if p.endswith(".html"))
    log(f"built {len(pages)} pages ({len(out)} files) from {len(results.runs)} result file(s)")
    return BuildReport(
        output=Path(output),
        pages=pages,
        files=len(out),
        datasets=[d.label for d in datasets],
        metrics=sorted({m.key for d in datasets for m in d.metrics.values()}),
        skipped=list(skipped),
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
    the marker file), so ``-o .`` cannot delete a project. The swap is two renames (the old site
    aside, the new one in); a build killed between them is repaired by the next one. Builds hold
    a lock on the parent folder while they write, so every hidden sibling one finds there is a
    leftover of an interrupted build.
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
    with writing(output):
        output.parent.mkdir(parents=True, exist_ok=True)
        with _locked(output.parent):
            _repair(output)
            tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.new-"))
            try:
                for rel, data in files.items():
                    target = tmp / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                os.chmod(tmp, 0o755)
                old = None
                if output.exists():
                    old = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.old-"))
                    os.replace(output, old)  # (an empty folder is replaced by a rename)
                os.replace(tmp, output)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise


def recover_site(output: Path) -> None:
    """Repair what a build of ``output`` killed mid-swap left (see ``_write_tree``), even when
    this build fails later: the earlier site is back at ``output``, no hidden folder stays."""
    output = output.resolve()
    if output.parent.is_dir() and _leftovers(output):
        with writing(output), _locked(output.parent):
            _repair(output)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` itself (flock on its descriptor: no lock file is left
    behind); where there is no flock (Windows), builds into one folder must not overlap."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _leftovers(output: Path) -> list[Path]:
    """Hidden siblings an interrupted build of ``output`` left: ``.NAME.new-*``,
    ``.NAME.old-*``, and the ``.NAME.*.tmp`` of earlier versions."""
    prefix = f".{output.name}."
    return sorted(
        p
        for p in output.parent.iterdir()
        if p.name.startswith(prefix)
        and p.is_dir()
        and (p.name[len(prefix) :].startswith(("new-", "old-")) or p.name.endswith(".tmp"))
    )


def _repair(output: Path) -> None:
    """Undo an interrupted swap (the lock is held): put back the complete earlier site where none
    is at ``output``, and remove the rest."""
    leftovers = _leftovers(output)
    if not output.exists():
        old = [p for p in leftovers if p.name.startswith(f".{output.name}.old-")]
        previous = [p for p in old if (p / SITE_MARKER).exists()]
        if previous:
            os.replace(previous[-1], output)
            leftovers.remove(previous[-1])
    for p in leftovers:
        shutil.rmtree(p)
