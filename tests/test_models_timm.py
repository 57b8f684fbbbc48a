"""timm adapters through their real loading path, on tiny random checkpoints saved here."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from test_features import TinyDataset
from torchvision.models.feature_extraction import create_feature_extractor

from prh_bench import ModelError
from prh_bench.extract import extract_features
from prh_bench_plugins.timm_models import TimmVisionAdapter

VIT = "vit_tiny_patch16_224.augreg_in21k"
VIT_KW = {"depth": 2, "embed_dim": 32, "num_heads": 2}
CNN = "convnext_base.fb_in22k_ft_in1k"
CNN_KW = {"depths": (1, 1, 1, 1), "dims": (8, 16, 24, 32)}


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model(VIT, pretrained=False, **VIT_KW)
    path = tmp_path_factory.mktemp("timm") / "tiny_vit.safetensors"
    save_file(model.state_dict(), str(path))
    return path, model.eval()


def test_vit_features_are_cls_tokens_of_every_block(vit_checkpoint, tmp_path):
    path, reference = vit_checkpoint
    adapter = TimmVisionAdapter(VIT, checkpoint=path, model_kwargs=VIT_KW)
    ds = TinyDataset(n=3)
    loaded = adapter.load("cpu")
    assert loaded.layer_names == ["blocks.0", "blocks.1"]
    with torch.inference_mode():
        inputs = loaded.collator()([ds[i] for i in range(3)])
        layers, stats = loaded.encode(inputs)
        # the paper's reading: torchvision's feature extractor at blocks.{i}.add_1, token 0
        fx = create_feature_extractor(reference, return_nodes=["blocks.0.add_1", "blocks.1.add_1"])
        expected = [v[:, 0] for v in fx(inputs).values()]
    assert inputs.shape == (3, 3, 224, 224)  # from the pretrained config, not the raw image
    assert stats == {}
    for got, want in zip(layers, expected, strict=True):
        assert got.shape == (3, 32)
        assert torch.allclose(got, want, atol=1e-5)  # the checkpoint's weights were loaded
    loaded.close()

    fs = extract_features(adapter, ds, cache_dir=tmp_path, progress=False, num_workers=0)
    assert fs.num_layers == 2 and torch.allclose(fs.layers[1], expected[1], atol=1e-5)
    assert "input_size=(3, 224, 224)" in fs.meta["key"]["preprocessing"]
    assert fs.meta["key"]["revision"].startswith("sha256-")


def test_vit_mean_pooling_option(vit_checkpoint):
    path, _ = vit_checkpoint
    adapter = TimmVisionAdapter(VIT, checkpoint=path, model_kwargs=VIT_KW)
    mean = adapter.with_options(pooling="mean")
    assert mean.pooling == "mean" and adapter.pooling == "cls"
    loaded = mean.load("cpu")
    with torch.inference_mode():
        layers = loaded.features([TinyDataset(n=2)[0], TinyDataset(n=2)[1]])
    assert [t.shape for t in layers] == [torch.Size([2, 32])] * 2
    with pytest.raises(Exception, match="pooling"):
        adapter.with_options(pooling="max")


def test_cnn_stage_outputs_are_spatially_pooled(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model(CNN, pretrained=False, **CNN_KW)
    path = tmp_path / "tiny_convnext.safetensors"
    save_file(model.state_dict(), str(path))
    adapter = TimmVisionAdapter(CNN, kind="cnn", checkpoint=path, model_kwargs=CNN_KW)
    ds = TinyDataset(n=2)
    loaded = adapter.load("cpu")
    assert loaded.layer_names == ["stages.0", "stages.1", "stages.2", "stages.3"]
    with torch.inference_mode():
        inputs = loaded.collator()([ds[0], ds[1]])
        layers, _ = loaded.encode(inputs)
        stage3 = model.eval().forward_features(inputs)  # the last stage output (NCHW)
    assert [t.shape[1] for t in layers] == [8, 16, 24, 32]
    assert torch.allclose(layers[3], stage3.mean((2, 3)), atol=1e-5)


def test_hub_model_offline_is_one_clear_model_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = TimmVisionAdapter(VIT, model_kwargs=VIT_KW)
    assert adapter.availability()[0] is False
    with pytest.raises(ModelError) as info:
        adapter.load("cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "timm/vit_tiny_patch16_224.augreg_in21k" in message
    assert "huggingface-cli download" in message and "HF_HOME" in message


def test_bad_local_checkpoint_is_a_model_error(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot load checkpoint"):
        TimmVisionAdapter(VIT, checkpoint=bad, model_kwargs=VIT_KW).load("cpu")
