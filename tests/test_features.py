"""The feature store and the extraction loop: keys, cache hits, resume, locks, bad input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from prh_bench import Dataset, LoadedModel, ModelAdapter, ModelError, Sample
from prh_bench.cli import cli
from prh_bench.extract import extract_features
from prh_bench.store import feature_key, list_cache, read_header, remove_cache

CAPTIONS = [
    "a red square on a white background",
    "a small blue circle",
    "two green triangles next to each other",
    "a yellow star",
    "a black line drawing of a cat",
    "an orange sun over the sea",
    "a purple flower",
    "a grey house with a red roof",
]


class TinyDataset(Dataset):
    """A few generated images and captions, stored as PNG bytes and decoded on access."""

    id = "tiny-test"
    revision = "1"

    def __init__(self, n: int = 8, size: int = 40, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self._png: list[bytes] = []
        for _ in range(n):
            pixels = (torch.rand(size, size, 3, generator=gen) * 255).to(torch.uint8).numpy()
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            self._png.append(buf.getvalue())
        self._texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(n)]

    def __len__(self) -> int:
        return len(self._png)

    def __getitem__(self, i: int) -> Sample:
        image = Image.open(io.BytesIO(self._png[i])).convert("RGB")
        return Sample(f"s{i}", image, (self._texts[i],))

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for png, text in zip(self._png, self._texts, strict=True):
            h.update(png)
            h.update(text.encode())
        return h.hexdigest()

    def captions(self) -> list[str]:
        return list(self._texts)


class PixelCollator:
    def __call__(self, samples: list[Sample]) -> torch.Tensor:
        import numpy as np

        arrays = [np.asarray(s.image, dtype="float32") / 255.0 for s in samples]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


class PixelModel(LoadedModel):
    """Two 'layers': channel means and a fixed random projection of them."""

    def __init__(self, owner: StubAdapter) -> None:
        self.owner = owner
        self.num_layers = 2
        self.layer_names = ["means", "projection"]
        self.proj = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))

    def collator(self) -> PixelCollator:
        return PixelCollator()

    def encode(self, inputs: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, Any]]:
        self.owner.batches_seen += 1
        if self.owner.fail_after is not None and self.owner.batches_seen > self.owner.fail_after:
            raise KeyboardInterrupt  # what a killed run looks like from inside the loop
        if self.owner.oom_above is not None and inputs.shape[0] > self.owner.oom_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        means = inputs.mean((2, 3))
        proj = means @ self.proj
        if self.owner.nan:
            proj = proj.clone()
            proj[0, 0] = float("nan")
        return [means, proj], {"score": means.sum(1)}


class StubAdapter(ModelAdapter):
    """A real adapter (no mocks of the loop) with switches for the failure paths."""

    modality = "vision"
    family = "test"
    poolings = ("mean",)
    pooling = "mean"

    def __init__(self, id: str = "stub-model") -> None:
        super().__init__()
        self.id = id
        self.batch_size = 2
        self.loads = 0
        self.batches_seen = 0
        self.fail_after: int | None = None
        self.oom_above: int | None = None
        self.nan = False

    def load(self, device: str = "cpu", dtype: Any = None) -> PixelModel:
        self.loads += 1
        return PixelModel(self)


def run(adapter: ModelAdapter, ds: Dataset, cache: Any, **kw: Any) -> Any:
    kw.setdefault("num_workers", 0)
    return extract_features(adapter, ds, cache_dir=cache, device="cpu", progress=False, **kw)


def test_extract_writes_safetensors_and_rerun_loads(tmp_path):
    ds, ad = TinyDataset(), StubAdapter()
    fs = run(ad, ds, tmp_path)
    assert not fs.from_cache and fs.num_layers == 2 and fs.num_samples == 8
    assert [t.shape for t in fs.layers] == [torch.Size([8, 3]), torch.Size([8, 5])]
    assert fs.path.suffix == ".safetensors" and fs.path.is_relative_to(tmp_path / "features")
    header = read_header(fs.path)
    assert header["key"]["model_id"] == "stub-model"
    assert header["key"]["dataset_hash"] == ds.content_hash
    assert header["layer_names"] == ["means", "projection"]
    assert header["stats"]["score"] == pytest.approx(float(fs.stats["score"].mean()))
    again = run(ad, ds, tmp_path)
    assert again.from_cache and ad.loads == 1  # no second load, no recomputation
    for a, b in zip(fs.layers, again.layers, strict=True):
        assert torch.equal(a, b)
    # the values are the model's: channel means of the decoded images
    expected = PixelCollator()([ds[3]]).mean((2, 3))[0]
    assert torch.allclose(fs.layers[0][3], expected)


def test_workers_give_the_same_features(tmp_path):
    ds = TinyDataset()
    a = run(StubAdapter(), ds, tmp_path / "a", num_workers=0)
    b = run(StubAdapter(), ds, tmp_path / "b", num_workers=2)
    assert all(torch.equal(x, y) for x, y in zip(a.layers, b.layers, strict=True))


def test_key_covers_every_ingredient():
    ds, ad = TinyDataset(), StubAdapter()
    base = feature_key(ad, ds, "float32")
    variants = [
        feature_key(ad, ds, "bfloat16"),
        feature_key(ad, TinyDataset(seed=1), "float32"),
        feature_key(StubAdapter("other"), ds, "float32"),
    ]
    bumped = StubAdapter()
    bumped.adapter_version = "2"
    variants.append(feature_key(bumped, ds, "float32"))
    assert len({base.digest, *(v.digest for v in variants)}) == 5
    assert feature_key(ad, ds, "float32") == base


def test_killed_run_resumes_from_checkpoints(tmp_path):
    ds = TinyDataset()
    full = run(StubAdapter(), ds, tmp_path / "ref")
    killed = StubAdapter()
    killed.fail_after = 2  # two batches (4 samples) done, then the process "dies"
    with pytest.raises(KeyboardInterrupt):
        run(killed, ds, tmp_path / "c", checkpoint_seconds=0)
    partial = list_cache(tmp_path / "c")
    assert [e.complete for e in partial] == [False]
    resumed_adapter = StubAdapter()
    resumed = run(resumed_adapter, ds, tmp_path / "c", checkpoint_seconds=0)
    assert resumed.meta["resumed_from"] >= 2
    assert resumed_adapter.batches_seen < 4  # fewer batches than a full run
    for a, b in zip(full.layers, resumed.layers, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(full.stats["score"], resumed.stats["score"])
    assert [e.complete for e in list_cache(tmp_path / "c")] == [True]


def test_unreadable_cache_file_warns_and_recomputes(tmp_path):
    ds, ad = TinyDataset(), StubAdapter()
    fs = run(ad, ds, tmp_path)
    fs.path.write_bytes(b"not a safetensors file")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = run(ad, ds, tmp_path)
    assert not again.from_cache and ad.loads == 2
    assert torch.equal(again.layers[1], fs.layers[1])


def test_nan_features_name_model_and_layer(tmp_path):
    ad = StubAdapter()
    ad.nan = True
    with pytest.raises(ModelError, match=r"'stub-model'.*layer 1 \(projection\)"):
        run(ad, TinyDataset(), tmp_path)


def test_out_of_memory_retries_with_half_the_batch(tmp_path):
    ds = TinyDataset()
    ok = StubAdapter()
    ok.batch_size, ok.oom_above = 4, 2  # batches of 4 fail, halves of 2 pass
    fs = run(ok, ds, tmp_path / "a")
    ref = run(StubAdapter(), ds, tmp_path / "b")
    assert torch.equal(fs.layers[1], ref.layers[1])
    hopeless = StubAdapter()
    hopeless.batch_size, hopeless.oom_above = 4, 0
    with pytest.raises(ModelError, match="out of memory"):
        run(hopeless, ds, tmp_path / "c")


def test_two_workers_never_compute_the_same_key_twice(tmp_path):
    ds, ad = TinyDataset(), StubAdapter()
    results: list[Any] = []

    def work() -> None:
        results.append(run(ad, ds, tmp_path))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ad.loads == 1
    assert sorted(r.from_cache for r in results) == [False, True]


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PRH_BENCH_CACHE", str(tmp_path / "env"))
    fs = extract_features(StubAdapter(), TinyDataset(), progress=False, num_workers=0)
    assert fs.path.is_relative_to(tmp_path / "env")


def test_cache_ls_and_rm_commands(tmp_path):
    run(StubAdapter(), TinyDataset(), tmp_path)
    run(StubAdapter("second"), TinyDataset(), tmp_path)
    runner = CliRunner()
    out = runner.invoke(cli, ["cache", "--cache-dir", str(tmp_path), "ls", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert sorted(r["model"] for r in rows) == ["second", "stub-model"]
    assert all(r["samples"] == 8 and r["state"] == "complete" for r in rows)
    out = runner.invoke(cli, ["cache", "--cache-dir", str(tmp_path), "rm"])
    assert out.exit_code == 1 and "--all" in out.output
    out = runner.invoke(cli, ["cache", "--cache-dir", str(tmp_path), "rm", "--model", "second"])
    assert out.exit_code == 0 and "1 entry removed" in out.output
    assert [e.model_id for e in list_cache(tmp_path)] == ["stub-model"]
    removed, in_use = remove_cache(tmp_path)
    assert len(removed) == 1 and in_use == [] and list_cache(tmp_path) == []


def test_listing_models_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from prh_bench.cli import cli\n"
        "r = CliRunner().invoke(cli, ['models', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'timm', 'transformers', 'open_clip', 'gguf')"
        " if m in sys.modules]\n"
        "print(len(r.output), heavy)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_models_lists_hub_families_and_offline_suite():
    out = CliRunner().invoke(cli, ["models", "--json"])
    rows = {r["id"]: r for r in json.loads(out.output)}
    for model_id in (
        "vit_large_patch14_dinov2.lvd142m",
        "huggyllama/llama-65b",
        "open_clip/ViT-B-32.laion2b_s34b_b79k/image",
        "open_clip/ViT-B-32.laion2b_s34b_b79k/text",
        "google-bert/bert-base-uncased",
    ):
        assert "hub" in rows[model_id]["tags"]
    offline = {i for i, r in rows.items() if "offline" in r["tags"]}
    assert {
        "efficientnet_lite0",
        "efficientnet_lite2.random",
        "all-MiniLM-L6-v2",
        "gemma-3-270m",
    } <= offline
    paper_vits = [i for i, r in rows.items() if "paper" in r["tags"] and r["modality"] == "vision"]
    assert len(paper_vits) == 17
    paper_llms = [
        i for i, r in rows.items() if "paper" in r["tags"] and r["modality"] == "language"
    ]
    assert len(paper_llms) == 12


# --------------------------------------------------------------------------- issue 14 (runtime):
# every byte under the run's folders, torn writes visible and removable, disk full, layers


FAKE_GGUF = """
import os, sys, time
from pathlib import Path
from prh_bench_plugins.offline_models import GGUFCausalAdapter

class FakeGGUF(GGUFCausalAdapter):
    '''A GGUF adapter whose file and dequantisation are tiny; the conversion path is real.'''

    def __init__(self):
        super().__init__("fake-gguf", dist="fake-gguf", modules=(), parameters=1, url="", batch_size=1,
            quantisation="GGUF F32")

    def availability(self):
        return True, ""

    def weights_revision(self):
        return "fake-gguf==1.0"

    def gguf_path(self, scratch):
        path = scratch / "model.gguf"
        path.write_bytes(b"G" * 300_000)  # what the package assembles: big, in the scratch
        return path

    def dequantise(self, gguf, out):
        (out / "model.safetensors").write_bytes(gguf.read_bytes()[:1000])
        (out / "config.json").write_text("{}")
        if os.environ.get("FAKE_GGUF_HANG"):
            print("converting", flush=True)
            time.sleep(60)
"""


def _fake_gguf(tmp_path):
    (tmp_path / "fake_gguf.py").write_text(FAKE_GGUF)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        import fake_gguf

        return importlib.reload(fake_gguf).FakeGGUF()
    finally:
        sys.path.remove(str(tmp_path))


def test_extraction_gives_its_cache_to_the_adapter_for_weights(tmp_path, monkeypatch):
    from prh_bench.store import weights_dir

    monkeypatch.setenv("PRH_BENCH_CACHE", str(tmp_path / "default"))
    seen = []

    class Converting(StubAdapter):
        def load(self, device="cpu", dtype=None):
            seen.append(weights_dir())
            return super().load(device, dtype)

    run(Converting(), TinyDataset(n=4), tmp_path / "run-cache")
    assert seen == [tmp_path / "run-cache" / "weights"]
    assert weights_dir() == tmp_path / "default" / "weights"  # outside an extraction


def test_gguf_conversion_writes_only_into_the_run_cache(tmp_path, monkeypatch):
    from prh_bench.store import using_cache

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PRH_BENCH_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    adapter = _fake_gguf(tmp_path)
    old = os.umask(0o022)
    try:
        with using_cache(tmp_path / "cache"):
            source = Path(adapter.model_source())
    finally:
        os.umask(old)
    assert source == tmp_path / "cache" / "weights" / "fake-gguf" / "1.0"
    assert source.stat().st_mode & 0o777 == 0o755  # a shared cache stays readable to others
    assert sorted(p.name for p in source.iterdir()) == ["config.json", "model.safetensors"]
    assert not home.exists()  # nothing under ~/.cache
    # only the converted folder and its lock: the scratch (and the GGUF copy in it) is gone
    assert sorted(p.name for p in source.parent.iterdir()) == ["1.0", "1.0.lock"]


def test_killed_gguf_conversion_leaves_scratch_that_the_next_one_removes(tmp_path):
    cache = tmp_path / "cache"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from fake_gguf import FakeGGUF; "
        "from prh_bench.store import using_cache\n"
        "with using_cache(sys.argv[2]): FakeGGUF().model_source()"
    )
    adapter = _fake_gguf(tmp_path)  # writes fake_gguf.py for the subprocess too
    victim = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path), str(cache)],
        env={**os.environ, "FAKE_GGUF_HANG": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert victim.stdout.readline().strip() == "converting"
    finally:
        victim.kill()
        victim.wait()
    folder = cache / "weights" / "fake-gguf"
    [scratch] = folder.glob(".1.0.*.tmp")  # the killed conversion's scratch, GGUF and all
    assert (scratch / ".gguf" / "model.gguf").stat().st_size == 300_000
    from prh_bench.store import using_cache

    with using_cache(cache):
        adapter.model_source()
    assert sorted(p.name for p in folder.iterdir()) == ["1.0", "1.0.lock"]


def _safetensors_disk_full(monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full)


def test_disk_full_inside_safetensors_is_a_storage_error(tmp_path, monkeypatch):
    from prh_bench.storage import StorageError

    ds = TinyDataset(n=4)
    kept = run(StubAdapter("kept"), ds, tmp_path)
    before = kept.path.read_bytes()
    _safetensors_disk_full(monkeypatch)
    with pytest.raises(StorageError, match=r"^no space left on the device while writing "):
        run(StubAdapter("new"), ds, tmp_path)
    with pytest.raises(StorageError, match="no space left"):
        run(StubAdapter("kept"), ds, tmp_path, force=True)
    assert kept.path.read_bytes() == before  # nothing already written is lost
    assert not list(tmp_path.rglob("*.tmp"))  # and no temporary file is left


TORN_WRITE = """
import sys, time
from pathlib import Path
from prh_bench.storage import atomic_write

def slow(tmp):
    Path(tmp).write_bytes(b"x" * 100_000)  # a whole hidden copy of the feature file
    print("writing", flush=True)
    time.sleep(60)

atomic_write(Path(sys.argv[1]), slow)
"""


def test_torn_temporary_files_are_listed_and_removed(tmp_path):
    ds = TinyDataset(n=4)
    fs = run(StubAdapter(), ds, tmp_path)
    target = fs.path.with_name("0123456789abcdef.safetensors")
    victim = subprocess.Popen(
        [sys.executable, "-c", TORN_WRITE, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert victim.stdout.readline().strip() == "writing"
    finally:
        victim.kill()
        victim.wait()
    entries = list_cache(tmp_path)
    assert sorted(e.state for e in entries) == ["complete", "temporary"]
    [torn] = [e for e in entries if e.state == "temporary"]
    assert torn.size_bytes == 100_000 and torn.model_id == "stub-model"
    out = CliRunner().invoke(cli, ["cache", "--cache-dir", str(tmp_path), "ls"])
    assert "temporary" in out.output and torn.path.name in out.output
    out = CliRunner().invoke(cli, ["cache", "--cache-dir", str(tmp_path), "rm", "--all"])
    assert out.exit_code == 0 and "2 entries removed" in out.output
    assert not list((tmp_path / "features").rglob("*"))  # locks and folders too


HOLD_LOCK = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("holding", flush=True)
time.sleep(60)
"""


def test_cache_rm_keeps_what_a_running_extraction_uses(tmp_path):
    ds, adapter = TinyDataset(n=6), StubAdapter()
    adapter.fail_after = 1
    with pytest.raises(KeyboardInterrupt):  # one batch checkpointed, then "killed"
        run(adapter, ds, tmp_path, checkpoint_seconds=0)
    done = run(StubAdapter("other"), ds, tmp_path)
    [partial] = [e for e in list_cache(tmp_path) if e.state == "partial"]
    runner = subprocess.Popen(  # a run computing that key holds its lock
        [sys.executable, "-c", HOLD_LOCK, str(partial.lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert runner.stdout.readline().strip() == "holding"
        out = CliRunner().invoke(cli, ["cache", "--cache-dir", str(tmp_path), "rm", "--all"])
        assert out.exit_code == 0 and "1 entry removed" in out.output
        assert f"kept {partial.path}: a running extraction is using it" in out.output
        assert partial.path.is_dir() and partial.lock.exists() and not done.path.exists()
    finally:
        runner.kill()
        runner.wait()
    removed, in_use = remove_cache(tmp_path)  # once the run is gone, it goes too
    assert [e.path for e in removed] == [partial.path] and in_use == []


class Shrinking(StubAdapter):
    """An adapter whose later batches return fewer layers (or another width)."""

    def __init__(self, change: str) -> None:
        super().__init__(f"shrinking-{change}")
        self.change = change

    def load(self, device="cpu", dtype=None):
        loaded, owner = super().load(device, dtype), self
        encode = loaded.encode

        def changing(inputs):
            layers, stats = encode(inputs)
            if owner.batches_seen > 1:
                layers = layers[:1] if owner.change == "count" else [layers[0], layers[1][:, :3]]
            return layers, stats

        loaded.encode = changing
        return loaded


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("count", r"returned 1 layers for samples from index 2, but 2 before"),
        (
            "width",
            r"returned layer.001 of shape \[3\] per sample for samples from index 2, but \[5\]",
        ),
    ],
)
def test_an_adapter_changing_its_layers_between_batches_is_refused(tmp_path, change, message):
    with pytest.raises(ModelError, match=message):
        run(Shrinking(change), TinyDataset(n=6), tmp_path)
    assert not list(tmp_path.rglob("*.safetensors"))  # nothing truncated was stored


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_bad_checkpoint_seconds_is_one_line(tmp_path, monkeypatch, value):
    from prh_bench.errors import InvalidInputError

    monkeypatch.setenv("PRH_BENCH_CHECKPOINT_SECONDS", value)
    with pytest.raises(InvalidInputError, match=r"PRH_BENCH_CHECKPOINT_SECONDS must be a number"):
        run(StubAdapter(), TinyDataset(n=4), tmp_path)


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("gpu", r"device must be cpu, cuda, cuda:N or mps, got 'gpu'"),
        ("cuda:x", r"device must be cpu, cuda, cuda:N or mps"),
        ("cuda:99", r"device 'cuda:99' is not here: this machine has "),
    ],
)
def test_a_device_that_is_not_here_fails_even_with_cached_features(tmp_path, device, message):
    from prh_bench.errors import InvalidInputError

    ds, adapter = TinyDataset(n=4), StubAdapter()
    run(adapter, ds, tmp_path)
    with pytest.raises(InvalidInputError, match=message):
        extract_features(adapter, ds, cache_dir=tmp_path, device=device, progress=False)
