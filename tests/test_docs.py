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
