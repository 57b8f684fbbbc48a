"""Executors run real extraction units (tiny models) and give the local executor's results:
in-process, a spawned process pool, submitit's local cluster and a local Ray instance."""

from __future__ import annotations

import subprocess
import sys

import pytest
from safetensors.torch import load_file

import prh_bench
from prh_bench.executors import ExecutorError, ExtractionUnit, parse_shard
from prh_bench.registry import get_executor
from prh_bench.results import read_result
from prh_bench.runner import RunConfig, run

import runner_plugin

GOOD = "tiny/pixels-a,tiny/pixels-b,tiny/words-a,tiny/words-b"


@pytest.fixture
def tiny(fresh_plugins, tmp_path, monkeypatch):
    fresh_plugins.register_plugin(runner_plugin, name="tiny")
    monkeypatch.setenv("PRH_BENCH_CACHE", str(tmp_path / "cache"))
    for m in runner_plugin.MODELS:
        m.loads = 0
    return tmp_path


def run_with(tmp_path, name, executor="local", **kw):
    base = dict(
        models=GOOD,
        dataset="tiny-shapes",
        output=str(tmp_path / name / "results"),
        cache_dir=str(tmp_path / name / "cache"),
        null_permutations=5,
        topk=3,
        executor=executor,
    )
    return run(RunConfig(**{**base, **kw}), progress=False, log=lambda m: None)


def fingerprint(outcome):
    """Everything a run computed: scores and every model's feature tensors."""
    result = read_result(outcome.path)
    scores = [
        (s.model_a, s.model_b, s.value, s.best_index, s.matrix, s.null.mean) for s in result.scores
    ]
    feats = {
        m.id: {k: v.tolist() for k, v in load_file(m.feature_file).items()} for m in result.models
    }
    return scores, feats


@pytest.fixture
def reference(tiny):
    return fingerprint(run_with(tiny, "local"))


def test_process_pool_equals_in_process(tiny, reference):
    for m in runner_plugin.MODELS:
        m.loads = 0
    outcome = run_with(tiny, "pool", executor_options={"workers": 2})
    assert fingerprint(outcome) == reference
    # the spawned workers loaded the models (from the unit's plugin module), not this process
    assert sum(m.loads for m in runner_plugin.MODELS) == 0
    cache = tiny / "pool" / "cache" / "features"
    assert len(list(cache.glob("*/*/*.safetensors"))) == 4


def test_submitit_local_cluster_equals_local(tiny, reference):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install submitit)")
    outcome = run_with(
        tiny,
        "slurm",
        executor="slurm",
        executor_options={
            "cluster": "local",
            "folder": str(tiny / "jobs" / "%j"),
            "timeout_min": 5,
        },
    )
    assert fingerprint(outcome) == reference
    assert any((tiny / "jobs").iterdir())  # submitit's own logs: it did run the array


def test_ray_local_instance_equals_local(tiny, reference):
    pytest.importorskip("ray", reason="ray is not installed (pip install ray)")
    outcome = run_with(tiny, "ray", executor="ray", executor_options={"local_num_cpus": 2})
    assert fingerprint(outcome) == reference
    import ray

    assert not ray.is_initialized()  # the instance it started is shut down


def test_worker_failure_is_reported_like_in_process(tiny):
    models = GOOD + ",tiny/broken"
    outcome = run_with(
        tiny, "pool", models=models, keep_going=True, executor_options={"workers": 2}
    )
    [failure] = outcome.result.failures
    assert failure.model == "tiny/broken" and failure.stage == "extraction"
    assert failure.reason == "model 'tiny/broken' exploded while loading (test)"
    assert outcome.failed and len(outcome.result.scores) == 4
    # without keep_going the worker's error is raised here as the same one-line error
    with pytest.raises(prh_bench.ModelError, match=r"^model 'tiny/broken' exploded"):
        run_with(tiny, "pool2", models=models, executor_options={"workers": 2})


def test_shards_fill_the_store_then_one_run_scores(tiny, run_cli, reference):
    cache, out = tiny / "sharded" / "cache", tiny / "sharded" / "results"
    args = [
        "run",
        "--models",
        GOOD,
        "--dataset",
        "tiny-shapes",
        "--topk",
        "3",
        "--null-permutations",
        "5",
        "--cache-dir",
        str(cache),
        "--output",
        str(out),
    ]
    for m in runner_plugin.MODELS:  # the reference run loaded them once already
        m.loads = 0
    seen = []
    for shard in ("0/3", "1/3", "2/3"):
        result = run_cli(*args, "--shard", shard)
        assert result.exit_code == 0, result.output
        seen.append(sum(m.loads for m in runner_plugin.MODELS))
        assert f"shard {shard}:" in result.output
    assert seen == [2, 3, 4]  # units 0 and 3, then 1, then 2: each extracted once
    assert not out.exists()  # a shard does not score
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert sum(m.loads for m in runner_plugin.MODELS) == 4  # everything came from the store
    [path] = list((out / "tiny-shapes").glob("*.json"))
    assert [(s.model_a, s.model_b, s.value, s.matrix) for s in read_result(path).scores] == [
        s[:3] + (s[4],) for s in reference[0]
    ]


def test_unit_ids_are_deterministic_and_executor_independent(tiny):
    unit = ExtractionUnit("tiny/words-a", "tiny-shapes", "abc", "/store", device="cuda")
    same = ExtractionUnit("tiny/words-a", "tiny-shapes", "abc", "/elsewhere", device=None)
    other = ExtractionUnit("tiny/words-a", "tiny-shapes", "abd", "/store")
    assert unit.unit_id == same.unit_id != other.unit_id
    assert len(unit.unit_id) == 16 and int(unit.unit_id, 16) >= 0


@pytest.mark.parametrize("text", ["3/2", "1", "a/b", "-1/2", "0/0"])
def test_bad_shard_is_one_line(tiny, run_cli, text):
    result = run_cli("run", "--models", GOOD, "--dataset", "tiny-shapes", "--shard", text)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: --shard must be i/N with 0 <= i < N (e.g. 0/4 ... 3/4), got '{text}'"
    )
    assert parse_shard("2/3") == (2, 3)


def test_unknown_executor_suggests(tiny, run_cli):
    result = run_cli("run", "--models", GOOD, "--dataset", "tiny-shapes", "--executor", "rey")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: unknown executor 'rey'. Did you mean: ray? Run 'prh-bench executors' to list them."
    )


def test_unknown_executor_option_names_the_known_ones(tiny):
    with pytest.raises(
        ExecutorError, match="executor 'local' has no option 'wrokers'; its options: workers"
    ):
        get_executor("local", {"wrokers": 2})
    assert get_executor("slurm", {"slurm_qos": "high"}).config["slurm_qos"] == "high"


@pytest.mark.parametrize("name,module", [("ray", "ray"), ("slurm", "submitit")])
def test_missing_package_says_how_to_install(tiny, monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    unit = ExtractionUnit("tiny/words-a", "tiny-shapes", "x", str(tiny / "cache"))
    with pytest.raises(ExecutorError, match=r"needs .*pip install 'prh-bench\[distributed\]'"):
        get_executor(name).run([unit])


def test_local_executor_pins_one_gpu_per_worker(monkeypatch):
    from prh_bench_plugins import executors_local

    monkeypatch.setattr(executors_local, "visible_gpus", lambda: ["0", "2", "5"])
    local = executors_local.LocalExecutor()
    units = [ExtractionUnit(f"m{i}", "d", "h", "/s", device="cuda") for i in range(4)]
    assert local.plan(units) == (3, ["0", "2", "5"])
    assert local.plan(units[:2]) == (2, ["0", "2"])
    assert local.plan([ExtractionUnit("m", "d", "h", "/s", device="cuda:1")] * 2) == (1, [])
    monkeypatch.setattr(executors_local, "visible_gpus", lambda: [])
    assert local.plan(units) == (1, [])  # CPU: one worker, in this process
    assert local.with_options(workers=2).plan(units) == (2, [])


def test_help_imports_no_heavy_module():
    code = (
        "import sys; from prh_bench.cli import main; sys.argv = ['prh-bench', '--help'];\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('heavy:', *(m for m in ('torch', 'ray', 'submitit') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "executors" in out.stdout and "scale" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "heavy:"
