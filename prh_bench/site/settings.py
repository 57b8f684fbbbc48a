"""The site's settings: ``leaderboard/site.toml`` (keys at the top level or under ``[site]``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
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
    default_metric: str = "mutual_knn"
    default_dataset: str | None = None  # a dataset id; None: the one with the most models
    bootstrap_resamples: int = 2000  # for the correlation intervals
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
    expected = {
        f.name: int if f.name == "bootstrap_resamples" else str for f in fields(SiteSettings)
    }
    check_types(data, expected, path, text, LeaderboardError)
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
    return settings
