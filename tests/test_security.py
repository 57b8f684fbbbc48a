"""Security invariants, checked over the source: no pickle, safe torch.load, no shell, no
remote code unless a model opts in. (Escaping in the site: tests/test_leaderboard.py.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(
    p
    for folder in ("prh_bench", "plugins", "scripts", "benchmarks")
    for p in (ROOT / folder).rglob("*.py")
)


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def name_of(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return f"{name_of(func.value)}.{func.attr}"
    return func.id if isinstance(func, ast.Name) else ""


def keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_source_is_safe(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not {"pickle", "dill", "cloudpickle"} & set(modules), f"{path}: pickle import"
    for call in calls(tree):
        name = name_of(call.func)
        shell = keyword(call, "shell")
        assert not (isinstance(shell, ast.Constant) and shell.value), f"{path}: shell=True"
        assert name not in ("os.system", "os.popen", "eval", "exec"), f"{path}: {name}"
        if name.endswith("torch.load"):
            wo = keyword(call, "weights_only")
            assert isinstance(wo, ast.Constant) and wo.value is True, (
                f"{path}:{call.lineno}: torch.load without weights_only=True"
            )
        assert name not in ("torch.save",), f"{path}: features are safetensors, not torch.save"
        remote = keyword(call, "trust_remote_code")
        assert not (isinstance(remote, ast.Constant) and remote.value is True), (
            f"{path}:{call.lineno}: trust_remote_code=True hard-coded"
        )


def test_no_registered_model_trusts_remote_code(fresh_plugins):
    from prh_bench.registry import get_registry

    trusting = [e.id for e in get_registry("model") if getattr(e.obj, "trust_remote_code", False)]
    assert trusting == []


def test_remote_code_is_passed_only_as_the_adapters_opt_in(tmp_path, monkeypatch):
    """The transformers adapter hands its own flag to from_pretrained, False by default."""
    import transformers

    from prh_bench_plugins.hf_language import HFLanguageAdapter

    seen = []

    def fake_from_pretrained(src, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise OSError("stop here: only the arguments matter")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_from_pretrained)
    for opt_in in (False, True):
        adapter = HFLanguageAdapter("org/model", source=str(tmp_path), trust_remote_code=opt_in)
        with pytest.raises(Exception):  # noqa: B017 - the load stops on purpose
            adapter.load()
    assert seen == [False, True]


def test_feature_files_are_safetensors(fresh_plugins, tmp_path, monkeypatch):
    from prh_bench.extract import extract_features

    import runner_plugin

    fresh_plugins.register_plugin(runner_plugin, name="tiny")
    fs = extract_features("tiny/words-a", "tiny-shapes", cache_dir=tmp_path, progress=False)
    assert fs.path.suffix == ".safetensors"
    assert fs.path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle stream
    assert {p.suffix for p in tmp_path.rglob("*") if p.is_file()} <= {".safetensors", ".lock"}
