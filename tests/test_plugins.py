"""The plugin core: one test per hook (a missing one fails), registry errors, entry points."""

from __future__ import annotations

import importlib.metadata
import inspect
import os
import sys
import types

import pytest
import torch

import prh_bench
from prh_bench import hookimpl, hookspecs
from prh_bench.errors import DuplicateIdError, PluginError, UnknownIdError
from prh_bench.registry import get_registry

HOOKS = sorted(
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "prh_bench_spec")
)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    assert f"test_hook_{hook}" in globals(), f"hook {hook} has no test_hook_{hook} in this file"


class TinyVision(prh_bench.ModelAdapter):
    id = "tiny/vision-test"
    modality = "vision"
    family = "test"

    def load(self, device="cpu", dtype=None):
        raise NotImplementedError("not needed by these tests")


class TinyDataset(prh_bench.Dataset):
    id = "tiny-dataset-test"

    def __len__(self):
        return 3


class ConstantMetric(prh_bench.Metric):
    name = "constant_test"

    def prepare(self, feats):
        return feats.shape[0]

    def compare(self, a, b):
        return 0.5


def make_plugin(**hooks):
    module = types.ModuleType("test_plugin")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return module


def test_hook_register_models(fresh_plugins):
    fresh_plugins.register_plugin(
        make_plugin(register_models=lambda register: register(TinyVision(), aliases=("tinyvis",))),
        name="tiny-models",
    )
    model = prh_bench.get_model("tinyvis")
    assert model.id == "tiny/vision-test"
    assert get_registry("model").entry("tinyvis").plugin.name == "tiny-models"


def test_hook_register_datasets(fresh_plugins):
    fresh_plugins.register_plugin(
        make_plugin(register_datasets=lambda register: register(TinyDataset())),
        name="tiny-datasets",
    )
    assert len(prh_bench.get_dataset("tiny-dataset-test")) == 3


def test_hook_register_metrics(fresh_plugins):
    fresh_plugins.register_plugin(
        make_plugin(register_metrics=lambda register: register(ConstantMetric)), name="tiny-metrics"
    )
    metric = prh_bench.get_metric("constant_test")
    assert metric.score(torch.ones(4, 2), torch.ones(4, 3)) == 0.5
    assert get_registry("metric").entry("constant_test").plugin.name == "tiny-metrics"


def test_hook_knn_backend(fresh_plugins):
    from prh_bench.registry import get_knn_backend, knn_indices

    calls = []

    class Reversed:  # answers only small problems; returns neighbours in index order
        name = "test-backend"

        def __call__(self, feats, k):
            calls.append(k)
            n = feats.shape[0]
            idx = torch.arange(n).repeat(n, 1)
            keep = idx != torch.arange(n)[:, None]
            return idx[keep].view(n, n - 1)[:, :k]

    def knn_backend(device, n, dim, k):
        return Reversed() if n <= 8 else None

    fresh_plugins.register_plugin(make_plugin(knn_backend=knn_backend), name="small-knn")
    assert get_knn_backend("cpu", 8, 4, 2).name == "test-backend"
    assert get_knn_backend("cpu", 100, 4, 2).name == "torch-exact"  # the trylast fallback
    assert knn_indices(torch.randn(5, 3), 2).tolist()[0] == [1, 2]
    assert calls == [2]


def test_hook_register_commands(fresh_plugins, run_cli):
    import click

    def register_commands(cli):
        @cli.command(name="hello-test")
        @click.option("--name", default="world", help="Who to greet.")
        def hello(name):
            """Say hello."""
            click.echo(f"hello {name}")

    fresh_plugins.register_plugin(make_plugin(register_commands=register_commands), "hello")
    from prh_bench.cli import cli

    cli._plugin_commands_added = False  # the group is module-global; let it see the new plugin
    try:
        result = run_cli("hello-test", "--name", "prh")
        assert result.exit_code == 0 and result.output == "hello prh\n"
    finally:
        cli.commands.pop("hello-test", None)
        cli._plugin_commands_added = False


def test_hook_register_executors(fresh_plugins, run_cli):
    import json

    from prh_bench.executors import Executor, ExtractionUnit, UnitResult
    from prh_bench.registry import get_executor

    class Recording(Executor):
        name = "recording-test"
        summary = "records the units it is given"
        options = {"label": "x"}
        seen: list = []

        def run(self, units, *, progress=False, stop_on_error=False):
            Recording.seen.extend((self.config["label"], u.unit_id) for u in units)
            return [UnitResult.lost(u, "not run (test)") for u in units]

    fresh_plugins.register_plugin(
        make_plugin(register_executors=lambda register: register(Recording())), "recorder"
    )
    executor = get_executor("recording-test", {"label": "y"})
    unit = ExtractionUnit("m", "d", "h", "/store")
    [result] = executor.run([unit])
    assert Recording.seen == [("y", unit.unit_id)] and not result.ok
    assert get_registry("executor").entry("recording-test").plugin.name == "recorder"
    listed = json.loads(run_cli("executors", "--json").output)
    assert {"local", "slurm", "ray", "recording-test"} <= {row["name"] for row in listed}
    assert {row["name"]: row["plugin"] for row in listed}["recording-test"] == "recorder"


def test_hook_prepare_jinja2_environment(fresh_plugins):
    from prh_bench.results import ModelRecord
    from prh_bench.site import make_environment

    def prepare_jinja2_environment(env):
        env.filters["shout"] = lambda text: f"{text.upper()}!"

    fresh_plugins.register_plugin(
        make_plugin(prepare_jinja2_environment=prepare_jinja2_environment), "shouting"
    )
    env = make_environment()
    assert (
        env.from_string("{{ name | shout }}").render(name="<b>hi</b>") == "&lt;B&gt;HI&lt;/B&gt;!"
    )
    # the built-in site_links plugin uses the same hook for model pages' hub links
    model = ModelRecord(id="bigscience/bloomz-560m", modality="language", family="x", num_layers=1)
    assert env.from_string("{{ m | model_url }}").render(m=model) == (
        "https://huggingface.co/bigscience/bloomz-560m"
    )
    assert "prepare_jinja2_environment" in fresh_plugins.plugin_hooks("site_links")


def test_hook_prepare_jinja2_environment_gets_the_site_settings(fresh_plugins):
    """Like datasette's hook gets ``datasette``: an implementation may take ``settings``."""
    from prh_bench.site import SiteSettings, make_environment

    def prepare_jinja2_environment(env, settings):
        env.globals["board_title"] = settings.title

    fresh_plugins.register_plugin(
        make_plugin(prepare_jinja2_environment=prepare_jinja2_environment), "titled"
    )
    env = make_environment(settings=SiteSettings(title="My <board>"))
    assert env.from_string("{{ board_title }}").render() == "My &lt;board&gt;"
    assert make_environment().globals["board_title"] == "prh-bench leaderboard"  # the defaults


def test_builtin_plugins_load_through_entry_points(fresh_plugins):
    names = {p.name for p in fresh_plugins.loaded_plugins()}
    assert {"knn_torch", "knn_metrics", "kernel_metrics"} <= names
    info = fresh_plugins.plugin_info("knn_metrics")
    assert info.distribution == "prh-bench" and info.version == prh_bench.__version__


def test_duplicate_id_names_both_plugins(fresh_plugins):
    for name in ("first", "second"):
        fresh_plugins.register_plugin(
            make_plugin(register_metrics=lambda register: register(ConstantMetric)), name=name
        )
    with pytest.raises(DuplicateIdError, match="'first' and by plugin 'second'"):
        prh_bench.get_metric("constant_test")


def test_duplicate_alias_fails(fresh_plugins):
    class Other(TinyVision):
        id = "tiny/other"

    fresh_plugins.register_plugin(
        make_plugin(
            register_models=lambda register: [
                register(TinyVision(), aliases=("same",)),
                register(Other(), aliases=("same",)),
            ]
        ),
        "dup",
    )
    with pytest.raises(DuplicateIdError, match="'same' is registered twice"):
        prh_bench.get_model("tiny/other")


def test_unknown_id_suggests(fresh_plugins):
    with pytest.raises(UnknownIdError) as info:
        prh_bench.get_metric("mutual_kn")
    message = str(info.value)
    assert message.startswith("unknown metric 'mutual_kn'. Did you mean: mutual_knn")
    assert message.endswith("Run 'prh-bench metrics' to list them.")


def test_unknown_id_without_close_match(fresh_plugins):
    with pytest.raises(UnknownIdError, match=r"^unknown metric 'zzz'\. Run 'prh-bench metrics'"):
        prh_bench.get_metric("zzz")


def test_plugin_raising_in_hook_is_named(fresh_plugins):
    def register_metrics(register):
        raise RuntimeError("boom")

    fresh_plugins.register_plugin(make_plugin(register_metrics=register_metrics), "exploding")
    with pytest.raises(PluginError, match="plugin 'exploding' raised inside register_metrics"):
        prh_bench.get_metric("mutual_knn")


def test_registering_a_wrong_object_is_a_plugin_error(fresh_plugins):
    fresh_plugins.register_plugin(
        make_plugin(register_models=lambda register: register(object())), "wrong"
    )
    with pytest.raises(PluginError, match="plugin 'wrong'.*expects ModelAdapter"):
        prh_bench.get_model("anything")


def test_misspelt_hook_fails_loudly(fresh_plugins):
    module = types.ModuleType("misspelt")
    module.register_model = hookimpl(lambda register: None)  # should be register_models
    with pytest.raises(PluginError, match="unknown hook"):
        fresh_plugins.register_plugin(module, "misspelt")
    assert "misspelt" not in {p.name for p in fresh_plugins.loaded_plugins()}


def test_load_plugins_env_empty_loads_none(fresh_plugins, monkeypatch):
    monkeypatch.setenv("PRH_BENCH_LOAD_PLUGINS", "")
    fresh_plugins.reset()
    assert fresh_plugins.loaded_plugins() == []


def test_load_plugins_env_selects(fresh_plugins, monkeypatch):
    monkeypatch.setenv("PRH_BENCH_LOAD_PLUGINS", "knn_torch, knn_metrics")
    fresh_plugins.reset()
    assert {p.name for p in fresh_plugins.loaded_plugins()} == {"knn_torch", "knn_metrics"}
    with pytest.raises(UnknownIdError):
        prh_bench.get_metric("cka")


def test_broken_entry_point_is_reported_and_others_load(fresh_plugins, monkeypatch, capsys):
    real = importlib.metadata.entry_points
    broken = importlib.metadata.EntryPoint(
        name="broken", value="prh_bench_no_such_module", group="prh_bench"
    )

    def entry_points(**kwargs):
        found = list(real(**kwargs))
        return [*found, broken] if kwargs.get("group") == "prh_bench" else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    fresh_plugins.reset()
    assert "knn_metrics" in {p.name for p in fresh_plugins.loaded_plugins()}
    [failed] = fresh_plugins.failed_plugins()
    assert failed.name == "broken" and "ModuleNotFoundError" in failed.error
    err = capsys.readouterr().err
    assert "plugin 'broken'" in err and "failed to load" in err
    assert prh_bench.get_metric("mutual_knn").name == "mutual_knn"


def test_core_holds_no_model_family_code():
    import pathlib

    core = pathlib.Path(prh_bench.__file__).parent
    for path in core.glob("*.py"):
        text = path.read_text()
        for family in (
            "import timm",
            "import open_clip",
            "from transformers",
            "import transformers",
        ):
            assert family not in text, f"{path.name} imports a model family ({family})"


def test_plugins_do_not_import_heavy_modules_at_import():
    import subprocess

    code = (
        "import sys, prh_bench.plugins as p; p.get_plugin_manager();"
        "heavy = [m for m in ('torch', 'transformers', 'timm', 'open_clip') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------- issue 14 (runtime):
# a plugin that raises or exits anywhere is named in one line; kNN answers are checked


def test_plugin_raising_in_register_commands_is_a_warning_and_help_still_works(
    fresh_plugins, run_cli
):
    def register_commands(cli):
        raise RuntimeError("boom")

    fresh_plugins.register_plugin(make_plugin(register_commands=register_commands), "bad-cmds")
    from prh_bench.cli import cli

    cli._plugin_commands_added = False
    try:
        result = run_cli("--help")
        assert result.exit_code == 0 and "Traceback" not in result.output
        assert (
            "Warning: plugin 'bad-cmds' raised inside register_commands: RuntimeError: boom. "
            "Fix or disable it (PRH_BENCH_LOAD_PLUGINS)." in result.output
        )
        assert "executors" in result.output  # the other plugins' commands are still there
    finally:
        cli.commands.pop("executors", None)
        cli._plugin_commands_added = False


def test_plugin_raising_in_prepare_jinja2_environment_is_named(fresh_plugins):
    from prh_bench.site import make_environment

    def prepare_jinja2_environment(env):
        raise KeyError("filters")

    fresh_plugins.register_plugin(
        make_plugin(prepare_jinja2_environment=prepare_jinja2_environment), "bad-site"
    )
    with pytest.raises(
        PluginError, match=r"^plugin 'bad-site' raised inside prepare_jinja2_environment: KeyError"
    ):
        make_environment()


@pytest.mark.parametrize("fail", [RuntimeError("boom"), SystemExit(2)])
def test_plugin_raising_or_exiting_in_knn_backend_is_named(fresh_plugins, fail):
    from prh_bench.registry import knn_indices

    def knn_backend(device, n, dim, k):
        raise fail

    fresh_plugins.register_plugin(make_plugin(knn_backend=knn_backend), "bad-knn")
    with pytest.raises(PluginError, match=r"^plugin 'bad-knn' raised inside knn_backend: "):
        knn_indices(torch.randn(6, 3), 2)


def test_plugin_calling_sys_exit_in_a_register_hook_is_named(fresh_plugins):
    def register_models(register):
        sys.exit(4)

    fresh_plugins.register_plugin(make_plugin(register_models=register_models), "quitter")
    with pytest.raises(PluginError, match=r"'quitter' raised inside register_models: it called"):
        prh_bench.get_model("anything")


def _right(feats, k):
    n = feats.shape[0]
    others = torch.stack([torch.cat([torch.arange(i), torch.arange(i + 1, n)]) for i in range(n)])
    return others[:, :k]


@pytest.mark.parametrize(
    ("answer", "what"),
    [
        (lambda f, k: _right(f, k).tolist(), "it returned list, not a tensor"),
        (lambda f, k: _right(f, k).float(), "it returned torch.float32 values"),
        (lambda f, k: _right(f, k)[:, :1], r"it returned shape \[6, 1\]"),
        (lambda f, k: _right(f, k)[:5], r"it returned shape \[5, 2\]"),
        (lambda f, k: _right(f, k) + 6, "an index lies outside 0..5"),
        (lambda f, k: torch.arange(6)[:, None].repeat(1, k), "a row lists itself"),
        (lambda f, k: _right(f, k)[:, :1].repeat(1, k), "a row lists the same neighbour twice"),
    ],
)
def test_a_knn_answer_that_breaks_the_contract_is_refused(fresh_plugins, answer, what):
    from prh_bench.registry import knn_indices

    class Broken:
        name = "broken-knn"

        def __call__(self, feats, k):
            return answer(feats, k)

    fresh_plugins.register_plugin(
        make_plugin(knn_backend=lambda device, n, dim, k: Broken()), "broken-knn"
    )
    feats = torch.nn.functional.normalize(torch.randn(6, 3), dim=1)
    with pytest.raises(PluginError, match=rf"^kNN backend 'broken-knn' broke its contract: {what}"):
        knn_indices(feats, 2)
    with pytest.raises(PluginError, match="broke its contract"):  # a metric never scores it
        prh_bench.get_metric("mutual_knn", topk=2).score(feats, feats)


def test_unknown_names_in_load_plugins_are_warned(fresh_plugins, monkeypatch, capsys):
    monkeypatch.setenv("PRH_BENCH_LOAD_PLUGINS", "knn_torch,knn_metric")
    fresh_plugins.reset()
    assert {p.name for p in fresh_plugins.loaded_plugins()} == {"knn_torch"}
    err = capsys.readouterr().err
    assert "Warning: PRH_BENCH_LOAD_PLUGINS names 'knn_metric', which no installed plugin" in err
    assert "knn_metrics" in err  # the installed names, to spot the typo


def test_plugin_calling_sys_exit_at_import_is_a_failed_plugin(tmp_path):
    import subprocess

    site = tmp_path / "site"
    dist = site / "prh_bench_quitter-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: prh-bench-quitter\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[prh_bench]\nquitter = quitter_plugin\n")
    (site / "quitter_plugin.py").write_text("import sys\nsys.exit('no GPU, bye')\n")
    env = {k: v for k, v in os.environ.items() if k != "PRH_BENCH_LOAD_PLUGINS"}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run(
        [sys.executable, "-m", "prh_bench", "metrics"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "mutual_knn" in out.stdout  # every other plugin works
    assert (
        "Warning: plugin 'quitter' (distribution prh-bench-quitter) failed to load: it called "
        "sys.exit('no GPU, bye')." in out.stderr
    )
