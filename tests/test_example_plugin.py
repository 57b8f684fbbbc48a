"""The third-party example plugin, installed as its own distribution and found by entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "plugins" / "example-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip-install the example into a private folder; PYTHONPATH makes it visible."""
    target = tmp_path_factory.mktemp("example-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("PRH_BENCH_LOAD_PLUGINS", None)
    return env


def prh(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "prh_bench", *args], env=env, capture_output=True, text=True
    )


def test_example_objects_appear_in_listings(installed):
    models = json.loads(prh(installed, "models", "--json").stdout)
    assert {"id": "example/colour-histogram", "plugin": "example"}.items() <= next(
        m for m in models if m["id"] == "example/colour-histogram"
    ).items()
    assert "example-shapes-16" in prh(installed, "datasets").stdout
    assert "example_rsa_spearman" in prh(installed, "metrics").stdout
    plugins = json.loads(prh(installed, "plugins", "--json").stdout)
    example = next(p for p in plugins if p["name"] == "example")
    assert example["distribution"] == "prh-bench-example" and example["version"] == "0.1.0"


def test_example_command_and_objects_work(installed, tmp_path):
    out = prh(installed, "example-export", str(tmp_path / "shapes"))
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "shapes" / "captions.jsonl").read_text().splitlines()
    assert len(lines) == 16 and json.loads(lines[0])["caption"] == "a red circle"
    code = (
        "import prh_bench as pb;"
        "ds = pb.get_dataset('shapes'); m = pb.get_model('example/colour-histogram').load();"
        "f = m.features(list(ds)); a = pb.align_layers(f, f, 'example_rsa_spearman', q=None);"
        "print(len(ds), a.matrix.shape, round(a.best, 6))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], env=installed, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["16", "(2,", "2)", "1.0"]


def test_example_is_absent_without_install(fresh_plugins):
    import prh_bench

    with pytest.raises(prh_bench.UnknownIdError):
        prh_bench.get_model("example/colour-histogram")
