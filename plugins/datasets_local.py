"""Local paired datasets: a folder of images with ``captions.jsonl`` or ``captions.csv``.

``captions.jsonl`` has one object a line, ``{"file": "0001.png", "caption": "..."}`` or
``{"file": ..., "captions": ["...", "..."]}``; ``captions.csv`` has the columns ``file`` and
``caption``. Address a folder as ``local:PATH`` or by its plain path.

Opening reads the captions file and checks every row (the file exists, the caption is not
empty); an unreadable or corrupt image is found when its sample is read. With
``skip_bad=True`` every image is also decoded at open, so bad rows of every kind are left
out, counted in the log and listed in ``dataset.skipped``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prh_bench import Dataset, DatasetError, Sample, hookimpl
from prh_bench_plugins.shared import content_digest, decode_rgb

log = logging.getLogger("prh_bench.datasets")

CAPTION_FILES = ("captions.jsonl", "captions.csv")


@dataclass(frozen=True)
class Row:
    number: int  # 1-based line (jsonl) or data row (csv) in the captions file
    file: str
    texts: tuple[str, ...]


def _texts(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        return ()
    return tuple(t.strip() for t in raw)


def read_rows(captions_path: Path) -> list[tuple[int, str, tuple[str, ...] | None, str]]:
    """(row number, file, captions or None, problem) for every row of a captions file."""
    out: list[tuple[int, str, tuple[str, ...] | None, str]] = []
    try:
        text = captions_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {captions_path}: {exc}. Check the file.") from None
    if captions_path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue  # blank lines (a trailing newline) are not rows
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                out.append((number, "?", None, f"not a JSON object ({exc.msg})"))
                continue
            if not isinstance(obj, dict):
                out.append((number, "?", None, "not a JSON object"))
                continue
            file = obj.get("file")
            raw = obj["captions"] if "captions" in obj else obj.get("caption")
            out.append((number, file if isinstance(file, str) else "?", _texts(raw), ""))
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
            raise DatasetError(
                f"{captions_path} needs the header 'file,caption' "
                f"(found {','.join(reader.fieldnames or []) or 'nothing'}). Fix its first line."
            )
        for number, rec in enumerate(reader, start=1):
            out.append((number, rec.get("file") or "?", _texts(rec.get("caption") or ""), ""))
    return out


class LocalFolderDataset(Dataset):
    """One folder of images plus its captions file."""

    def __init__(self, folder: Path, skip_bad: bool = False) -> None:
        self.folder = folder
        self.captions_path = next(
            (folder / n for n in CAPTION_FILES if (folder / n).is_file()), folder / "?"
        )
        self.id = f"local:{folder}"
        self.skip_bad = skip_bad
        self.skipped: list[str] = []  # "row N (file): problem", one per skipped row
        self._hash: str | None = None
        rows = read_rows(self.captions_path)
        if not rows:
            raise DatasetError(f"{self.captions_path} has no rows. Add one line per image.")
        self.rows: list[Row] = []
        for number, file, texts, problem in rows:
            problem = problem or self._problem(file, texts)
            if not problem and skip_bad:
                problem = self._image_problem(file)
            if problem:
                where = f"{self.captions_path} row {number} ({file})"
                if not skip_bad:
                    raise DatasetError(f"{where}: {problem}. Fix the row or pass skip_bad=True.")
                self.skipped.append(f"{where}: {problem}")
                continue
            self.rows.append(Row(number, file, texts or ()))
        if self.skipped:
            log.warning(
                "%s: skipped %d bad row(s) of %d; first: %s",
                self.id, len(self.skipped), len(rows), self.skipped[0],
            )  # fmt: skip
        if not self.rows:
            raise DatasetError(f"{self.id}: every row is bad ({self.skipped[0]}).")
        self.revision = f"{len(self.rows)}-rows"
        self.summary = f"local folder, {len(self.rows)} samples" + (
            f" ({len(self.skipped)} bad rows skipped)" if self.skipped else ""
        )

    def _problem(self, file: str, texts: tuple[str, ...] | None) -> str:
        if file == "?" or not file:
            return "no 'file' field"
        path = (self.folder / file).resolve()
        if not path.is_relative_to(self.folder.resolve()):
            return "the file is outside the folder"
        if not path.is_file():
            return "missing file"
        if not texts:
            return "no caption"
        if any(not t for t in texts):
            return "empty caption"
        return ""

    def _image_problem(self, file: str) -> str:
        try:
            decode_rgb((self.folder / file).read_bytes(), "")
        except (DatasetError, OSError) as exc:
            return str(exc).split(": ", 1)[-1].split(". Replace")[0]
        return ""

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, index: int) -> bytes:
        row = self.rows[index]
        try:
            return (self.folder / row.file).read_bytes()
        except OSError as exc:
            raise DatasetError(
                f"{self.id} sample {index} (row {row.number}, {row.file}): cannot read it "
                f"({exc.strerror or exc}). Restore the file or pass skip_bad=True."
            ) from None

    def __getitem__(self, index: int) -> Sample:
        if not -len(self.rows) <= index < len(self.rows):
            raise IndexError(f"sample {index} is outside 0..{len(self.rows) - 1}")
        index %= len(self.rows)
        row = self.rows[index]
        where = f"{self.id} sample {index} (row {row.number}, {row.file})"
        image = decode_rgb(self._read(index), where)
        return Sample(sample_id=row.file, image=image, texts=row.texts)

    @property
    def content_hash(self) -> str:
        if self._hash is None:  # reads every image once; cached for this object
            self._hash = content_digest(
                (row.file, self._read(i), row.texts) for i, row in enumerate(self.rows)
            )
        return self._hash

    def captions(self) -> list[str]:
        return [row.texts[0] for row in self.rows]

    def with_options(self, **options: Any) -> Dataset:
        return open_local(str(self.folder), **{"skip_bad": self.skip_bad, **options})


def open_local(path: str, skip_bad: bool = False, **options: Any) -> LocalFolderDataset:
    """Open ``path`` (a folder with captions.jsonl or captions.csv) as a dataset."""
    if options:
        raise DatasetError(
            f"local datasets take the option skip_bad only (got {', '.join(options)})"
        )
    folder = Path(os.path.expanduser(path))
    if not folder.is_dir():
        raise DatasetError(f"local dataset folder '{path}' does not exist. Check the path.")
    if not any((folder / n).is_file() for n in CAPTION_FILES):
        raise DatasetError(
            f"'{path}' has neither captions.jsonl nor captions.csv. Add one "
            '(a line per image: {"file": "0001.png", "caption": "..."}); see docs/datasets.md.'
        )
    return LocalFolderDataset(folder, skip_bad=_flag(skip_bad))


def _flag(value: Any) -> bool:
    """Options may come from the command line as strings ("1", "true", "no")."""
    if isinstance(value, str):
        if value.lower() not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
            raise DatasetError(f"skip_bad must be true or false, got {value!r}")
        return value.lower() in {"1", "true", "yes", "on"}
    return bool(value)


class LocalPrefix(Dataset):
    """The ``local:`` prefix handler: ``get_dataset("local:PATH")`` opens PATH."""

    id = "local:"
    summary = "a folder of images with captions.jsonl or captions.csv"

    def __len__(self) -> int:
        return 0

    @property
    def content_hash(self) -> str:
        raise DatasetError("'local:' needs a folder: use local:PATH")

    def open(self, path: str, **options: Any) -> LocalFolderDataset:
        return open_local(path, **options)


@hookimpl
def register_datasets(register) -> None:
    register(LocalPrefix())
