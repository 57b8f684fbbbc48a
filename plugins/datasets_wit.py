"""``wit_1024``: the paper's 1,024 Wikipedia image-caption pairs (``minhuh/prh@wit_1024``).

Read through the Hugging Face ``datasets`` library (rows: ``image``, ``text`` a list of
captions, ``origin``). The caption the paper uses is ``text[0]``; ``caption_index`` picks
another, which then comes first in ``sample.texts``. ``path`` reads a copy made with
``Dataset.save_to_disk`` (or a Parquet file) instead of the hub, e.g. on a machine without
network. ``datasets`` is imported only when the data is read.

Images are decoded as ``datasets`` (>= 2.19) decodes them for the reference: turned upright by
their EXIF orientation (``PIL.ImageOps.exif_transpose``), then made RGB. The decoding rule is
part of the content hash, so features cached under another rule are not reused.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from prh_bench import Dataset, DatasetError, Sample, hookimpl
from prh_bench.images import decode_image

from .shared import content_digest, hub_cache, offline, reachable

REPO = "minhuh/prh"
DECODING = "exif_transpose"  # in the content hash: a change of decoding changes the images
REVISION = "wit_1024"
FETCH_HINT = (
    'on a connected machine run: python -c "import datasets; datasets.load_dataset('
    f"'{REPO}', revision='{REVISION}', split='train')\" and copy its Hugging Face cache "
    "(HF_HOME, default ~/.cache/huggingface) here, or set HF_HOME to that copy; "
    "--dataset openclipart-1024 works offline"
)


def datasets_cache() -> Path:
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    return hub_cache().parent / "datasets"


class WitDataset(Dataset):
    id = "wit_1024"
    revision = REVISION
    summary = "the paper's 1,024 WIT image-caption pairs (Hugging Face minhuh/prh@wit_1024)"
    tags = ("paper",)

    def __init__(self, caption_index: int = 0, path: str | None = None) -> None:
        self.caption_index = caption_index
        self.path = path
        self._rows: Any = None  # the datasets.Dataset, opened on first use
        self._hash: str | None = None

    def with_options(self, **options: Any) -> Dataset:
        unknown = set(options) - {"caption_index", "path"}
        if unknown:
            raise DatasetError(
                f"{self.id} takes the options caption_index and path (got {', '.join(unknown)})"
            )
        try:
            index = int(options.get("caption_index", self.caption_index))
        except (TypeError, ValueError):
            raise DatasetError(
                f"caption_index must be an integer, got {options['caption_index']!r}"
            ) from None
        if index < 0:
            raise DatasetError(f"caption_index must be 0 or more, got {index}")
        return WitDataset(caption_index=index, path=options.get("path", self.path))

    def _cached(self) -> bool:
        """Whether a previous download is on disk (no network is touched)."""
        hub = hub_cache() / f"datasets--{REPO.replace('/', '--')}" / "refs" / REVISION
        built = datasets_cache() / REPO.replace("/", "___")
        return hub.is_file() or built.is_dir()

    def availability(self) -> tuple[bool, str]:
        if self.path is not None:
            ok = Path(self.path).exists()
            return ok, "" if ok else f"{self.path} does not exist"
        if self._cached():
            return True, ""
        return False, f"not in the Hugging Face cache ({hub_cache()}); download it once"

    def _not_available(self, detail: str = "") -> DatasetError:
        why = f" ({detail})" if detail else ""
        return DatasetError(
            f"{self.id} is not in the Hugging Face cache at {hub_cache()} and cannot be "
            f"downloaded here{why}; {FETCH_HINT}."
        )

    @property
    def rows(self) -> Any:
        if self._rows is None:
            self._rows = self._open()
            missing = {"image", "text"} - set(self._rows.column_names)
            if missing:
                raise DatasetError(
                    f"{self.id}: the data lacks the column(s) {', '.join(sorted(missing))} "
                    "(expected image, text, origin). Point path= at a copy of minhuh/prh."
                )
        return self._rows

    def _open(self) -> Any:
        if self.path is not None:
            return self._open_path(Path(self.path))
        if not self._cached():
            if offline():
                raise self._not_available("offline mode is set")
            if not reachable():
                raise self._not_available("the hub is unreachable")
        try:
            import datasets
        except ImportError:
            raise DatasetError(
                f"{self.id} needs the 'datasets' library: pip install datasets"
            ) from None
        try:
            ds = datasets.load_dataset(REPO, revision=REVISION, split="train")
        except Exception as exc:  # connection, offline-mode and cache errors all end here
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise self._not_available(f"{type(exc).__name__}: {first[:160]}") from None
        return ds.cast_column("image", datasets.Image(decode=False))

    def _open_path(self, path: Path) -> Any:
        import datasets

        try:
            if path.is_dir():
                ds = datasets.load_from_disk(str(path))
            elif path.suffix == ".parquet":
                ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
            else:
                raise DatasetError(
                    f"{self.id}: path={path} is neither a save_to_disk folder nor a .parquet "
                    "file. Point it at one."
                )
        except (FileNotFoundError, ValueError) as exc:
            raise DatasetError(f"{self.id}: cannot read {path} ({exc}). Check path=.") from None
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        # keep the stored bytes: the content hash is taken over them, and PIL decodes lazily
        return ds.cast_column("image", datasets.Image(decode=False))

    def __len__(self) -> int:
        return len(self.rows)

    def _texts(self, index: int, texts: Any) -> tuple[str, ...]:
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        if self.caption_index >= len(texts):
            raise DatasetError(
                f"{self.id} sample {index}: caption_index {self.caption_index} but it has "
                f"{len(texts)} caption(s). Use a smaller caption_index."
            )
        chosen = texts[self.caption_index]
        if not isinstance(chosen, str) or not chosen.strip():
            raise DatasetError(f"{self.id} sample {index}: caption {self.caption_index} is empty.")
        rest = [t for i, t in enumerate(texts) if i != self.caption_index]
        return (chosen, *rest)

    def _image_bytes(self, index: int, image: Any) -> bytes:
        if isinstance(image, dict) and image.get("bytes"):
            return image["bytes"]
        if isinstance(image, dict) and image.get("path"):
            try:
                return Path(image["path"]).read_bytes()
            except OSError as exc:
                raise DatasetError(
                    f"{self.id} sample {index} ({image['path']}): cannot read it ({exc})."
                ) from None
        raise DatasetError(f"{self.id} sample {index}: the row has no image.")

    def __getitem__(self, index: int) -> Sample:
        row = self.rows[index]
        data = self._image_bytes(index, row["image"])
        image = decode_image(
            data, index=index, where=f"{self.id} sample {index}", exif_transpose=True
        )
        return Sample(sample_id=f"{self.id}-{index:04d}", image=image,
                      texts=self._texts(index, row["text"]))  # fmt: skip

    def captions(self) -> list[str]:
        return [self._texts(i, t)[0] for i, t in enumerate(self.rows["text"])]

    @property
    def content_hash(self) -> str:
        if self._hash is None:
            rows = self.rows
            digest = content_digest(
                (
                    f"{self.id}-{i:04d}",
                    self._image_bytes(i, row["image"]),
                    self._texts(i, row["text"]),
                )  # fmt: skip
                for i, row in enumerate(rows)
            )
            self._hash = hashlib.sha256(f"{digest};decode={DECODING}".encode()).hexdigest()
        return self._hash


@hookimpl
def register_datasets(register) -> None:
    register(WitDataset(), aliases=("wit-1024", "wit"))
