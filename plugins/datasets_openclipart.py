"""``openclipart-1024``: the embedded offline dataset, shipped inside the package.

1,024 public-domain Openclipart drawings (Debian's openclipart-svg), rendered to 224 x 224 RGB
on white and paired with their human-written titles (plus a description where it adds
information). ``scripts/build_openclipart.py`` made it; ``data/openclipart-1024/README.md``
gives provenance and licence. Reading it needs neither network nor any system package.
"""

from __future__ import annotations

import hashlib
import json
import threading
import zipfile
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from prh_bench import Dataset, DatasetError, Sample, hookimpl
from prh_bench.images import decode_image

from .shared import content_digest

DATA_DIR = "data/openclipart-1024"
#: the version of the shipped data; bump it whenever the build changes what is stored
REVISION = "2024.1"


def data_dir() -> Traversable:
    return resources.files("prh_bench_plugins").joinpath(DATA_DIR)


class OpenclipartDataset(Dataset):
    id = "openclipart-1024"
    revision = REVISION
    summary = "1,024 public-domain Openclipart drawings with their titles (embedded, offline)"
    tags = ("offline", "embedded")

    def __init__(self) -> None:
        self._records: list[dict[str, Any]] | None = None  # read on first use only
        self._zip: zipfile.ZipFile | None = None
        self._lock = threading.Lock()  # one ZipFile handle is shared by data-loader threads
        self._hash: str | None = None

    def availability(self) -> tuple[bool, str]:
        ok = all(data_dir().joinpath(n).is_file() for n in ("samples.jsonl", "images.zip"))
        return ok, "" if ok else "its data files are missing from this installation; reinstall"

    @property
    def records(self) -> list[dict[str, Any]]:
        if self._records is None:
            ok, why = self.availability()
            if not ok:
                raise DatasetError(f"{self.id}: {why} prh-bench.")
            text = data_dir().joinpath("samples.jsonl").read_text(encoding="utf-8")
            self._records = [json.loads(line) for line in text.splitlines() if line]
        return self._records

    def _bytes(self, index: int) -> bytes:
        rec = self.records[index]
        with self._lock:
            if self._zip is None:
                self._zip = zipfile.ZipFile(data_dir().joinpath("images.zip").open("rb"))
            try:
                data = self._zip.read(rec["file"])
            except (KeyError, zipfile.BadZipFile, OSError) as exc:
                raise DatasetError(
                    f"{self.id} sample {index} ({rec['file']}): cannot read it ({exc}). "
                    "Reinstall prh-bench."
                ) from None
        if hashlib.sha256(data).hexdigest() != rec["sha256"]:
            raise DatasetError(
                f"{self.id} sample {index} ({rec['file']}): the stored image is damaged "
                "(checksum mismatch). Reinstall prh-bench."
            )
        return data

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        rec = self.records[index]
        where = f"{self.id} sample {index} ({rec['file']})"
        image = decode_image(self._bytes(index), index=index, where=where,
                             hint="Reinstall prh-bench.")  # fmt: skip
        return Sample(sample_id=rec["sample_id"], image=image, texts=(rec["caption"],))

    def metadata(self, index: int) -> dict[str, Any]:
        """Title, description, category path and source SVG of one sample."""
        return dict(self.records[index])

    def captions(self) -> list[str]:
        return [rec["caption"] for rec in self.records]

    @property
    def content_hash(self) -> str:
        if self._hash is None:
            self._hash = content_digest(
                (rec["sample_id"], self._bytes(i), (rec["caption"],))
                for i, rec in enumerate(self.records)
            )
        return self._hash

    def __getstate__(self) -> dict[str, Any]:  # a worker process opens its own zip handle
        state = dict(self.__dict__)
        state["_zip"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


@hookimpl
def register_datasets(register) -> None:
    register(OpenclipartDataset(), aliases=("openclipart",))
