"""CLIP image and text towers through open_clip, registered as two models each.

Image tower (vision): the CLS token of every residual block output of ``model.visual``, then
the final projected image embedding as the last layer. Text tower (language): every residual
block output of the text transformer mean-pooled over the real tokens (start of text through
end of text; padding excluded), then the final projected text embedding. ``pooling="eot"`` on
the text tower takes the end-of-text token instead, which is what CLIP itself pools.

torch and open_clip are imported inside functions only: listing models stays fast.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prh_bench import LoadedModel, ModelAdapter, ModelError, hookimpl
from prh_bench_plugins.shared import (
    ImageCollator,
    file_fingerprint,
    hub_error,
    weights_availability,
)

if TYPE_CHECKING:
    import torch

    from prh_bench.datasets import Sample


class TokenizeCollator:
    """Captions -> open_clip token ids [B, context] (picklable: runs in DataLoader workers)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, samples: list[Sample]) -> torch.Tensor:
        return self.tokenizer([s.text for s in samples])


class ClipTower(LoadedModel):
    """One tower of an open_clip CLIP model with hooks on its residual blocks."""

    def __init__(
        self,
        model: Any,
        tower: str,
        pooling: str,
        preprocess: Any,
        tokenizer: Any,
        device: str,
        dtype: Any,
    ) -> None:
        self.model, self.tower, self.pooling = model, tower, pooling
        self.preprocess, self.tokenizer = preprocess, tokenizer
        self.device, self.dtype = device, dtype
        trunk = (
            model.visual.transformer if tower == "image" else getattr(model, "transformer", None)
        )
        if trunk is None or not hasattr(trunk, "resblocks"):
            raise ModelError(
                f"open_clip model has no residual {tower} transformer to read layers from"
            )
        self.batch_first = bool(getattr(trunk, "batch_first", True))
        blocks = list(trunk.resblocks)
        self.layer_names = [f"resblocks.{i}" for i in range(len(blocks))] + ["embedding"]
        self.num_layers = len(self.layer_names)
        self._outputs: list[Any] = []
        self._handles = [b.register_forward_hook(self._keep) for b in blocks]

    def _keep(self, module: Any, args: Any, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        self._outputs.append(out if self.batch_first else out.transpose(0, 1))

    def collator(self) -> Any:
        if self.tower == "image":
            return ImageCollator(self.preprocess)
        return TokenizeCollator(self.tokenizer)

    def encode(self, inputs: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, Any]]:
        self._outputs = []
        try:
            if self.tower == "image":
                final = self.model.encode_image(inputs.to(self.device, self.dtype))
                layers = [o[:, 0] for o in self._outputs]
            else:
                ids = inputs.to(self.device)
                final = self.model.encode_text(ids)
                layers = [self._pool_text(o, ids) for o in self._outputs]
        finally:
            self._outputs = []
        return [t.float() for t in layers] + [final.float()], {}

    def _pool_text(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        if self.pooling == "eot":  # CLIP's end-of-text token has the largest id in its vocab
            return hidden[ids.new_tensor(range(ids.shape[0])), ids.argmax(-1)]
        mask = (ids != 0).unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)

    def close(self) -> None:
        import gc

        import torch

        for h in self._handles:
            h.remove()
        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class OpenClipAdapter(ModelAdapter):
    """One tower (``image`` or ``text``) of ``open_clip.create_model_and_transforms(arch, tag)``.

    ``pretrained`` is an open_clip tag (downloaded from the hub) or a local checkpoint file.
    """

    family = "open_clip"

    def __init__(
        self,
        arch: str,
        pretrained: str,
        tower: str,
        *,
        parameters: int | None = None,
        tags: tuple[str, ...] = (),
        batch_size: int = 64,
        id: str | None = None,
    ) -> None:
        super().__init__()
        if tower not in ("image", "text"):
            raise ValueError(f"tower must be 'image' or 'text', got {tower!r}")
        self.arch, self.pretrained, self.tower = arch, pretrained, tower
        tag = os.path.basename(pretrained) if os.path.sep in pretrained else pretrained
        self.id = id or f"open_clip/{arch}.{tag}/{tower}"
        self.modality = "vision" if tower == "image" else "language"
        self.poolings = ("cls",) if tower == "image" else ("mean", "eot")
        self.pooling = self.poolings[0]
        self.batch_size = batch_size
        self.tags = tags
        self.metadata.parameters = parameters
        self.metadata.url = "https://github.com/mlfoundations/open_clip"
        #: the Hugging Face repository of the weights, when known (None: not looked up)
        self.hub_repo: str | None = None

    @property
    def is_local(self) -> bool:
        return os.path.isfile(self.pretrained)

    def preprocessing(self) -> str:
        return f"open_clip:{self.arch}:{self.tower}"

    def weights_revision(self) -> str:
        if self.is_local:
            return file_fingerprint(self.pretrained)
        return f"open_clip-tag:{self.pretrained}"

    def availability(self) -> tuple[bool, str]:
        if self.is_local:
            return True, ""

        # open_clip resolves its hub repo only after importing itself: without a known
        # repository (set by whoever imported it), probe the hub alone
        return weights_availability(self.id, self.hub_repo)

    def load(self, device: str = "cpu", dtype: Any = None) -> ClipTower:
        import open_clip
        import torch

        dtype = dtype or torch.float32
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.arch, pretrained=self.pretrained, device=device
            )
        except (OSError, ValueError, RuntimeError, ConnectionError) as exc:
            if self.is_local:
                raise ModelError(
                    f"model '{self.id}': cannot load checkpoint {self.pretrained}: {exc}"
                ) from exc

            raise hub_error(self.id, f"open_clip {self.arch} {self.pretrained}", exc) from exc
        model = model.to(dtype=dtype).eval()
        tokenizer = open_clip.get_tokenizer(self.arch) if self.tower == "text" else None
        return ClipTower(model, self.tower, self.pooling, preprocess, tokenizer, device, dtype)


# (arch, tag, image-tower parameters, text-tower parameters), counted on the meta device
_CLIPS: list[tuple[str, str, int, int]] = [
    ("ViT-B-32", "laion2b_s34b_b79k", 87_849_216, 63_428_097),
    ("ViT-B-16", "laion2b_s34b_b88k", 86_192_640, 63_428_097),
    ("ViT-L-14", "laion2b_s32b_b82k", 303_966_208, 123_650_305),
]


@hookimpl
def register_models(register: Any) -> None:
    for arch, tag, vision_params, text_params in _CLIPS:
        register(
            OpenClipAdapter(arch, tag, "image", parameters=vision_params, tags=("hub", "clip"))
        )
        register(OpenClipAdapter(arch, tag, "text", parameters=text_params, tags=("hub", "clip")))
