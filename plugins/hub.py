"""The Hugging Face hub as the hub-backed plugins see it: cache, offline mode, reachability.

Not a plugin itself (no hooks): a shared helper of the timm, open_clip, transformers and WIT
plugins, so that every one of them says the same thing when the hub cannot be reached, and a
machine without network finds out once, in about three seconds, instead of after
huggingface_hub's retries for every model.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


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
