"""The site's settings: ``leaderboard/site.toml`` (keys at the top level or under ``[site]``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..config import check_types, key_line, read_toml
from ..errors import PrhBenchError

DEFAULT_RESULTS = Path("leaderboard") / "results"
DEFAULT_SETTINGS = Path("leaderboard") / "site.toml"


class LeaderboardError(PrhBenchError):
    """No results to build from, bad site settings, or a reference model that is not there."""


@dataclass
class SiteSettings:
    """What a site shows and how; every field is a key of ``site.toml``."""

    title: str = "prh-bench leaderboard"
    description: str = (
        "How alike do vision and language models see the world? Alignment of their "
        "representations on paired image-caption data (Huh et al. 2024, arXiv:2405.07987)."
    )
    reference_vision: str = "*dinov2*"  # an id or a glob; the largest match is the reference
    # why that model is the reference (the reading panel says it); "" says only which it is
    reference_reason: str = ""
    default_metric: str = "mutual_knn"
    default_dataset: str | None = None  # a dataset id; None: the one with the most models
    bootstrap_resamples: int = 2000  # for the correlation intervals
    # a correlation (its fit line and interval) is shown only from this many models on
    correlation_min_models: int = 5
    # dataset id -> what the data is, for the reading panel (else the dataset plugin's summary)
    datasets: dict[str, str] = field(default_factory=dict)
    # the history page's comparison of the latest run with the one before (prh-bench check)
    history_tolerance: float = 0.01
    templates: str | None = None  # a folder of template overrides (relative to site.toml)

    def override(self, **values: Any) -> SiteSettings:
        """These settings with the given values in place of theirs (None: keep theirs)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def load_settings(path: str | os.PathLike[str] | None) -> SiteSettings:
    """Read site settings; ``None`` gives the defaults."""
    if path is None:
        return SiteSettings()
    path = Path(path)
    data, text = read_toml(path, "site", LeaderboardError)
    kinds: dict[str, type | tuple[type, ...]] = {
        "bootstrap_resamples": int,
        "correlation_min_models": int,
        "datasets": dict,
        "history_tolerance": (float, int),
    }
    expected = {f.name: kinds.get(f.name, str) for f in fields(SiteSettings)}
    check_types(data, expected, path, text, LeaderboardError)
    for ident, description in data.get("datasets", {}).items():
        if not isinstance(description, str):
            raise LeaderboardError(
                f"{path}: datasets.{ident} must be a string (what the dataset is), "
                f"got {description!r}"
            )
    settings = SiteSettings(**data)
    if settings.templates is not None:
        folder = (path.parent / settings.templates).resolve()
        if not folder.is_dir():
            line = key_line(text, "templates")
            raise LeaderboardError(
                f"{path}{f', line {line}' if line else ''}: templates folder {folder} does not "
                "exist; create it or remove the key"
            )
        settings.templates = str(folder)
    if settings.bootstrap_resamples < 100:
        raise LeaderboardError(f"{path}: bootstrap_resamples must be >= 100")
    if settings.correlation_min_models < 3:
        raise LeaderboardError(f"{path}: correlation_min_models must be >= 3")
    if settings.history_tolerance < 0:
        raise LeaderboardError(f"{path}: history_tolerance must be >= 0")
    settings.history_tolerance = float(settings.history_tolerance)
    return settings
