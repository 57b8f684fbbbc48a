"""Reading a file a user hands over: the one guard every reader of JSON (and CSV) input uses.

Whatever the file holds, the caller gets its text (``read_text``) or parsed document
(``read_json``), or one error line naming the file: not there, not a regular file (a FIFO is
refused before it can block the reader), not UTF-8, not JSON, an integer too long to convert,
or nested deeper than ``MAX_DEPTH`` (later readers walk the document recursively). ``NaN``, ``Infinity`` and numbers beyond the float range come
back as non-finite floats: each caller decides what they mean.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from .errors import PrhBenchError

MAX_DEPTH = 64  # a result file is about 6 levels deep; lm-eval output about 4


def read_json(
    path: str | os.PathLike[str], error: type[PrhBenchError] = PrhBenchError, what: str = "JSON"
) -> Any:
    """The document in ``path``; every problem is one ``error`` naming the file."""
    path = Path(path)
    text = read_text(path, error)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid {what} (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise error(f"{path}: not valid {what} (nested deeper than {MAX_DEPTH} levels)") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise error(f"{path}: not valid {what} ({exc})") from None
    if _depth(data) > MAX_DEPTH:
        raise error(f"{path}: not valid {what} (nested deeper than {MAX_DEPTH} levels)")
    return data


def read_text(path: str | os.PathLike[str], error: type[PrhBenchError] = PrhBenchError) -> str:
    """The UTF-8 text of a regular file; every problem is one ``error`` naming the file."""
    path = Path(path)
    try:
        # non-blocking: opening a FIFO returns at once, and fstat then refuses it
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    with open(fd, "rb") as handle:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise error(f"{path}: not a regular file (a folder, FIFO or device); name a file")
            raw = handle.read()
        except OSError as exc:
            raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")  # a byte-order mark, as some editors write it, is fine
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _depth(data: Any) -> int:
    """How deeply lists and objects nest (iterative: the guard itself never recurses)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                stack.extend((child, level + 1) for child in _children(node))
    return deepest


def _children(node: dict | list) -> Any:
    return node.values() if isinstance(node, dict) else node
