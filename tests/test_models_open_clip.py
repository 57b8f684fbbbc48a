"""open_clip towers through create_model_and_transforms, on a tiny local checkpoint."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file
from test_features import TinyDataset

from prh_bench import ModelError
from prh_bench.extract import extract_features
from prh_bench_plugins.open_clip_models import OpenClipAdapter

ARCH = "prh-test-tiny-clip"
CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("open_clip")
    (folder / f"{ARCH}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(folder)  # a named architecture, like the shipped configs
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH)
    path = folder / "tiny_clip.safetensors"
    save_file(model.state_dict(), str(path))
    return path, model.eval()


def test_image_tower_cls_of_every_block_then_embedding(checkpoint, tmp_path):
    path, reference = checkpoint
    adapter = OpenClipAdapter(ARCH, str(path), "image")
    assert adapter.modality == "vision" and adapter.id.endswith("/image")
    ds = TinyDataset(n=3)
    loaded = adapter.load("cpu")
    assert loaded.layer_names == ["resblocks.0", "resblocks.1", "embedding"]
    with torch.inference_mode():
        inputs = loaded.collator()([ds[i] for i in range(3)])
        layers, _ = loaded.encode(inputs)
        want = reference.encode_image(inputs)
    assert inputs.shape == (3, 3, 32, 32)
    assert [t.shape[1] for t in layers] == [32, 32, 16]
    assert torch.allclose(layers[-1], want, atol=1e-5)  # the checkpoint's weights
    fs = extract_features(adapter, ds, cache_dir=tmp_path, progress=False, num_workers=0)
    assert fs.num_layers == 3 and torch.allclose(fs.layers[-1], want, atol=1e-5)


def test_text_tower_means_over_real_tokens(checkpoint):
    path, reference = checkpoint
    adapter = OpenClipAdapter(ARCH, str(path), "text")
    assert adapter.modality == "language"
    ds = TinyDataset(n=4)
    loaded = adapter.load("cpu")
    samples = [ds[i] for i in range(4)]
    with torch.inference_mode():
        ids = loaded.collator()(samples)
        layers, _ = loaded.encode(ids)
        want = reference.encode_text(ids)
        # a caption alone gives the same features as inside a batch (padding is excluded)
        alone, _ = loaded.encode(loaded.collator()(samples[1:2]))
    assert [t.shape for t in layers] == [torch.Size([4, 32])] * 2 + [torch.Size([4, 16])]
    assert torch.allclose(layers[-1], want, atol=1e-5)
    for a, b in zip(layers, alone, strict=True):
        assert torch.allclose(a[1], b[0], atol=1e-5)
    eot = adapter.with_options(pooling="eot").load("cpu")
    with torch.inference_mode():
        eot_layers, _ = eot.encode(ids)
    assert not torch.allclose(eot_layers[0], layers[0])


def test_hub_tag_offline_is_a_model_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = OpenClipAdapter("ViT-B-32", "laion2b_s34b_b79k", "image")
    assert adapter.id == "open_clip/ViT-B-32.laion2b_s34b_b79k/image"
    with pytest.raises(ModelError, match="huggingface-cli download"):
        adapter.load("cpu")
