"""Nothing lost: SIGKILL during extraction and during result writing, two runs sharing one cache.

Each test drives the real `prh-bench run` in a subprocess on tiny real models
(tests/runner_plugin.py, installed for the subprocess through a real entry point).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MODELS = "tiny/pixels-a,tiny/words-a"
N = 18  # samples in tiny-shapes


@pytest.fixture
def env(tmp_path):
    """A subprocess environment where the tiny plugin is an installed distribution."""
    site = tmp_path / "site"
    dist = site / "prh_bench_tiny-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: prh-bench-tiny\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[prh_bench]\ntiny = runner_plugin\n")
    out = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{TESTS}"}
    out.pop("PRH_BENCH_LOAD_PLUGINS", None)
    return out


def run_args(cache: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "prh_bench",
        "run",
        "--models",
        MODELS,
        "--dataset",
        "tiny-shapes",
        "--topk",
        "3",
        "--null-permutations",
        "9",
        "--batch-size",
        "2",
        "--cache-dir",
        str(cache),
        "--output",
        str(output),
    ]


def finish(args, env, **extra):
    out = subprocess.run(args, env={**env, **extra}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def scores(output: Path) -> list[tuple]:
    [path] = (output / "tiny-shapes").glob("*.json")
    data = json.loads(path.read_text())
    return [
        (s["model_a"], s["model_b"], s["value"], s["matrix"], s["null"]) for s in data["scores"]
    ]


def checkpointed_rows(cache: Path) -> dict[str, int]:
    """Rows saved in finished checkpoint chunks, by model folder."""
    from safetensors import safe_open

    rows: Counter[str] = Counter()
    for chunk in cache.glob("features/*/*/*.partial/chunk-*.safetensors"):
        with safe_open(str(chunk), framework="pt") as f:
            meta = json.loads(f.metadata()["prh_bench"])
        rows[chunk.parent.parent.name] += meta["stop"] - meta["start"]
    return dict(rows)


def encoded(log: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    if log.exists():
        for name, rows in (line.split() for line in log.read_text().splitlines()):
            counts[name] += int(rows)
    return counts


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sigkill_during_extraction_resumes_without_recomputing(env, tmp_path):
    finish(run_args(tmp_path / "clean-cache", tmp_path / "clean"), env)

    cache, log = tmp_path / "cache", tmp_path / "killed.log"
    victim = subprocess.Popen(
        run_args(cache, tmp_path / "out"),
        env={**env, "TINY_SLEEP": "0.3", "TINY_LOG": str(log), "PRH_BENCH_CHECKPOINT_SECONDS": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: sum(checkpointed_rows(cache).values()) >= 4)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    saved = checkpointed_rows(cache)
    [(model_dir, rows)] = saved.items()  # the first model was being extracted
    assert model_dir == "tiny--pixels-a" and 4 <= rows < N
    assert not list((tmp_path / "out").rglob("*.json"))  # no result from the killed run

    rerun_log = tmp_path / "rerun.log"
    finish(run_args(cache, tmp_path / "out"), env, TINY_LOG=str(rerun_log))
    # the rerun encoded exactly the rows that were not checkpointed, and the whole second model
    assert encoded(rerun_log) == Counter({"pixels-1": N - rows, "words-1": N})
    assert scores(tmp_path / "out") == scores(tmp_path / "clean")
    assert not list(cache.rglob("*.partial"))  # checkpoints are cleaned up once complete


KILL_WHILE_WRITING = """
import sys, time
import prh_bench.results as results
from prh_bench.storage import atomic_write, atomic_write_text

def torn_write(path, text):
    if "tiny-shapes" not in str(path):  # only the result file, not the score cache
        return atomic_write_text(path, text)

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text[: len(text) // 2])
            f.flush()
            print("WRITING", flush=True)
            time.sleep(60)  # killed here, half the file on disk under its temporary name
            f.write(text[len(text) // 2 :])
    atomic_write(path, write)

results.atomic_write_text = torn_write
from prh_bench.cli import main
sys.argv = ["prh-bench"] + sys.argv[1:]
main()
"""


def test_sigkill_during_result_writing_leaves_no_valid_looking_file(env, tmp_path):
    import prh_bench

    cache, output = tmp_path / "cache", tmp_path / "out"
    args = run_args(cache, output)
    victim = subprocess.Popen(
        [sys.executable, "-c", KILL_WHILE_WRITING, *args[3:]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert victim.stdout.readline().strip() == "WRITING"
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    torn = list(output.rglob("*.tmp"))
    assert len(torn) == 1 and not list(output.rglob("*.json"))
    assert prh_bench.load_results(output).empty  # a torn temporary file is never read

    log = tmp_path / "rerun.log"
    finish(args, env, TINY_LOG=str(log))
    assert encoded(log) == Counter()  # features came from the store: nothing recomputed
    finish(run_args(tmp_path / "clean-cache", tmp_path / "clean"), env)
    assert scores(output) == scores(tmp_path / "clean")


def test_two_runs_sharing_a_cache_compute_each_unit_once(env, tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "shared.log"
    extra = {"TINY_SLEEP": "0.05", "TINY_LOG": str(log)}
    procs = [
        subprocess.Popen(
            run_args(cache, tmp_path / f"out{i}"),
            env={**env, **extra},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    assert encoded(log) == Counter({"pixels-1": N, "words-1": N})  # each model extracted once
    assert scores(tmp_path / "out0") == scores(tmp_path / "out1")
    assert not list(cache.rglob("*.tmp"))


# --------------------------------------------------------------------------- issue 14 (runtime):
# Ctrl-C


def test_ctrl_c_says_interrupted_exits_130_and_the_rerun_resumes(env, tmp_path):
    cache = tmp_path / "cache"
    victim = subprocess.Popen(
        run_args(cache, tmp_path / "out"),
        env={**env, "TINY_SLEEP": "0.3", "PRH_BENCH_CHECKPOINT_SECONDS": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job (nohup ... &) ignores SIGINT, and Python keeps an ignored
        # SIGINT ignored: give the victim the default, as a terminal's Ctrl-C finds it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert wait_for(lambda: sum(checkpointed_rows(cache).values()) >= 4)
    finally:
        victim.send_signal(signal.SIGINT)
        _, err = victim.communicate(timeout=60)
    assert victim.returncode == 130, err[-2000:]
    assert err.rstrip().endswith("Interrupted.")
    assert "Aborted!" not in err and "Traceback" not in err
    rows = sum(checkpointed_rows(cache).values())
    log = tmp_path / "rerun.log"
    finish(run_args(cache, tmp_path / "out"), env, TINY_LOG=str(log))
    assert encoded(log) == Counter({"pixels-1": N - rows, "words-1": N})


# ---------------------------------------------------------------------------------------------
# Issue 14 (reliability round two): the leaderboard site is swapped into place so that a kill,
# a full disk or a read-only folder never leaves less than the previous site.

SITE_KILLED_MID_SWAP = """
import os, sys, time
real_replace = os.replace

def replace(src, dst):
    real_replace(src, dst)
    if ".old-" in os.path.basename(str(dst)):  # the old site is aside, the new one not in
        print("SWAPPING", flush=True)
        time.sleep(60)

os.replace = replace
from prh_bench.site import SiteSettings, build_site
build_site([sys.argv[1]], sys.argv[2], SiteSettings(bootstrap_resamples=200))
"""


@pytest.fixture
def built_site(tmp_path, monkeypatch):
    from test_leaderboard import make_result

    # a fixed build date, so that pages built a minute apart compare equal byte for byte
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")

    from prh_bench.results import write_result
    from prh_bench.site import SiteSettings, build_site

    results = tmp_path / "results"
    write_result(make_result(), results)
    site = tmp_path / "public" / "site"
    build_site([results], site, SiteSettings(bootstrap_resamples=200))
    return results, site


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_sigkill_between_the_site_swap_renames_is_repaired_by_the_next_build(built_site):
    from prh_bench.site import LeaderboardError, SiteSettings, build_site

    results, site = built_site
    before = (site / "index.html").read_bytes()
    victim = subprocess.Popen(
        [sys.executable, "-c", SITE_KILLED_MID_SWAP, str(results), str(site)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert victim.stdout.readline().strip() == "SWAPPING", victim.stderr.read()[-2000:]
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert not site.exists()  # killed between the renames: nothing at -o ...
    left = hidden(site.parent)
    assert [n.split("-")[0] for n in left] == [".site.new", ".site.old"]  # ... both kept aside

    # the next build puts the earlier site back first, even one that then fails
    with pytest.raises(LeaderboardError, match="metric 'nope' has no scores"):
        build_site([results], site, SiteSettings(bootstrap_resamples=200, default_metric="nope"))
    assert (site / "index.html").read_bytes() == before and hidden(site.parent) == []
    build_site([results], site, SiteSettings(bootstrap_resamples=200))
    assert (site / "index.html").read_bytes() == before and hidden(site.parent) == []


@pytest.mark.parametrize(
    "failure,message",
    [
        (errno.ENOSPC, "no space left on the device while writing {site}"),
        (errno.EROFS, "permission denied writing {site}"),
    ],
)
def test_full_disk_or_read_only_folder_while_building_keeps_the_site(
    built_site, monkeypatch, failure, message
):
    import prh_bench.site.build as build

    results, site = built_site
    before = {p: p.read_bytes() for p in site.rglob("*") if p.is_file()}
    real_write = Path.write_bytes
    written = []

    def write_bytes(self, data):
        if ".site.new-" in str(self):
            written.append(self)
            if failure == errno.EROFS or len(written) > 5:  # the disk fills mid-build
                raise OSError(failure, os.strerror(failure), str(self))
        return real_write(self, data)

    monkeypatch.setattr(build.Path, "write_bytes", write_bytes)
    monkeypatch.chdir(site.parent)  # no leaderboard/site.toml here
    Path("fast.toml").write_text("bootstrap_resamples = 200\n")
    args = ["leaderboard", "build", str(results), "-o", str(site), "--settings", "fast.toml"]
    result = run_cli_no_catch(args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("Error: ")]
    assert line.startswith("Error: " + message.format(site=site.resolve()))
    assert {p: p.read_bytes() for p in site.rglob("*") if p.is_file()} == before
    assert hidden(site.parent) == []  # the half-written new site is gone


def run_cli_no_catch(args):
    from click.testing import CliRunner

    from prh_bench.cli import cli

    return CliRunner().invoke(cli, args)
