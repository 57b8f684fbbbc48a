"""Language features equal the reference's extraction (minyoungg/platonic-rep), model side.

The reference tokenises the whole dataset at once (left padding to the longest caption) and
mean-pools ``(h * mask).sum / mask.sum`` batch by batch. It is re-implemented plainly here and
compared with ``extract_features`` on tiny seeded GPT-2 (absolute positions), Llama (RoPE) and
BLOOM (ALiBi) checkpoints at two batch sizes.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_features import CAPTIONS, TinyDataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from prh_bench import InvalidInputError, ModelError
from prh_bench.extract import extract_features
from prh_bench.store import feature_key
from prh_bench_plugins.hf_language import HFLanguageAdapter

from conftest import tiny_causal

N = 12


class VariedCaptions(TinyDataset):
    """Captions of 1 to 11 words, so that per-batch padding differs from batch to batch."""

    id = "varied-test"

    def __init__(self, n: int = N) -> None:
        super().__init__(n=n)
        words = " ".join(CAPTIONS).split()
        self._texts = [" ".join(words[i : i + 1 + (5 * i) % 11]) for i in range(n)]


@pytest.fixture(scope="module", params=["gpt2", "llama", "bloom"])
def checkpoint(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    tiny_causal(folder, request.param)
    return request.param, folder


def reference_extraction(folder, texts: list[str], batch_size: int):
    """The reference's extract_llm_features, float32: per-layer features [N, L, D] and bpb."""
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokens = tok(texts, padding="longest", return_tensors="pt")
    feats, bpb = [], []
    for i in range(0, len(texts), batch_size):
        inputs = {k: v[i : i + batch_size] for k, v in tokens.items()}
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
        hidden = torch.stack(out["hidden_states"]).permute(1, 0, 2, 3)
        mask = inputs["attention_mask"].unsqueeze(-1).unsqueeze(1)
        feats.append((hidden * mask).sum(2) / mask.sum(2))
        ce = torch.nn.CrossEntropyLoss(reduction="none")
        loss = inputs["attention_mask"][:, :-1] * ce(
            out["logits"][:, :-1].permute(0, 2, 1), inputs["input_ids"][:, 1:]
        )
        bits = (loss * torch.log2(torch.tensor(math.e))).sum(1)
        chunk = texts[i : i + batch_size]
        bpb.append(bits / torch.tensor([len(t.encode("utf-8")) for t in chunk]))
    return torch.cat(feats), torch.cat(bpb)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


def test_features_equal_the_reference_at_any_batch_size(checkpoint, tmp_path):
    family, folder = checkpoint
    dataset = VariedCaptions()
    texts = dataset.captions()
    want, want_bpb = reference_extraction(folder, texts, batch_size=4)
    adapter = HFLanguageAdapter(f"test/tiny-{family}", source=folder)
    assert adapter.padding == "global" and adapter.max_length is None
    for batch_size in (3, 5):  # 5: a short last batch as well
        fs = extract_features(
            adapter, dataset, cache_dir=tmp_path / str(batch_size), batch_size=batch_size,
            num_workers=0, progress=False, device="cpu",
        )  # fmt: skip
        assert fs.num_layers == want.shape[1] == 3
        for layer, got in enumerate(fs.layers):
            assert relative_error(got, want[:, layer]) <= 1e-6, (family, batch_size, layer)
        assert torch.allclose(fs.stats["bits_per_byte"], want_bpb, rtol=1e-5, atol=0)


def per_batch_padding(folder, texts: list[str], batch_size: int) -> torch.Tensor:
    """What prh-bench computed before: each batch padded only to its own longest caption."""
    return torch.cat(
        [reference_extraction(folder, texts[i : i + batch_size], batch_size)[0]
         for i in range(0, len(texts), batch_size)]
    )  # fmt: skip


def test_absolute_positions_need_global_padding(checkpoint):
    """The departure the issue found: per-batch padding moves GPT-2 features, not RoPE/ALiBi."""
    family, folder = checkpoint
    texts = VariedCaptions().captions()
    want, _ = reference_extraction(folder, texts, batch_size=4)
    moved = relative_error(per_batch_padding(folder, texts, 3), want)
    if family == "gpt2":
        assert moved > 1e-2
    else:
        assert moved < 1e-5


def test_batch_padding_is_refused_where_it_moves_features(checkpoint, tmp_path):
    family, folder = checkpoint
    adapter = HFLanguageAdapter(f"test/tiny-{family}", source=folder, padding="batch")
    run = dict(cache_dir=tmp_path, batch_size=3, num_workers=0, progress=False, device="cpu")
    if family == "gpt2":
        with pytest.raises(ModelError) as info:
            extract_features(adapter, VariedCaptions(), **run)
        message = str(info.value)
        assert "\n" not in message and "padding='global'" in message
    else:  # relative positions: per-batch padding is allowed and equal to rounding
        fs = extract_features(adapter, VariedCaptions(), **run)
        want, _ = reference_extraction(folder, VariedCaptions().captions(), batch_size=4)
        assert relative_error(fs.layers[-1], want[:, -1]) < 1e-5
    # the probe holds in bf16 too: rounding passes, shifted positions do not
    in_bf16 = adapter.load("cpu", torch.bfloat16)
    if family == "gpt2":
        with pytest.raises(ModelError, match="padding='global'"):
            in_bf16.prepare_texts(VariedCaptions().captions())
    else:
        in_bf16.prepare_texts(VariedCaptions().captions())
        assert in_bf16.pad_to is None  # per-batch padding


def test_global_padding_needs_the_captions_first(checkpoint):
    family, folder = checkpoint
    loaded = HFLanguageAdapter(f"test/tiny-{family}", source=folder).load("cpu")
    with pytest.raises(ModelError, match="prepare_texts"):
        loaded.collator()
    loaded.prepare_texts(VariedCaptions().captions())
    batch = loaded.collator()([VariedCaptions()[0]])  # one word, padded all the way
    assert batch["input_ids"].shape[1] == loaded.pad_to > int(batch["attention_mask"].sum())
    # features(batch) takes the batch as the whole dataset: padded to the batch's longest
    samples = [VariedCaptions()[i] for i in (0, 1)]
    with torch.inference_mode():
        layers = loaded.features(samples)
    want, _ = reference_extraction(folder, [s.text for s in samples], batch_size=2)
    assert relative_error(layers[-1], want[:, -1]) <= 1e-6


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-gpt2-key")
    tiny_causal(folder, "gpt2")
    return folder


def test_every_variant_has_its_own_cache_file(tiny_gpt2, tmp_path):
    """Padding, truncation and pooling dtype are in the key: no variant reads another's file."""
    base = HFLanguageAdapter("test/tiny-gpt2", source=tiny_gpt2)
    variants = {
        "default": base,
        "truncated": base.with_options(max_length=4),
        "model-dtype": base.with_options(pool_dtype="model"),
        "encoder-like": HFLanguageAdapter("test/tiny-gpt2", source=tiny_gpt2, causal=False),
        "last": base.with_options(pooling="last"),
    }
    dataset = VariedCaptions(n=6)
    keys = {name: feature_key(a, dataset, "float32") for name, a in variants.items()}
    assert len({k.digest for k in keys.values()}) == len(variants)
    run = dict(cache_dir=tmp_path, num_workers=0, progress=False, device="cpu")
    files = {}
    for name, adapter in variants.items():
        fs = extract_features(adapter, dataset, **run)
        assert not fs.from_cache and fs.meta["digest"] == keys[name].digest
        files[name] = fs
    for name, adapter in variants.items():  # second round: each reads back its own file only
        again = extract_features(adapter, dataset, **run)
        assert again.from_cache and again.path == files[name].path
        assert all(torch.equal(a, b) for a, b in zip(again.layers, files[name].layers, strict=True))
    # truncation to 4 tokens really changes the longer captions, so sharing would be wrong
    assert not torch.equal(files["truncated"].layers[-1], files["default"].layers[-1])
    key = keys["truncated"].preprocessing
    assert "pad=left-global" in key and "truncate=4" in key and "pool_dtype=float32" in key
    assert "truncate=none" in keys["default"].preprocessing
    assert "pool_dtype=model" in keys["model-dtype"].preprocessing


def test_model_dtype_pooling_is_the_reference_bf16_arithmetic(tiny_gpt2):
    """pool_dtype='model' pools like the reference's bf16 run: (h * mask).sum / mask.sum."""
    adapter = HFLanguageAdapter("test/tiny-gpt2", source=tiny_gpt2, pool_dtype="model")
    loaded = adapter.load("cpu", torch.bfloat16)
    texts = VariedCaptions().captions()
    loaded.prepare_texts(texts)
    samples = [VariedCaptions()[i] for i in range(4)]
    with torch.inference_mode():
        inputs = loaded.collator()(samples)
        layers, _ = loaded.encode(inputs)
        out = loaded.model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            output_hidden_states=True,
        )
    hidden = torch.stack(out.hidden_states).permute(1, 0, 2, 3)
    mask = inputs["attention_mask"].unsqueeze(-1).unsqueeze(1)
    want = (hidden * mask).sum(2) / mask.sum(2)
    assert want.dtype == torch.bfloat16
    for layer, got in enumerate(layers):
        assert got.dtype == torch.bfloat16
        assert torch.equal(got, want[:, layer])
    float32 = HFLanguageAdapter("test/tiny-gpt2", source=tiny_gpt2).load("cpu", torch.bfloat16)
    float32.prepare_texts(texts)
    with torch.inference_mode():
        exact, _ = float32.encode(inputs)
    assert exact[-1].dtype == torch.float32 and not torch.equal(exact[-1], layers[-1].float())


def test_a_caption_longer_than_the_context_is_refused_by_index(tiny_gpt2):
    texts = ["a red square", " ".join(["a"] * 80), "a purple flower"]  # 80 tokens > 64
    loaded = HFLanguageAdapter("test/tiny-gpt2", source=tiny_gpt2).load("cpu")
    with pytest.raises(ModelError, match=r"caption 1 has 80 tokens.*64 positions.*max_length"):
        loaded.prepare_texts(texts)
    truncated = HFLanguageAdapter("test/tiny-gpt2", source=tiny_gpt2, max_length=64)
    capped = truncated.load("cpu")
    capped.prepare_texts(texts)
    assert capped.pad_to == 64


@pytest.mark.parametrize(
    "options,match",
    [
        ({"padding": "longest"}, "padding must be one of global, batch"),
        ({"pool_dtype": "bfloat16"}, "pool_dtype must be one of float32, model"),
        ({"max_length": 0}, "max_length must be an integer"),
        ({"max_length": "512"}, "max_length must be an integer"),
    ],
)
def test_bad_options_are_one_line(tiny_gpt2, options, match):
    with pytest.raises(InvalidInputError, match=match):
        HFLanguageAdapter("test/tiny-gpt2", source=tiny_gpt2, **options)
    with pytest.raises(InvalidInputError, match=match):
        HFLanguageAdapter("test/tiny-gpt2", source=tiny_gpt2).with_options(**options)
