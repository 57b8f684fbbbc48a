"""Language models through Hugging Face transformers: causal LMs and (BERT-like) encoders.

Features follow the paper (Huh et al. 2024): every hidden state (the embedding output and each
block), mean-pooled over the real tokens of each caption, with left padding for causal LMs.
``pooling="last"`` takes the last real token instead (causal), ``"cls"`` the first (encoders).
Causal LMs also report each caption's bits-per-byte (summed next-token cross-entropy in bits
over the caption's UTF-8 byte count), computed from the same forward pass.

Fidelity to the reference's ``extract_features.py``: by default every batch is padded to the
dataset's longest caption (``padding="global"``), as the reference tokenises the whole dataset
at once; with absolute position embeddings (GPT-2 style) a caption's features depend on how
far it is padded, so this is what makes them equal at any batch size. Captions are not
truncated unless ``max_length`` is set, and pooling runs in float32 unless
``pool_dtype="model"`` (the reference's GPU run: bf16 pooling and storage).

torch and transformers are imported inside functions only: listing models stays fast.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prh_bench import InvalidInputError, LoadedModel, ModelAdapter, ModelError, hookimpl
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


PADDINGS = ("global", "batch")
POOL_DTYPES = ("float32", "model")


class TextCollator:
    """Tokenises the first caption of each sample (picklable: runs in DataLoader workers).

    ``pad_to``: the length every batch is padded to (the dataset's longest caption); None pads
    to the longest caption of the batch. ``truncate``: the token cap, None for none.
    """

    def __init__(
        self, tokenizer: Any, truncate: int | None, with_bytes: bool, pad_to: int | None = None
    ) -> None:
        self.tokenizer, self.truncate, self.with_bytes = tokenizer, truncate, with_bytes
        self.pad_to = pad_to

    def __call__(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        import torch

        texts = [s.text for s in samples]
        enc = self.tokenizer(
            texts,
            padding="max_length" if self.pad_to else "longest",
            truncation=self.truncate is not None,
            max_length=self.pad_to or self.truncate,
            return_tensors="pt",
        )
        out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if self.with_bytes:
            out["num_bytes"] = torch.tensor([len(t.encode("utf-8")) for t in texts])
        return out


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor, dtype: Any = None) -> torch.Tensor:
    """Mean of ``hidden`` [B, T, D] over positions where ``mask`` [B, T] is 1, in ``dtype``.

    The reference's arithmetic: ``(h * mask).sum / mask.sum`` with the integer mask, so the
    result keeps h's dtype (float32 unless ``dtype`` says otherwise, e.g. the model's bf16).
    """
    import torch

    h = hidden.to(dtype or torch.float32)
    m = mask.to(h.device, torch.long).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1)


def context_length(model: Any, tokenizer: Any) -> int | None:
    """The most tokens the model has positions for (None when neither config nor tokenizer say)."""
    config = model.config.get_text_config()
    limits = [getattr(config, name, None) for name in ("max_position_embeddings", "n_positions")]
    limits.append(getattr(tokenizer, "model_max_length", None))  # huge when unset
    known = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    return min(known, default=None)


def _text_sample(text: str) -> Sample:
    from prh_bench import Sample

    return Sample("probe", None, (text,))  # type: ignore[arg-type]


def bits_per_byte(
    logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor, num_bytes: torch.Tensor
) -> torch.Tensor:
    """Per-caption bits-per-byte: next-token cross-entropy over real tokens, in bits, / bytes.

    Position t predicts token t+1 and counts when token t is real (the reference's
    ``attention_mask[:, :-1]``), so with left padding every real token after the first is
    scored. Only those positions go through the softmax: with global padding most positions
    are padding, and a row's log-softmax is the same alone as in the full tensor, so the
    result equals the reference's masked sum bit for bit at a fraction of the work.
    """
    import torch

    scored = mask[:, :-1].to(logits.device).bool()
    rows = logits[:, :-1][scored].float()  # [positions scored, vocabulary]
    target = input_ids[:, 1:].to(logits.device)[scored]
    nats = torch.zeros(scored.shape, dtype=torch.float32, device=logits.device)
    nats[scored] = -torch.log_softmax(rows, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
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
        model_id: str,
        truncate: int | None = None,
        padding: str = "batch",
        pool_dtype: str = "float32",
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.pooling, self.causal, self.truncate = pooling, causal, truncate
        self.padding, self.pool_dtype = padding, pool_dtype
        self.model_id = model_id
        self.pad_to: int | None = None  # set by prepare_texts for padding="global"
        # with device_map="auto" the inputs go where the embeddings live
        self.device = str(model.get_input_embeddings().weight.device)
        n_layers = int(model.config.get_text_config().num_hidden_layers)
        self.num_layers = n_layers + 1
        self.layer_names = ["embeddings"] + [f"layers.{i}" for i in range(n_layers)]

    def prepare_texts(self, texts: Sequence[str]) -> None:
        """See every caption once: the global padding length, the context check, the probe."""
        lengths = self.token_lengths(texts)
        longest = max(lengths, default=1)
        limit = context_length(self.model, self.tokenizer)
        if limit is not None and longest > limit:
            index = lengths.index(longest)
            raise ModelError(
                f"model '{self.model_id}': caption {index} has {longest} tokens, more than the "
                f"model's {limit} positions; set max_length={limit} to truncate (documented "
                "departure from the reference, which does not truncate)"
            )
        if self.padding == "global":
            self.pad_to = longest
        elif lengths and longest > min(lengths):
            shortest = texts[lengths.index(min(lengths))]
            self.check_padding_invariant(shortest, longest)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Each caption's token count after truncation (special tokens included)."""
        enc = self.tokenizer(
            list(texts), truncation=self.truncate is not None, max_length=self.truncate
        )
        return [len(ids) for ids in enc["input_ids"]]

    def check_padding_invariant(self, text: str, pad_to: int) -> None:
        """Refuse padding="batch" where padding moves features (absolute position embeddings).

        The caption is encoded alone and padded to ``pad_to`` tokens; with relative positions
        (RoPE, ALiBi) or right padding the two agree to rounding, with GPT-2-style learned
        positions they do not, and per-batch padding would silently depart from the reference.
        """
        import torch

        sample = [_text_sample(text)]
        with torch.inference_mode():
            alone, padded = (
                self.encode(TextCollator(self.tokenizer, self.truncate, self.causal, to)(sample))[0]
                for to in (None, pad_to)
            )
        # rounding moves features by ~1e-7 (float32) or ~1e-3 (bf16) of their norm; shifted
        # learned positions move the embedding layer's output by a good fraction of it
        tolerance = 1e-4 if self.model.dtype == torch.float32 else 2e-2
        norm = torch.linalg.vector_norm
        for layer, (a, b) in enumerate(zip(alone, padded, strict=True)):
            if float(norm(a.float() - b.float())) > tolerance * float(norm(b.float())):
                raise ModelError(
                    f"model '{self.model_id}': its features change with the amount of padding "
                    f"(layer {layer}; absolute position embeddings?), so padding='batch' would "
                    "differ from the reference; use padding='global' (the default)"
                )

    def features(self, batch: list[Sample]) -> list[torch.Tensor]:
        """Per-layer features of ``batch``, taken as the whole dataset (its longest caption
        sets the padding)."""
        self.prepare_texts([s.text for s in batch])
        return super().features(batch)

    def collator(self) -> TextCollator:
        if self.padding == "global" and self.pad_to is None:
            raise ModelError(
                f"model '{self.model_id}': padding='global' pads every batch to the dataset's "
                "longest caption; call prepare_texts(all captions) before collating "
                "(extract_features does)"
            )
        return TextCollator(self.tokenizer, self.truncate, self.causal, self.pad_to)

    def encode(self, inputs: dict[str, torch.Tensor]) -> tuple[list[Any], dict[str, Any]]:
        import torch

        ids = inputs["input_ids"].to(self.device)
        mask = inputs["attention_mask"].to(self.device)
        out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states
        if len(hidden) != self.num_layers:
            raise ModelError(
                f"model '{self.model_id}' returned {len(hidden)} hidden states, "
                f"expected {self.num_layers}"
            )
        dtype = hidden[0].dtype if self.pool_dtype == "model" else torch.float32
        if self.pooling == "mean":
            layers = [mean_pool(h, mask, dtype) for h in hidden]
        elif self.pooling == "last":  # left padding: the last position is the last real token
            layers = [h[:, -1].to(dtype) for h in hidden]
        else:  # "cls": the first token (encoders, right padding)
            layers = [h[:, 0].to(dtype) for h in hidden]
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
    """A transformers language model, from a hub id or a local folder (``source``).

    Options that change features (each is in ``preprocessing()``, hence in the cache key):

    - ``padding``: ``"global"`` (causal default) pads every batch to the dataset's longest
      caption, as the reference does: features do not depend on the batch size, whatever the
      position encoding. ``"batch"`` (encoder default) pads to each batch's longest caption;
      for a causal LM it is refused at extraction when padding moves its features.
    - ``max_length``: truncate captions to this many tokens; None (default) keeps them whole,
      as the reference. A caption longer than the model's context is refused, naming it.
    - ``pool_dtype``: ``"float32"`` (default) pools in float32; ``"model"`` pools in the
      model's compute dtype (the reference's bf16 GPU run; values stored as float32 after).
    """

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
        max_length: int | None = None,
        pooling: str = "mean",
        trust_remote_code: bool = False,
        padding: str | None = None,
        pool_dtype: str = "float32",
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
        self.family = "transformers-causal" if causal else "transformers-encoder"
        self.poolings = ("mean", "last") if causal else ("mean", "cls")
        self.pooling = pooling
        # what makes features equal to the reference's (all three go into the cache key):
        # the token cap (None: none, as the reference), the padding scheme (global: every
        # batch padded to the dataset's longest caption; right padding moves no token, so
        # encoders pad per batch), and the pooling dtype (float32, or the model's own dtype)
        self.max_length = check_max_length(id, max_length)
        self.padding = check_choice(
            id, "padding", padding or ("global" if causal else "batch"), PADDINGS
        )
        self.pool_dtype = check_choice(id, "pool_dtype", pool_dtype, POOL_DTYPES)
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
        truncate = self.max_length if self.max_length is not None else "none"
        # per-batch padding moves features by rounding with the batch's longest caption,
        # so the batch size is part of the key there; global padding makes it irrelevant
        padding = self.padding if self.padding == "global" else f"batch@{self.batch_size}"
        return (
            f"tokenizer;pad={side}-{padding};truncate={truncate};"
            f"pool_dtype={self.pool_dtype};caption=text[0]"
        )

    def for_precision(self, profile: str) -> ModelAdapter:
        """``"reference"`` pools in the model dtype (bf16 on GPUs), as the reference does."""
        super().for_precision(profile)
        return self.with_options(pool_dtype="model") if profile == "reference" else self

    def with_options(self, **options: Any) -> ModelAdapter:
        """Also ``padding``, ``max_length`` and ``pool_dtype`` (see the class docstring)."""
        own = {k: options.pop(k) for k in ("padding", "max_length", "pool_dtype") if k in options}
        clone = super().with_options(**options)
        assert isinstance(clone, HFLanguageAdapter)
        if "padding" in own:
            clone.padding = check_choice(self.id, "padding", own["padding"], PADDINGS)
        if "max_length" in own:
            clone.max_length = check_max_length(self.id, own["max_length"])
        if "pool_dtype" in own:
            clone.pool_dtype = check_choice(self.id, "pool_dtype", own["pool_dtype"], POOL_DTYPES)
        return clone

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
            model_id=self.id,
            truncate=self.max_length,
            padding=self.padding,
            pool_dtype=self.pool_dtype,
        )


def check_choice(model_id: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidInputError(
            f"model '{model_id}': {name} must be one of {', '.join(choices)}, got {value!r}"
        )
    return str(value)


def check_max_length(model_id: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise InvalidInputError(
            f"model '{model_id}': max_length must be an integer of at least 2 tokens or None "
            f"(no truncation), got {value!r}"
        )
    return value


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
        # their 512 learned positions; right padding keeps encoders' features padding-free
        register(
            HFLanguageAdapter(
                repo, causal=False, parameters=params, tags=("hub", "encoder"), max_length=512
            )
        )
