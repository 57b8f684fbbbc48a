"""prh-bench: how alike do vision and language models see the world?

The public API. Importing it is cheap: torch and the model libraries load only when used.
"""

from __future__ import annotations

from .align import Alignment, align_layers, clamp_outliers
from .datasets import Dataset, Sample
from .errors import (
    DatasetError,
    DuplicateIdError,
    InvalidInputError,
    ModelError,
    PluginError,
    PrhBenchError,
    UnknownIdError,
)
from .hookspecs import hookimpl
from .metrics import Metric
from .models import DownstreamScore, LoadedModel, ModelAdapter, ModelMetadata
from .provenance import __version__
from .registry import get_dataset, get_metric, get_model


def __getattr__(name: str):  # results need pydantic: import them only when asked for
    if name in ("load_results", "read_result"):
        from . import results

        return getattr(results, name)
    raise AttributeError(f"module 'prh_bench' has no attribute {name!r}")


__all__ = [
    "Alignment",
    "Dataset",
    "DatasetError",
    "DownstreamScore",
    "DuplicateIdError",
    "InvalidInputError",
    "LoadedModel",
    "Metric",
    "ModelAdapter",
    "ModelError",
    "ModelMetadata",
    "PluginError",
    "PrhBenchError",
    "Sample",
    "UnknownIdError",
    "__version__",
    "align_layers",
    "clamp_outliers",
    "get_dataset",
    "get_metric",
    "get_model",
    "hookimpl",
    "load_results",
    "read_result",
]
