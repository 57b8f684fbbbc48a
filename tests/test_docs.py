"""The docs agree with the code: every hook documented with its signature, the README's
commands exist, and CI runs the README's test command."""

from __future__ import annotations

import inspect
import re

import click
import pytest

from prh_bench import hookspecs
from prh_bench.cli import cli

from conftest import ROOT

HOOKS = {
    name: fn
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "prh_bench_spec")
}
HOOKS_MD = (ROOT / "docs" / "plugins" / "hooks.md").read_text()
README = (ROOT / "README.md").read_text()


def documented_signature(name: str) -> str:
    """The hookspec's exact signature as the docs write it, e.g.
    ``knn_backend(device: str, n: int, dim: int, k: int) -> KnnBackend | None   # firstresult``."""
    signature = inspect.signature(HOOKS[name])
    params = ", ".join(
        p.name if p.annotation is p.empty else f"{p.name}: {p.annotation}"
        for p in signature.parameters.values()
    )
    line = f"{name}({params})"
    if signature.return_annotation is not signature.empty:
        line += f" -> {signature.return_annotation}"
    options = [opt for opt in ("firstresult", "historic") if HOOKS[name].prh_bench_spec[opt]]
    return line + (f"   # {', '.join(options)}" if options else "")


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_documented_with_its_exact_signature(name):
    assert f"\n## {name}\n" in HOOKS_MD, f"docs/plugins/hooks.md has no section for {name}"
    section = HOOKS_MD.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
    first_block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines()[0] == documented_signature(name)


def test_no_documented_hook_is_missing_from_code():
    documented = set(re.findall(r"^## (\w+)$", HOOKS_MD, flags=re.M))
    assert documented == set(HOOKS)


def test_readme_commands_exist():
    ctx = click.Context(cli)
    for line in re.findall(r"^(prh-bench [^\n#]*)", README, flags=re.M):
        words = line.split()
        if words[1].startswith("-"):
            continue
        command = cli.get_command(ctx, words[1])
        assert command is not None, f"README uses unknown command: {line}"


def test_ci_runs_the_readme_test_command():
    command = re.search(r"(python -m pytest[^`\n]*)", README).group(1).strip()
    assert command in (ROOT / ".ci" / "run").read_text()


def test_readme_main_command_installs_every_model_of_the_default_run(monkeypatch):
    """Each install hint of a default-run model is in the README's one line (and in CI)."""
    from prh_bench.registry import get_registry
    from prh_bench.runner import RunConfig, select_models
    from prh_bench_plugins import offline_models

    line = re.search(r"^(pip install -e '\.\[offline\]'.*prh-bench run)$", README, re.M).group(1)
    monkeypatch.setattr(offline_models, "missing_modules", lambda modules: list(modules))
    get_registry("model")  # built before the patch matters: availability() reads it live
    hints = {m.availability()[1] for m in select_models(RunConfig().models)}
    assert hints and all("pip install" in hint for hint in hints)
    for hint in hints:
        command = hint.split("pip install ", 1)[1]
        extra = re.fullmatch(r"'prh-bench\[(\w+)\]'", command)
        wanted = f"'.[{extra.group(1)}]'" if extra else f"pip install {command}"
        assert wanted in line, f"README's install line lacks {wanted} ({hint})"
        ci = [x.split() for x in (ROOT / ".ci" / "run").read_text().splitlines()]
        words = [extra.group(1)] if extra else command.split()
        assert any(x[:2] == ["pip", "install"] and all(w in " ".join(x) for w in words) for x in ci)


def test_every_model_prefix_is_in_run_help_and_models_md(run_cli):
    from prh_bench.models import ModelPrefix
    from prh_bench.registry import get_registry

    help_lines = run_cli("run", "--help").output.splitlines()
    models_md = (ROOT / "docs" / "models.md").read_text()
    prefixes = [e.obj for e in get_registry("model") if isinstance(e.obj, ModelPrefix)]
    assert {p.id for p in prefixes} >= {"hf:", "timm:", "open_clip:", "gguf:"}
    for prefix in prefixes:  # one line of --help each, with its whole syntax
        assert any(line.strip().startswith(prefix.syntax) for line in help_lines), prefix.syntax
        for form in prefix.syntax.split(" | "):
            assert f"`{form}`" in models_md, f"docs/models.md does not show {form}"
