from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# the plain re-implementations of the paper's formulas live beside the tests
sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_plugins(monkeypatch):
    """A plugin manager loaded anew for this test, and forgotten after it."""
    from prh_bench import plugins

    monkeypatch.delenv("PRH_BENCH_LOAD_PLUGINS", raising=False)
    plugins.reset()
    yield plugins
    plugins.reset()


@pytest.fixture
def run_cli():
    """Invoke the CLI in-process; returns the click Result."""
    from click.testing import CliRunner

    from prh_bench.cli import cli

    def invoke(*args: str, env: dict[str, str] | None = None):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


def make_tokenizer(folder, bos: str | None):
    """A word-level tokenizer over the test captions, saved to ``folder``."""
    from test_features import CAPTIONS
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for c in CAPTIONS for w in c.split()})
    vocab = {t: i for i, t in enumerate(["[UNK]", "[PAD]", "<s>", "</s>", "[CLS]", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:  # a LLaMA-like tokenizer starts every text with <s>
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", 2)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", bos_token=bos, eos_token="</s>"
    )
    fast.save_pretrained(folder)
    return fast


def tiny_causal(folder, family: str, positions: int = 64) -> None:
    """A seeded 2-layer, 32-wide causal LM of ``family`` (gpt2, llama, bloom) with a word-level
    tokenizer, saved to ``folder`` as save_pretrained writes it."""
    import torch
    from transformers import (
        BloomConfig,
        BloomForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tok = make_tokenizer(folder, bos="<s>" if family == "llama" else None)
    size = dict(vocab_size=len(tok), bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    if family == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=positions, **size)
        model = GPT2LMHeadModel(config)
    elif family == "llama":
        config = LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=positions,
            **size,
        )
        model = LlamaForCausalLM(config)
    else:
        model = BloomForCausalLM(BloomConfig(hidden_size=32, n_layer=2, n_head=2, **size))
    model.save_pretrained(folder)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A tiny seeded Llama checkpoint folder (config.json, safetensors, tokenizer)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_causal(folder, "llama", positions=128)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A tiny seeded BERT encoder folder (config.json, safetensors, tokenizer)."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = make_tokenizer(folder, bos=None)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA; none on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
