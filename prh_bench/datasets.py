"""The paired image-caption dataset interface.

A dataset has an ``id``, a ``revision``, a length, random access to samples (each with an RGB
PIL ``image``, one or more ``texts`` and a ``sample_id``), and a ``content_hash`` over image
bytes and captions that every feature-cache key includes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import DatasetError

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class Sample:
    sample_id: str
    image: Image.Image
    texts: tuple[str, ...]

    @property
    def text(self) -> str:
        """The first caption (the paper uses ``text[0]``)."""
        return self.texts[0]


class Dataset:
    """Base class of every dataset. Subclasses implement ``__len__`` and ``__getitem__``."""

    #: a prefix handler's id ends in ":" (e.g. "local:") and it implements ``open(argument)``
    id: str
    revision: str = "unversioned"
    summary: str = ""
    tags: tuple[str, ...] = ()

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    @property
    def content_hash(self) -> str:
        """A stable digest of image bytes and captions."""
        raise NotImplementedError

    def availability(self) -> tuple[bool, str]:
        """(available here, why not): listing a dataset must not load it."""
        return True, ""

    def with_options(self, **options: Any) -> Dataset:
        """A variant of this dataset (e.g. another caption index); none by default."""
        raise DatasetError(f"dataset '{self.id}' takes no options (got {', '.join(options)})")

    def captions(self) -> list[str]:
        """The caption of every sample, in order (cheap where a dataset can skip images)."""
        return [s.text for s in self]


def first_n_hash(full_hash: str, n: int) -> str:
    """The content hash of a dataset's first ``n`` samples (``n`` below its length)."""
    import hashlib

    return hashlib.sha256(f"{full_hash}:{n}".encode()).hexdigest()


def validate_dataset(obj: Any) -> None:
    if not isinstance(obj, Dataset):
        raise TypeError(f"register_datasets expects Dataset instances, got {obj!r}")
