"""Local paired datasets: a folder of images with ``captions.jsonl`` or ``captions.csv``.

``captions.jsonl`` has one object a line, ``{"file": "0001.png", "caption": "..."}`` or
``{"file": ..., "captions": ["...", "..."]}``; ``captions.csv`` has the columns ``file`` and
``caption``. Address a folder as ``local:PATH`` or by its plain path.

Opening reads the captions file, checks every row (a usable path to a file inside the folder,
captions neither empty nor longer than ``MAX_CAPTION_CHARS``) and reads every image file
once: that finds unreadable files, warns (one line) about rows that repeat an earlier row's
image, and gives the content hash. Images are decoded by ``prh_bench.images.decode_image``
when a sample is read; with ``skip_bad=True`` they are also decoded at open, so bad rows of
every kind are left out, named in one warning line and listed in ``dataset.skipped``.

"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prh_bench import Dataset, DatasetError, Sample, hookimpl
from prh_bench.images import BadImageError, decode_image, read_image_file
from prh_bench_plugins.shared import ContentDigest

log = logging.getLogger("prh_bench.datasets")

CAPTION_FILES = ("captions.jsonl", "captions.csv")
#: the longest caption accepted; language models read far less, and a longer one is
#: usually a CSV quote left open, which swallows the rows after it
MAX_CAPTION_CHARS = 10_000


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


def shown(file: str) -> str:
    """``file`` as an error line shows it: control characters escaped, at most 80 characters."""
    text = file if file.isprintable() else ascii(file)[1:-1]
    return text if len(text) <= 80 else f"{text[:60]}...({len(file):,} characters)"


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
            except RecursionError:
                out.append((number, "?", None, "not a JSON object (nested too deeply)"))
                continue
            except ValueError as exc:  # JSONDecodeError, or an integer of too many digits
                out.append((number, "?", None, f"not a JSON object ({getattr(exc, 'msg', exc)})"))
                continue
            if not isinstance(obj, dict):
                out.append((number, "?", None, "not a JSON object"))
                continue
            file = obj.get("file")
            raw = obj["captions"] if "captions" in obj else obj.get("caption")
            out.append((number, file if isinstance(file, str) else "?", _texts(raw), ""))
        return out
    reader = csv.DictReader(io.StringIO(text))
    try:
        if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
            raise DatasetError(
                f"{captions_path} needs the header 'file,caption' "
                f"(found {','.join(reader.fieldnames or []) or 'nothing'}). Fix its first line."
            )
        for number, rec in enumerate(reader, start=1):
            out.append((number, rec.get("file") or "?", _texts(rec.get("caption") or ""), ""))
    except csv.Error as exc:  # e.g. a field over csv's size limit: a quote left open
        raise DatasetError(
            f"{captions_path} row {len(out) + 1}: {exc}. A caption may have at most "
            f'{MAX_CAPTION_CHARS:,} characters; look for a quote (") left open.'
        ) from None
    return out


class LocalFolderDataset(Dataset):
    """One folder of images plus its captions file."""

    def __init__(self, folder: Path, skip_bad: bool = False) -> None:
        # one identity however the path is spelt (relative, "..", a trailing slash, a symlink):
        # the id is part of every feature key; the content hash covers only names and bytes
        folder = folder.resolve()
        self.folder = folder
        self.captions_path = next(
            (folder / n for n in CAPTION_FILES if (folder / n).is_file()), folder / "?"
        )
        self.id = f"local:{folder}"
        self.skip_bad = skip_bad
        self.skipped: list[str] = []  # "row N (file): problem", one per skipped row
        #: (earlier sample, later sample) for every sample whose image bytes repeat another's
        self.repeats: list[tuple[int, int]] = []
        rows = read_rows(self.captions_path)
        if not rows:
            raise DatasetError(f"{self.captions_path} has no rows. Add one line per image.")
        self.rows: list[Row] = []
        digest = ContentDigest()
        first_with: dict[str, int] = {}  # image bytes' SHA-256 -> the first sample holding them
        skipped_rows: list[int] = []
        for number, file, texts, problem in rows:
            data = b""
            problem = problem or _caption_problem(texts) or self._path_problem(file)
            if not problem:
                data, problem = self._bytes(file)
            if not problem and skip_bad:
                problem = _image_problem(data)
            if problem:
                where = f"{self.captions_path} row {number} ({shown(file)})"
                if not skip_bad:
                    raise DatasetError(f"{where}: {problem}. Fix the row or pass skip_bad=True.")
                self.skipped.append(f"{where}: {problem}")
                skipped_rows.append(number)
                continue
            index = len(self.rows)
            self.rows.append(Row(number, file, texts or ()))
            digest.add(file, data, texts or ())
            earlier = first_with.setdefault(hashlib.sha256(data).hexdigest(), index)
            if earlier != index:
                self.repeats.append((earlier, index))
        if self.skipped:
            numbers = ", ".join(str(n) for n in skipped_rows[:10])
            more = f" and {len(self.skipped) - 10} more" if len(self.skipped) > 10 else ""
            log.warning(
                "%s: skipped %d bad row(s) of %d (%s %s%s); first: %s",
                self.id, len(self.skipped), len(rows), "row" if len(self.skipped) == 1 else "rows",
                numbers, more, self.skipped[0],
            )  # fmt: skip
        if not self.rows:
            raise DatasetError(f"{self.id}: every row is bad ({self.skipped[0]}).")
        if self.repeats:
            earlier, later = self.repeats[0]
            log.warning(
                "%s: %d sample(s) repeat an earlier sample's image (identical bytes), so "
                "mutual-kNN sees each copy as the other's nearest image; first: %s repeats %s. "
                'Remove the repeats, or give one row several captions ("captions": [...]).',
                self.id, len(self.repeats), self._sample(later), self._sample(earlier),
            )  # fmt: skip
        self._hash = digest.hexdigest()
        self.revision = f"{len(self.rows)}-rows"
        self.summary = f"local folder, {len(self.rows)} samples" + (
            f" ({len(self.skipped)} bad rows skipped)" if self.skipped else ""
        )

    def _sample(self, index: int) -> str:
        row = self.rows[index]
        return f"sample {index} (row {row.number}, {shown(row.file)})"

    def _path_problem(self, file: str) -> str:
        if file == "?" or not file:
            return "no 'file' field"
        if "\x00" in file:
            return "the file name contains a NUL byte"
        try:
            path = (self.folder / file).resolve(strict=True)
        except FileNotFoundError:
            return "missing file"
        except RuntimeError:  # Python < 3.13 reports a symlink loop so
            return "a symlink loop"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a symlink loop"
            return f"unusable path ({exc.strerror or exc})"
        if not path.is_relative_to(self.folder.resolve()):
            return "the file is outside the folder"
        if not path.is_file():
            return "not a regular file"
        return ""

    def _bytes(self, file: str) -> tuple[bytes, str]:
        """(the file's bytes, "") or (b"", the problem)."""
        try:
            return read_image_file(self.folder / file, index=0), ""
        except BadImageError as bad:
            return b"", bad.problem

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self.rows) <= index < len(self.rows):
            raise IndexError(f"sample {index} is outside 0..{len(self.rows) - 1}")
        index %= len(self.rows)
        row = self.rows[index]
        image = decode_image(
            self.folder / row.file,
            index=index,
            where=f"{self.id} {self._sample(index)}",
            hint="Replace or remove it, or pass skip_bad=True.",
        )
        return Sample(sample_id=row.file, image=image, texts=row.texts)

    @property
    def content_hash(self) -> str:
        return self._hash  # taken at open, over the bytes read then

    def captions(self) -> list[str]:
        return [row.texts[0] for row in self.rows]

    def with_options(self, **options: Any) -> Dataset:
        return open_local(str(self.folder), **{"skip_bad": self.skip_bad, **options})


def _caption_problem(texts: tuple[str, ...] | None) -> str:
    if not texts:
        return "no caption"
    if any(not t for t in texts):
        return "empty caption"
    longest = max(len(t) for t in texts)
    if longest > MAX_CAPTION_CHARS:
        return f"a caption of {longest:,} characters (at most {MAX_CAPTION_CHARS:,})"
    return ""


def _image_problem(data: bytes) -> str:
    try:
        decode_image(data, index=0)
    except BadImageError as bad:
        return bad.problem
    return ""


def open_local(path: str, skip_bad: bool = False, **options: Any) -> LocalFolderDataset:
    """Open ``path`` (a folder with captions.jsonl or captions.csv) as a dataset."""
    if options:
        raise DatasetError(
            f"local datasets take the option skip_bad only (got {', '.join(options)})"
        )
    folder = Path(os.path.expanduser(path))
    try:
        found = folder.is_dir() and [n for n in CAPTION_FILES if (folder / n).is_file()]
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        why = getattr(exc, "strerror", None) or exc
        raise DatasetError(f"cannot use the folder path '{shown(path)}' ({why}).") from None
    if found is False:
        raise DatasetError(f"local dataset folder '{shown(path)}' does not exist. Check the path.")
    if not found:
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
