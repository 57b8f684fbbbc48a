"""The default `prh-bench run` on the full offline suite and openclipart-1024, as a user runs it.

Slow (tens of minutes on two cores): marked `slow`; CI runs it. Skip it while iterating with
`python -m pytest -m "not slow"`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "PRH_BENCH_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("PRH_BENCH_LOAD_PLUGINS", None)
    return root, env


def prh(env, cwd, *args):
    return subprocess.run(
        [sys.executable, "-m", "prh_bench", *args], env=env, cwd=cwd, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def default_run(workspace):
    root, env = workspace
    out = prh(env, root, "run")  # no arguments: the documented default
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_default_run_prints_the_table_and_writes_a_valid_result(default_run, workspace):
    import prh_bench

    root, _ = workspace
    assert "openclipart-1024 (N=1024)" in default_run.stdout
    assert "| model_a" in default_run.stdout and "null mean" in default_run.stdout
    [path] = (root / "results" / "openclipart-1024").glob("*.json")
    assert f"wrote results/openclipart-1024/{path.name}" in default_run.stdout
    result = prh_bench.read_result(path)
    language = {m.id for m in result.models if m.modality == "language"}
    vision = {m.id for m in result.models if m.modality == "vision"}
    assert {"all-MiniLM-L6-v2", "gemma-3-270m"} <= language
    assert vision == {f"efficientnet_lite{i}{s}" for i in range(3) for s in ("", ".random")}
    assert len(result.scores) == len(language) * len(vision)
    assert all(s.metric == "mutual_knn" and s.params == {"topk": 10} for s in result.scores)
    assert all(s.null is not None and s.null.permutations == 100 for s in result.scores)
    gemma = result.model("gemma-3-270m")
    assert gemma.bpb is not None and 0.5 < gemma.bpb < 10
    df = prh_bench.load_results(path)
    assert len(df) == len(result.scores)
    # trained vision models align better with language than their random-init controls
    by_pair = {(s.model_a, s.model_b): s.value for s in result.scores}
    trained = [by_pair[(lm, f"efficientnet_lite{i}")] for lm in language for i in range(3)]
    control = [by_pair[(lm, f"efficientnet_lite{i}.random")] for lm in language for i in range(3)]
    assert sum(trained) / len(trained) > sum(control) / len(control)


def test_rerun_comes_from_the_store_and_checks_clean(default_run, workspace):
    root, env = workspace
    again = prh(env, root, "run", "--output", "second")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("(cached)") >= 8
    [first] = (root / "results" / "openclipart-1024").glob("*.json")
    [second] = (root / "second" / "openclipart-1024").glob("*.json")
    check = prh(env, root, "check", "--baseline", str(first), str(second), "--tolerance", "0")
    assert check.returncode == 0, check.stdout + check.stderr


def test_models_all_without_the_hub_lists_each_unreachable_model_once(default_run, workspace):
    root, env = workspace
    out = prh(
        env,
        root,
        "run",
        "--models",
        "all",
        "--limit",
        "32",
        "--null-permutations",
        "0",
        "--output",
        "all",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    skipped = [line for line in out.stderr.splitlines() if line.startswith("skipped ")]
    ids = [line.split()[1].rstrip(":") for line in skipped]
    assert len(ids) == len(set(ids)) and "vit_large_patch14_dinov2.lvd142m" in ids
    # a hub model says the hub is off; a model whose package is missing names its install line
    for line in skipped:
        assert "HF_HUB_OFFLINE is set" in line or "not installed: pip install" in line, line
    assert all("HF_HUB_OFFLINE is set" in line for line in skipped if "dinov2.lvd142m" in line)
    [path] = (root / "all" / "openclipart-1024").glob("*.json")
    data = json.loads(path.read_text())
    assert {f["stage"] for f in data["failures"]} == {"availability"}
    assert len(data["scores"]) >= 6
