"""Vision models through timm: the paper's 17 ViTs, ConvNeXt and other CNNs.

ViT features follow the paper (Huh et al. 2024): the CLS token of every block output, i.e. the
tensor after ``blocks.{i}``'s second residual add (the node the reference code reads as
``blocks.{i}.add_1`` with torchvision's ``create_feature_extractor``); a forward hook on each
block returns that same tensor without tracing the graph. ``pooling="mean"`` averages all
tokens instead. CNNs give the spatial mean of every stage that timm lists in ``feature_info``.
Preprocessing comes from the model's pretrained config (``resolve_data_config``).

torch and timm are imported inside functions only: listing models stays fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prh_bench import LoadedModel, ModelAdapter, ModelError, hookimpl
from prh_bench_plugins.shared import (
    ImageCollator,
    cached_commit,
    file_fingerprint,
    hub_error,
    weights_availability,
)

if TYPE_CHECKING:
    import torch


class HookedVisionModel(LoadedModel):
    """Runs a vision model and pools the outputs of chosen submodules (one per layer).

    Each output is pooled as its hook sees it, so no layer's full activation outlives the
    next layer. ``channels_last`` runs the network and its inputs in NHWC memory format: for
    convolutional nets on CPU about 1.4x faster (benchmarks/extraction_overhead.py), with
    features equal to float32 rounding (an adapter that turns it on bumps adapter_version).
    """

    def __init__(
        self,
        model: Any,
        modules: list[tuple[str, Any]],
        transform: Any,
        *,
        pool: Any,
        device: str,
        dtype: Any,
        forward: Any = None,
        final: str | None = None,
        channels_last: bool = False,
    ) -> None:
        import torch

        self.model, self.transform, self.pool = model, transform, pool
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model.to(memory_format=self.memory_format)
        self.device, self.dtype = device, dtype
        self.forward = forward or model.forward_features
        self.final = final  # when set, the forward's own output is one more (last) layer
        self.modules = modules  # (name, module) whose outputs are the layers, in order
        self.layer_names = [name for name, _ in modules] + ([final] if final else [])
        self.num_layers = len(self.layer_names)
        self._outputs: list[Any] = []
        self._handles = [m.register_forward_hook(self._keep) for _, m in modules]

    def _keep(self, module: Any, args: Any, output: Any) -> None:
        output = output[0] if isinstance(output, (tuple, list)) else output
        self._outputs.append(self.pool(output))

    def collator(self) -> ImageCollator:
        return ImageCollator(self.transform, self.memory_format)

    def encode(self, inputs: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, Any]]:
        self._outputs = []
        try:
            x = inputs.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)
            result = self.forward(x)
            pooled = self._outputs
        finally:
            self._outputs = []
        if self.final:
            pooled = [*pooled, self.pool(result)]
        if len(pooled) != self.num_layers:
            raise ModelError(
                f"expected {self.num_layers} layer outputs, the hooks saw {len(pooled)}"
            )
        return [p.float() for p in pooled], {}

    def close(self) -> None:
        import gc

        import torch

        for h in self._handles:
            h.remove()
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def pool_cls(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0]


def pool_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.mean(1)


def pool_spatial(x: torch.Tensor) -> torch.Tensor:
    # timm's CNN stage outputs (ConvNeXt, ResNet, ...) are NCHW: average over H and W
    return x.mean((2, 3)) if x.ndim == 4 else x.mean(1) if x.ndim == 3 else x


def describe_data_config(cfg: dict[str, Any]) -> str:
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return ";".join(f"{k}={cfg.get(k)}" for k in keys)


class TimmVisionAdapter(ModelAdapter):
    """A timm model by its ``arch.tag`` name; ``checkpoint`` points at a local weights file."""

    modality = "vision"
    family = "timm"

    def __init__(
        self,
        name: str,
        *,
        kind: str = "vit",
        parameters: int | None = None,
        tags: tuple[str, ...] = (),
        checkpoint: str | os.PathLike[str] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        batch_size: int = 32,
        id: str | None = None,
        citation: str | None = None,
        hub_repo: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        # the hub repository of the weights, when known without importing timm (listing stays
        # fast); else read from timm's pretrained config
        self._hub_repo = hub_repo
        self.id = id or name
        self.kind = kind  # "vit" (token blocks) or "cnn" (stages)
        self.family = f"timm-{kind}"
        self.poolings = ("cls", "mean") if kind == "vit" else ("mean",)
        self.pooling = self.poolings[0]
        self.checkpoint = str(checkpoint) if checkpoint is not None else None
        self.model_kwargs = dict(model_kwargs or {})
        self.batch_size = batch_size
        self.tags = tags
        self.metadata.parameters = parameters
        self.metadata.url = f"https://huggingface.co/timm/{name}"
        self.metadata.citation = citation

    def _pretrained_cfg(self) -> dict[str, Any]:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(self.name)
        if cfg is None:
            raise ModelError(f"timm has no pretrained config for '{self.name}'; check the name")
        return cfg.to_dict()

    def preprocessing(self) -> str:
        # the pretrained config fixes the transform; model_kwargs (tests) may change the size
        extra = f";kwargs={sorted(self.model_kwargs.items())}" if self.model_kwargs else ""
        return describe_data_config(self._pretrained_cfg()) + extra

    def weights_revision(self) -> str:
        if self.checkpoint:
            return file_fingerprint(self.checkpoint)

        hub_id = self.hub_repo()
        return (cached_commit(hub_id) if hub_id else None) or "main"

    def hub_repo(self) -> str | None:
        """The Hugging Face repository timm downloads the weights from (None: none)."""
        if self._hub_repo is not None:
            return self._hub_repo
        try:
            return self._pretrained_cfg().get("hf_hub_id")
        except ModelError:
            return None

    def availability(self) -> tuple[bool, str]:
        if self.checkpoint:
            ok = os.path.exists(self.checkpoint)
            return ok, "" if ok else f"checkpoint {self.checkpoint} is missing"

        return weights_availability(self.id, self.hub_repo())

    def create(self) -> Any:
        """timm.create_model with pretrained weights (the hub, or the local checkpoint)."""
        import timm

        kwargs = dict(self.model_kwargs)
        if self.checkpoint:
            kwargs["pretrained_cfg_overlay"] = {"file": self.checkpoint}
        try:
            return timm.create_model(self.name, pretrained=True, **kwargs)
        except Exception as exc:  # any failure reading a local file is the file's fault
            if self.checkpoint:
                raise ModelError(
                    f"model '{self.id}': cannot load checkpoint {self.checkpoint}: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                ) from exc
            if not isinstance(exc, (OSError, ValueError, RuntimeError, ConnectionError)):
                raise

            raise hub_error(self.id, self.hub_repo() or self.name, exc) from exc

    def load(self, device: str = "cpu", dtype: Any = None) -> HookedVisionModel:
        import torch
        from timm.data import create_transform, resolve_data_config

        dtype = dtype or torch.float32
        model = self.create().eval().to(device=device, dtype=dtype)
        transform = create_transform(**resolve_data_config(model.pretrained_cfg, model=model))
        if self.kind == "vit":
            modules = [(f"blocks.{i}", b) for i, b in enumerate(model.blocks)]
            pool = pool_cls if self.pooling == "cls" else pool_tokens
        else:
            names = [info["module"] for info in model.feature_info]
            modules = [(n, model.get_submodule(n)) for n in names]
            pool = pool_spatial
        return HookedVisionModel(model, modules, transform, pool=pool, device=device, dtype=dtype)


_PAPER = "https://arxiv.org/abs/2405.07987"

# timm name, parameters (counted by building each architecture on the meta device), batch size
_VITS: list[tuple[str, int, int]] = [
    ("vit_tiny_patch16_224.augreg_in21k", 9_740_115, 64),
    ("vit_small_patch16_224.augreg_in21k", 30_075_219, 64),
    ("vit_base_patch16_224.augreg_in21k", 102_595_923, 64),
    ("vit_large_patch16_224.augreg_in21k", 325_690_707, 32),
    ("vit_base_patch16_224.mae", 85_798_656, 64),
    ("vit_large_patch16_224.mae", 303_301_632, 32),
    ("vit_huge_patch14_224.mae", 630_764_800, 16),
    ("vit_small_patch14_dinov2.lvd142m", 22_056_192, 32),
    ("vit_base_patch14_dinov2.lvd142m", 86_579_712, 32),
    ("vit_large_patch14_dinov2.lvd142m", 304_367_616, 16),
    ("vit_giant_patch14_dinov2.lvd142m", 1_136_479_232, 8),
    ("vit_base_patch16_clip_224.laion2b", 86_193_152, 64),
    ("vit_large_patch14_clip_224.laion2b", 303_966_976, 32),
    ("vit_huge_patch14_clip_224.laion2b", 632_077_824, 16),
    ("vit_base_patch16_clip_224.laion2b_ft_in12k", 94_889_773, 64),
    ("vit_large_patch14_clip_224.laion2b_ft_in12k", 315_296_301, 32),
    ("vit_huge_patch14_clip_224.laion2b_ft_in12k", 645_908_781, 16),
]

_CNNS: list[tuple[str, int, int]] = [
    ("convnext_base.fb_in22k_ft_in1k", 88_591_464, 32),
    ("convnext_large.fb_in22k_ft_in1k", 197_767_336, 32),
    ("resnet50.a1_in1k", 25_557_032, 64),
]


@hookimpl
def register_models(register: Any) -> None:
    for name, params, bs in _VITS:
        register(
            TimmVisionAdapter(
                name,
                kind="vit",
                parameters=params,
                batch_size=bs,
                tags=("hub", "vit", "paper"),
                citation=_PAPER,
                hub_repo=f"timm/{name}",  # timm's own repository of every listed model
            )
        )
    for name, params, bs in _CNNS:
        register(
            TimmVisionAdapter(
                name,
                kind="cnn",
                parameters=params,
                batch_size=bs,
                tags=("hub", "cnn"),
                hub_repo=f"timm/{name}",
            )
        )
