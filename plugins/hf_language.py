"""Language models through Hugging Face transformers: causal LMs and (BERT-like) encoders.

Features follow the paper (Huh et al. 2024): every hidden state (the embedding output and each
block), mean-pooled over the real tokens of each caption, with left padding for causal LMs.
``pooling="last"`` takes the last real token instead (causal), ``"cls"`` the first (encoders).
Causal LMs also report each caption's bits-per-byte (summed next-token cross-entropy in bits
over the caption's UTF-8 byte count), computed from the same forward pass.

torch and transformers are imported inside functions only: listing models stays fast.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prh_bench import LoadedModel, ModelAdapter, ModelError, hookimpl
from prh_bench_plugins.shared import cached_commit, hub_error, weights_availability

if TYPE_CHECKING:
    import torch

    from prh_bench.datasets import Sample


def directory_fingerprint(path: str | os.PathLike[str]) -> str:
    """A cheap identity of local weights: name, size and the first MiB of each weight file."""
    digest = hashlib.sha256()
    for file in sorted(Path(path).rglob("*")):
        if not file.is_file() or file.suffix not in (".safetensors", ".bin", ".json", ".gguf"):
            continue
        digest.update(f"{file.relative_to(path)}:{file.stat().st_size}:".encode())
        with open(file, "rb") as fh:
            digest.update(fh.read(1 << 20))
    return "local-" + digest.hexdigest()[:16]


class TextCollator:
    """Tokenises the first caption of each sample (picklable: runs in DataLoader workers)."""

    def __init__(self, tokenizer: Any, max_length: int, with_bytes: bool) -> None:
        self.tokenizer, self.max_length, self.with_bytes = tokenizer, max_length, with_bytes

    def __call__(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        import torch

        texts = [s.text for s in samples]
        enc = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if self.with_bytes:
            out["num_bytes"] = torch.tensor([len(t.encode("utf-8")) for t in texts])
        return out


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` [B, T, D] over positions where ``mask`` [B, T] is 1 (in float32)."""
    m = mask.to(hidden.device, torch_float32()).unsqueeze(-1)
    return (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1.0)


def torch_float32() -> Any:
    import torch

    return torch.float32


def bits_per_byte(
    logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor, num_bytes: torch.Tensor
) -> torch.Tensor:
    """Per-caption bits-per-byte: next-token cross-entropy over real tokens, in bits, / bytes.

    Position t predicts token t+1 and counts when token t is real (the reference's
    ``attention_mask[:, :-1]``), so with left padding every real token after the first is
    scored.
    """
    import torch

    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = input_ids[:, 1:].to(logp.device)
    nats = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    nats = nats * mask[:, :-1].to(nats.device, nats.dtype)
    bits = nats.sum(1) * math.log2(math.e)
    return bits.cpu() / num_bytes.to(torch.float32).clamp_min(1.0)


class HFLoaded(LoadedModel):
    """A transformers model and tokenizer, pooled per hidden state."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        pooling: str,
        causal: bool,
        max_length: int,
        model_id: str,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.pooling, self.causal, self.max_length = pooling, causal, max_length
        self.model_id = model_id
        # with device_map="auto" the inputs go where the embeddings live
        self.device = str(model.get_input_embeddings().weight.device)
        n_layers = int(model.config.get_text_config().num_hidden_layers)
        self.num_layers = n_layers + 1
        self.layer_names = ["embeddings"] + [f"layers.{i}" for i in range(n_layers)]

    def collator(self) -> TextCollator:
        return TextCollator(self.tokenizer, self.max_length, with_bytes=self.causal)

    def encode(self, inputs: dict[str, torch.Tensor]) -> tuple[list[Any], dict[str, Any]]:
        ids = inputs["input_ids"].to(self.device)
        mask = inputs["attention_mask"].to(self.device)
        out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states
        if len(hidden) != self.num_layers:
            raise ModelError(
                f"model '{self.model_id}' returned {len(hidden)} hidden states, "
                f"expected {self.num_layers}"
            )
        if self.pooling == "mean":
            layers = [mean_pool(h, mask) for h in hidden]
        elif self.pooling == "last":  # left padding: the last position is the last real token
            layers = [h[:, -1].float() for h in hidden]
        else:  # "cls": the first token (encoders, right padding)
            layers = [h[:, 0].float() for h in hidden]
        stats: dict[str, Any] = {}
        if self.causal:
            stats["bits_per_byte"] = bits_per_byte(out.logits, ids, mask, inputs["num_bytes"])
        return layers, stats

    def close(self) -> None:
        import gc

        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class HFLanguageAdapter(ModelAdapter):
    """A transformers language model, from a hub id or a local folder (``source``)."""

    modality = "language"
    family = "transformers"

    def __init__(
        self,
        id: str,
        *,
        causal: bool = True,
        source: str | os.PathLike[str] | None = None,
        revision: str | None = None,
        parameters: int | None = None,
        batch_size: int = 32,
        large: bool = False,
        tags: tuple[str, ...] = (),
        url: str | None = None,
        citation: str | None = None,
        max_length: int = 512,
        pooling: str = "mean",
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__()
        self.id = id
        # code from a model repository runs only when the registering plugin opts in, per model
        self.trust_remote_code = trust_remote_code
        self.causal = causal
        self.source = str(source) if source is not None else id
        self.revision = revision
        self.batch_size = batch_size
        self.large = large  # spread over every visible GPU with device_map="auto"
        self.max_length = max_length
        self.family = "transformers-causal" if causal else "transformers-encoder"
        self.poolings = ("mean", "last") if causal else ("mean", "cls")
        self.pooling = pooling
        self.tags = tags
        self.metadata.parameters = parameters
        self.metadata.revision = revision
        self.metadata.url = url or (None if self.is_local else f"https://huggingface.co/{id}")
        self.metadata.citation = citation

    @property
    def is_local(self) -> bool:
        return os.path.isdir(self.source)

    def default_dtype(self, device: str) -> str:
        # bf16 on GPUs for language models, as the paper does; float32 elsewhere
        if device.startswith("cuda"):
            import torch

            if torch.cuda.is_bf16_supported():
                return "bfloat16"
        return "float32"

    def preprocessing(self) -> str:
        side = "left" if self.causal else "right"
        return f"tokenizer;pad={side};max_length={self.max_length};caption=text[0]"

    def weights_revision(self) -> str:
        if self.is_local:
            return directory_fingerprint(self.source)
        return cached_commit(self.source, self.revision) or self.revision or "main"

    def availability(self) -> tuple[bool, str]:
        if self.is_local:
            return True, ""
        return weights_availability(self.id, self.source, self.revision)

    def model_source(self) -> str:
        """The folder or hub id from_pretrained reads (subclasses may prepare a folder)."""
        return self.source

    def load(self, device: str = "cpu", dtype: Any = None) -> HFLoaded:
        import torch
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        src = self.model_source()
        dtype = dtype or torch.float32
        kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": self.trust_remote_code}
        if self.revision and not os.path.isdir(src):
            kwargs["revision"] = self.revision
        use_map = self.large and device.startswith("cuda") and torch.cuda.device_count() > 0
        if use_map:
            kwargs["device_map"] = "auto"
        try:
            tok = AutoTokenizer.from_pretrained(
                src, revision=kwargs.get("revision"), trust_remote_code=self.trust_remote_code
            )
            cls = AutoModelForCausalLM if self.causal else AutoModel
            model = cls.from_pretrained(src, **kwargs)
        except (OSError, ValueError, ConnectionError) as exc:
            if os.path.isdir(src):
                raise ModelError(
                    f"model '{self.id}': cannot load weights from {src}: {exc}"
                ) from exc
            raise hub_error(self.id, src, exc) from exc
        return self.wrap(model, tok, device, use_map)

    def wrap(self, model: Any, tok: Any, device: str, mapped: bool = False) -> HFLoaded:
        """Put a loaded model and tokenizer in the shape the extraction loop expects."""
        if tok.pad_token is None:  # LLaMA/GPT-style tokenizers have none: reuse end-of-text
            tok.pad_token = tok.eos_token or tok.unk_token
        tok.padding_side = "left" if self.causal else "right"
        if not mapped:
            model = model.to(device)
        model.eval()
        return HFLoaded(
            model,
            tok,
            pooling=self.pooling,
            causal=self.causal,
            max_length=self.max_length,
            model_id=self.id,
        )


_PAPER = "https://arxiv.org/abs/2405.07987"

# (hub id, nominal parameters from the model name/card, batch size on one GPU, large)
_CAUSAL: list[tuple[str, int, int, bool, tuple[str, ...]]] = [
    ("bigscience/bloomz-560m", 560_000_000, 64, False, ("paper",)),
    ("bigscience/bloomz-1b1", 1_100_000_000, 64, False, ("paper",)),
    ("bigscience/bloomz-1b7", 1_700_000_000, 32, False, ("paper",)),
    ("bigscience/bloomz-3b", 3_000_000_000, 32, False, ("paper",)),
    ("bigscience/bloomz-7b1", 7_100_000_000, 16, False, ("paper",)),
    ("openlm-research/open_llama_3b", 3_000_000_000, 32, False, ("paper",)),
    ("openlm-research/open_llama_7b", 7_000_000_000, 16, False, ("paper",)),
    ("openlm-research/open_llama_13b", 13_000_000_000, 8, True, ("paper",)),
    ("huggyllama/llama-7b", 7_000_000_000, 16, False, ("paper",)),
    ("huggyllama/llama-13b", 13_000_000_000, 8, True, ("paper",)),
    ("huggyllama/llama-30b", 30_000_000_000, 4, True, ("paper",)),
    ("huggyllama/llama-65b", 65_000_000_000, 2, True, ("paper",)),
    ("allenai/OLMo-1B-hf", 1_000_000_000, 64, False, ("paper-test",)),
    ("allenai/OLMo-7B-hf", 7_000_000_000, 16, False, ("paper-test",)),
    ("google/gemma-2b", 2_000_000_000, 32, False, ("paper-test",)),
    ("google/gemma-7b", 7_000_000_000, 16, False, ("paper-test",)),
    ("mistralai/Mistral-7B-v0.1", 7_000_000_000, 16, False, ("paper-test",)),
    ("mistralai/Mixtral-8x7B-v0.1", 46_700_000_000, 2, True, ("paper-test",)),
    ("NousResearch/Meta-Llama-3-8B", 8_000_000_000, 16, False, ("paper-test",)),
    ("NousResearch/Meta-Llama-3-70B", 70_000_000_000, 2, True, ("paper-test",)),
    ("meta-llama/Meta-Llama-3-8B", 8_000_000_000, 16, False, ()),
    ("google/gemma-2-2b", 2_600_000_000, 32, False, ()),
    ("allenai/OLMo-2-1124-7B", 7_300_000_000, 16, False, ()),
]

_ENCODERS: list[tuple[str, int]] = [
    ("google-bert/bert-base-uncased", 110_000_000),
    ("google-bert/bert-large-uncased", 340_000_000),
    ("FacebookAI/roberta-base", 125_000_000),
    ("FacebookAI/roberta-large", 355_000_000),
]


@hookimpl
def register_models(register: Any) -> None:
    for repo, params, bs, large, extra in _CAUSAL:
        register(
            HFLanguageAdapter(
                repo,
                causal=True,
                parameters=params,
                batch_size=bs,
                large=large,
                tags=("hub", "causal-lm", *extra),
                citation=_PAPER if extra else None,
            )
        )
    for repo, params in _ENCODERS:
        register(HFLanguageAdapter(repo, causal=False, parameters=params, tags=("hub", "encoder")))
