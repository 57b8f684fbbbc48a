"""The static leaderboard site: result files -> boards -> Jinja2 templates -> files.

``build_site(paths, output, settings)`` reads any number of result files (folders contribute
every ``*.json`` below them) as one ``prh_bench.results.Results`` collection, merged per
(dataset, N), and writes a site that needs no server and no JavaScript (JS only adds
click-to-sort):

- ``index.html`` and ``board-<dataset>-<metric>.html``: language models ranked by alignment to
  a reference vision model, vision models ranked by mean alignment to the language models,
  each score with its interval, honest score and rank range, beside its floors (the
  shuffled-pairs null and the random-init control), under a "how to read this" panel; the
  front page also carries the headline (alignment against bits per byte);
- ``matrix-<dataset>-<metric>.html``: the language x vision alignment matrix as a heatmap;
- ``downstream-<dataset>-<metric>.html``: alignment versus downstream scores (bpb, HellaSwag,
  ...): every point with its value, the models left out and why, and from a minimum number of
  models a fit line and Pearson r / Spearman rho with bootstrap intervals, computed by
  ``prh_bench.correlate`` as ``prh-bench correlate`` does;
- ``models/<slug>.html``: one page per model; ``models.html`` lists them;
- ``history.html``: every run, and what changed between the latest two (``prh-bench check``);
- ``data.html`` with ``data/scores.csv``, ``data/leaderboard.json`` and the raw result files.

One room per concern: ``settings`` (site.toml), ``model`` (boards and rows), ``downstream``
(downstream sections, the headline), ``explain`` (plain texts), ``history`` (runs compared),
``figures`` (matplotlib SVGs), ``build`` (rendering, data files, the atomic swap), ``serve``
(preview).
"""

from __future__ import annotations

from .build import SITE_MARKER, BuildReport, build_site, find_results, make_environment, safe_url
from .model import Board, Dataset, control_for, make_board, make_datasets, pick_reference
from .serve import make_server
from .settings import (
    DEFAULT_RESULTS,
    DEFAULT_SETTINGS,
    LeaderboardError,
    SiteSettings,
    load_settings,
)

__all__ = [
    "DEFAULT_RESULTS",
    "DEFAULT_SETTINGS",
    "SITE_MARKER",
    "Board",
    "BuildReport",
    "Dataset",
    "LeaderboardError",
    "SiteSettings",
    "build_site",
    "control_for",
    "find_results",
    "load_settings",
    "make_board",
    "make_datasets",
    "make_environment",
    "make_server",
    "pick_reference",
    "safe_url",
]
