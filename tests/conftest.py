from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# the plain re-implementations of the paper's formulas live beside the tests
sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_plugins(monkeypatch):
    """A plugin manager loaded anew for this test, and forgotten after it."""
    from prh_bench import plugins

    monkeypatch.delenv("PRH_BENCH_LOAD_PLUGINS", raising=False)
    plugins.reset()
    yield plugins
    plugins.reset()


@pytest.fixture
def run_cli():
    """Invoke the CLI in-process; returns the click Result."""
    from click.testing import CliRunner

    from prh_bench.cli import cli

    def invoke(*args: str, env: dict[str, str] | None = None):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA; none on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
