"""Writing files so that nothing is lost: a temporary name in the same folder, then a rename.

A reader sees either the old file or the complete new one, never a torn one, whatever kills
the writer. Errors of the file system a user can fix (disk full, permission denied, read-only
folder) become one ``StorageError`` line that names the path and what to do.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import PrhBenchError


class StorageError(PrhBenchError):
    """A file or folder the tool needs cannot be written."""


def explain(exc: OSError, path: str | os.PathLike[str]) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(
            f"no space left on the device while writing {path}; free some space or point "
            "--cache-dir / --output somewhere else (what was written before is intact)"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(
            f"permission denied writing {path}; choose a writable --cache-dir / --output "
            "or fix the folder's permissions"
        )
    return StorageError(f"cannot write {path}: {exc.strerror or exc}")


@contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn file-system errors inside the block into a StorageError naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise explain(exc, path) from None


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, fsync it, and rename it into place."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a result is for sharing
            with open(tmp, "rb+") as handle:  # the bytes are on disk before the name is
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def slug(text: str) -> str:
    """A file-name-safe, readable form of an id (``org/name`` -> ``org--name``).

    Ids that would collide once odd characters are replaced (``a/b`` and ``a--b``, ``a b`` and
    ``a-b``) get a short hash suffix, so two ids never share a file name.
    """
    plain = text.replace("/", "--")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", plain).strip("-.")[:80] or "x"
    if name != plain or "--" in text:
        name += "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return name
