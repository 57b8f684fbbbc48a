"""Code that several built-in plugins share, so that no plugin imports another's internals.

Not a plugin itself (no hooks). It holds:

- the Hugging Face hub as the hub-backed plugins (timm, open_clip, transformers, WIT) see it:
  cache, offline mode, reachability, and one error for weights that cannot be had, so that
  every one of them says the same thing when the hub cannot be reached, and a machine without
  network finds out once, in about three seconds, instead of after huggingface_hub's retries
  for every model;
- the identity of a local weights file (part of a feature-cache key);
- image decoding and the content hash of the dataset plugins;
- the image collator of the vision plugins;
- the kNN tie rule of the kNN backends (equal similarities: the lower index first).

torch and Pillow are imported inside functions only: loading the plugins stays fast.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prh_bench import ModelError
from prh_bench.images import require_rgb

if TYPE_CHECKING:
    import torch

    from prh_bench import Sample

# --------------------------------------------------------------------------- the hub

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def missing_modules(modules: Iterable[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported here (found without importing them)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def pinned_version(dist: str) -> str:
    """``dist==VERSION`` of an installed distribution, ``dist==missing`` otherwise (a weights
    revision: part of the feature-cache key)."""
    from prh_bench.provenance import distribution_version

    return f"{dist}=={distribution_version(dist) or 'missing'}"


def hub_cache() -> Path:
    """Where huggingface_hub keeps downloads, resolved as huggingface_hub does."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def offline() -> bool:
    """The user said not to use the network (any of the Hugging Face offline variables)."""
    return any(
        os.environ.get(v, "").lower() in {"1", "true", "yes", "on"} for v in OFFLINE_VARIABLES
    )


@functools.cache
def reachable(timeout: float = 3.0) -> bool:
    """One quick TCP probe of the hub per process."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def cached_commit(repo: str, revision: str | None = None) -> str | None:
    """The commit of ``repo`` in the local Hugging Face cache, without network (else None)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo, "config.json", cache_dir=hub_cache(), revision=revision)
    if isinstance(found, str):
        parts = Path(found).parts
        if "snapshots" in parts:
            return parts[parts.index("snapshots") + 1]
    return None


def weights_availability(
    model_id: str, repo: str | None, revision: str | None = None
) -> tuple[bool, str]:
    """(available, why) for weights that come from the hub: cached, or the hub reachable."""
    if repo and cached_commit(repo, revision):
        return True, ""
    hint = f"pre-fetch it on a connected machine (huggingface-cli download {repo or model_id})"
    if offline():
        return False, f"not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {hint}"
    if not reachable():
        return False, (
            f"the Hugging Face hub cannot be reached and it is not in the local cache; {hint} "
            "and copy HF_HOME here"
        )
    return True, "downloads from the Hugging Face hub on first use"


def hub_error(model_id: str, repo: str, exc: BaseException) -> ModelError:
    """The one-line error for hub weights that are neither cached nor downloadable."""
    first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return ModelError(
        f"model '{model_id}': '{repo}' is not in the local Hugging Face cache and the hub "
        f"cannot be reached ({first}). Pre-fetch it on a connected machine with "
        f"`huggingface-cli download {repo}` and copy that cache here (point HF_HOME at it)."
    )


# --------------------------------------------------------------------------- weights files


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """The sha256 of one weights file (fine for the small local files tests and users pass)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "sha256-" + digest.hexdigest()[:16]


def safetensors_parameters(paths: Iterable[str | os.PathLike[str]]) -> int | None:
    """How many numbers the safetensors files hold, read from their headers (no weights
    loaded); None when there is no such file or one cannot be read."""
    import json
    import math

    total, seen = 0, False
    for path in paths:
        if not str(path).endswith(".safetensors"):
            continue
        try:
            with open(path, "rb") as fh:
                size = int.from_bytes(fh.read(8), "little")
                if size > 100_000_000:  # not a safetensors header: never read a file whole
                    return None
                header = json.loads(fh.read(size))
            total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        seen = True
    return total if seen else None


# --------------------------------------------------------------------------- dataset files


class ContentDigest:
    """SHA-256 over (sample id, image bytes, captions) of every sample, in order.

    Lengths are written before each field so no two different datasets share a stream.
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, sample_id: str, image_bytes: bytes, texts: tuple[str, ...]) -> None:
        for field in (sample_id.encode(), image_bytes, *(t.encode() for t in texts)):
            self._h.update(len(field).to_bytes(8, "little"))
            self._h.update(field)
        self._h.update(b"\x00" if not texts else len(texts).to_bytes(4, "little"))

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def content_digest(items: Iterable[tuple[str, bytes, tuple[str, ...]]]) -> str:
    """The ``ContentDigest`` of ``(sample id, image bytes, captions)`` items."""
    digest = ContentDigest()
    for sample_id, image_bytes, texts in items:
        digest.add(sample_id, image_bytes, texts)
    return digest.hexdigest()


# --------------------------------------------------------------------------- images


class ImageCollator:
    """Decoded samples -> a stacked, preprocessed batch (picklable: runs in workers).

    A transform that ends in ToTensor (or timm's MaybeToTensor) and Normalize runs its image
    steps per sample and that tail once per batch, through ``value_table``: the tail maps
    each 8-bit value of each channel on its own, so a table of what it makes of 0..255 gives
    the same floats bit for bit in less CPU time (benchmarks/collate_tail.py), written
    straight into ``memory_format`` (the network's; default contiguous), so no copy converts
    the batch later. Any other transform runs whole, per sample.
    """

    def __init__(self, transform: Any, memory_format: Any = None) -> None:
        self.transform, self.memory_format = transform, memory_format
        self._split = split_tensor_tail(transform)
        self._table: Any = None  # made on first use, in the process that collates

    def __call__(self, samples: list[Sample]) -> torch.Tensor:
        import torch

        images = [require_rgb(s.image, s.sample_id) for s in samples]
        if self._split is None:
            batch = torch.stack([self.transform(image) for image in images])
        else:
            head, tail = self._split
            batch = self._tabled([head(image) for image in images], tail)
        return batch.contiguous(memory_format=self.memory_format or torch.contiguous_format)

    def _tabled(self, images: list[Any], tail: Any) -> torch.Tensor:
        import numpy as np
        import torch
        from PIL import Image

        rgb = all(isinstance(image, Image.Image) and image.mode == "RGB" for image in images)
        if not rgb or len({image.size for image in images}) > 1:  # not what the table is for
            return torch.stack([tail(image) for image in images])
        if self._table is None:
            self._table = value_table(tail)
        pixels = [np.asarray(image) for image in images]
        out = np.empty((len(pixels), *pixels[0].shape), dtype=self._table.dtype)
        for b, p in enumerate(pixels):
            for c in range(p.shape[2]):
                out[b, :, :, c] = self._table[c][p[:, :, c]]
        return torch.from_numpy(out).permute(0, 3, 1, 2)  # NCHW, stored channels_last


def split_tensor_tail(transform: Any) -> tuple[Any, Any] | None:
    """(the image steps, ToTensor + Normalize) of a torchvision Compose that ends so, else None."""
    steps = getattr(transform, "transforms", None)
    if not isinstance(steps, list) or len(steps) < 2:
        return None
    to_tensor, normalize = steps[-2:]
    if type(to_tensor).__name__ not in ("ToTensor", "MaybeToTensor"):
        return None
    if type(normalize).__name__ != "Normalize":
        return None
    compose = type(transform)
    return compose(steps[:-2]), compose(steps[-2:])


def value_table(tail: Any) -> Any:
    """What ``tail`` makes of every 8-bit value in each RGB channel: float array (3, 256).

    Computed by the tail itself on a 256-pixel image holding each value once, so the
    table is exactly what the tail would give for that value anywhere in an image.
    """
    import numpy as np
    from PIL import Image

    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # 1 x 256 x 3
    values = tail(Image.fromarray(ramp))  # 3 x 1 x 256
    return values.reshape(3, 256).numpy()


# --------------------------------------------------------------------------- the kNN tie rule


def topk_lowest_index_ties(sim, k: int):
    """Row-wise top-k indices, by value descending, equal values by ascending index."""

    width = min(k + 1, sim.shape[1])
    values, indices = sim.topk(width, dim=1)
    chosen, chosen_values = indices[:, :k], values[:, :k]
    # order inside the set: index ascending first, then a stable sort by value descending
    by_index = chosen.argsort(dim=1)
    chosen, chosen_values = chosen.gather(1, by_index), chosen_values.gather(1, by_index)
    out = chosen.gather(1, chosen_values.argsort(dim=1, descending=True, stable=True))
    if width > k:  # a tie across the k-th place makes the set itself depend on the rule
        # (rows with NaN or inf are left for the caller's overflow check)
        tied = (values[:, k - 1] == values[:, k]) & values[:, :k].isfinite().all(dim=1)
        crossing = tied.nonzero()[:, 0]
        if len(crossing):
            out[crossing] = _ties_across_the_boundary(sim[crossing], k)
    return out


def _ties_across_the_boundary(sim, k: int):
    """The exact rule on rows where several values equal the k-th: lowest indices win."""
    kth = sim.topk(k, dim=1).values[:, -1:]
    above = sim > kth
    ties = sim == kth
    needed = k - above.sum(dim=1, keepdim=True)
    chosen = above | (ties & (ties.cumsum(dim=1) <= needed))
    cols = chosen.nonzero()[:, 1].view(-1, k)  # ascending index within each row
    order = sim.gather(1, cols).argsort(dim=1, descending=True, stable=True)
    return cols.gather(1, order)
