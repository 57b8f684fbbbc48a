"""Where a result came from: the code's commit, the software versions and the device.

One home for what runs, feature files and the site record about their environment.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

# The distributions whose versions change features or scores.
TRACKED_DISTRIBUTIONS = ("torch", "transformers", "timm", "open_clip_torch", "numpy")


def git_commit() -> str | None:
    """The commit of the prh-bench checkout (``$GITHUB_SHA`` in CI), or None outside git."""
    sha = os.environ.get("GITHUB_SHA")
    if sha:
        return sha
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def distribution_version(name: str) -> str | None:
    """The installed version of a distribution, or None where it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def prh_bench_version() -> str:
    return __version__


# Here rather than in the package's __init__, so that the low layers can read it without
# importing the whole public API.
__version__ = distribution_version("prh-bench") or "0.0.0+unknown"  # unknown: a source tree


def environment(device: str) -> dict[str, Any]:
    """Python, platform, device (with the GPU's name) and the tracked distributions' versions."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
    }
    for dist in TRACKED_DISTRIBUTIONS:
        env[dist] = distribution_version(dist)
    if device.startswith("cuda"):
        import torch

        env["gpu"] = torch.cuda.get_device_name(0)
    return env
