"""transformers adapters through from_pretrained(path), on tiny models saved here."""

from __future__ import annotations

import math

import pytest
import torch
from test_features import CAPTIONS, TinyDataset

from prh_bench import ModelError, Sample
from prh_bench.extract import extract_features
from prh_bench_plugins.hf_language import HFLanguageAdapter


def reference_bits_per_byte(model, tok, texts):
    """The paper's formula, written out independently: masked CE in bits / UTF-8 bytes."""
    tok.padding_side = "left"
    enc = tok(texts, padding="longest", return_tensors="pt")
    logits = model(**enc).logits
    ce = torch.nn.CrossEntropyLoss(reduction="none")
    mask = enc["attention_mask"][:, :-1]
    loss = mask * ce(logits[:, :-1].permute(0, 2, 1), enc["input_ids"][:, 1:])
    bits = (loss * torch.log2(torch.tensor(math.e))).sum(1)
    return bits / torch.tensor([len(t.encode()) for t in texts], dtype=torch.float32)


def test_causal_lm_mean_pools_every_hidden_state_with_left_padding(tiny_llama, tmp_path):
    adapter = HFLanguageAdapter("test/tiny-llama", source=tiny_llama, causal=True)
    assert adapter.family == "transformers-causal" and adapter.pooling == "mean"
    loaded = adapter.load("cpu")
    assert loaded.num_layers == 3 and loaded.layer_names[0] == "embeddings"
    texts = CAPTIONS[:4]
    samples = [Sample(str(i), None, (t,)) for i, t in enumerate(texts)]
    loaded.prepare_texts(texts)  # every batch is padded to the longest of these (the reference)
    with torch.inference_mode():
        inputs = loaded.collator()(samples)
        layers, stats = loaded.encode(inputs)
        alone, _ = loaded.encode(loaded.collator()(samples[1:2]))
        model = loaded.model
        tok = loaded.tokenizer
        hidden = model(**tok(texts[1:2], return_tensors="pt"), output_hidden_states=True)
        want_bpb = reference_bits_per_byte(model, tok, texts)
    assert inputs["attention_mask"][1, 0] == 0  # shorter captions are padded on the left
    assert [t.shape for t in layers] == [torch.Size([4, 32])] * 3
    for layer, h in enumerate(hidden.hidden_states):  # the mean over the real tokens
        assert torch.allclose(layers[layer][1], h[0].mean(0), atol=1e-4)
        assert torch.allclose(layers[layer][1], alone[layer][0], atol=1e-4)
    assert torch.allclose(stats["bits_per_byte"], want_bpb, atol=1e-4)

    fs = extract_features(adapter, TinyDataset(n=6), cache_dir=tmp_path, progress=False)
    assert fs.num_layers == 3 and fs.stats["bits_per_byte"].shape == (6,)
    assert fs.meta["stats"]["bits_per_byte"] == pytest.approx(
        float(fs.stats["bits_per_byte"].mean())
    )
    assert fs.meta["key"]["revision"].startswith("local-")


def test_bits_per_byte_over_scored_positions_equals_the_full_masked_sum_bitwise():
    from prh_bench_plugins.hf_language import bits_per_byte

    torch.manual_seed(0)
    batch, length, vocab = 5, 12, 1000
    logits = torch.randn(batch, length, vocab) * 3
    ids = torch.randint(0, vocab, (batch, length))
    real = torch.tensor([12, 1, 2, 7, 4])  # left padding, as global padding makes it
    mask = (torch.arange(length)[None, :] >= length - real[:, None]).long()
    num_bytes = torch.tensor([40, 3, 9, 25, 14])
    # every position through the softmax, masked afterwards (the earlier code path)
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    nats = -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) * mask[:, :-1]
    want = nats.sum(1) * math.log2(math.e) / num_bytes.float()
    got = bits_per_byte(logits, ids, mask, num_bytes)
    assert torch.equal(got, want)
    assert got[1] == 0  # one real token: nothing to predict


def test_causal_lm_last_token_option(tiny_llama):
    adapter = HFLanguageAdapter("test/tiny-llama", source=tiny_llama).with_options(pooling="last")
    loaded = adapter.load("cpu")
    samples = [Sample(str(i), None, (t,)) for i, t in enumerate(CAPTIONS[:3])]
    loaded.prepare_texts(CAPTIONS[:3])
    with torch.inference_mode():
        layers, _ = loaded.encode(loaded.collator()(samples))
        out = loaded.model(
            **loaded.tokenizer(CAPTIONS[2:3], return_tensors="pt"), output_hidden_states=True
        )
    assert torch.allclose(layers[-1][2], out.hidden_states[-1][0, -1], atol=1e-4)


def test_encoder_means_over_real_tokens(tiny_bert):
    adapter = HFLanguageAdapter("test/tiny-bert", source=tiny_bert, causal=False)
    assert adapter.family == "transformers-encoder" and adapter.poolings == ("mean", "cls")
    loaded = adapter.load("cpu")
    samples = [Sample(str(i), None, (t,)) for i, t in enumerate(CAPTIONS[:4])]
    with torch.inference_mode():
        inputs = loaded.collator()(samples)
        layers, stats = loaded.encode(inputs)
        alone, _ = loaded.encode(loaded.collator()(samples[3:4]))
    assert "num_bytes" not in inputs and stats == {}
    assert inputs["attention_mask"][3, -1] == 0  # right padding for encoders
    assert len(layers) == 3
    for a, b in zip(layers, alone, strict=True):
        assert torch.allclose(a[3], b[0], atol=1e-4)


def test_hub_model_offline_is_one_clear_model_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = HFLanguageAdapter("prh-bench-test/not-a-real-model")
    assert adapter.availability()[0] is False
    with pytest.raises(ModelError) as info:
        adapter.load("cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "huggingface-cli download prh-bench-test/not-a-real-model" in message
