"""The user's settings: TOML files (run.toml, site.toml) and ``KEY=VALUE`` options.

Every mistake becomes one line of the caller's error type naming the file, the line and the
key, and what was expected.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import PrhBenchError


def read_toml(
    path: str | os.PathLike[str], table: str, error: type[PrhBenchError]
) -> tuple[dict[str, Any], str]:
    """The keys of ``[table]`` (or the top level, where there is no such table) and the text.

    Keys both at the top level and in ``[table]`` are refused: one of them would be ignored.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: malformed TOML: {exc}") from None
    if table in data:
        section = data[table]
        if not isinstance(section, dict):
            raise error(f"{path}: '{table}' must be a table ([{table}])")
        stray = sorted(k for k in data if k != table)
        if stray:
            raise error(
                f"{path}: key(s) {', '.join(stray)} sit outside [{table}] and would be ignored; "
                f"move them under [{table}]"
            )
        data = section
    return data, text


def key_line(text: str, key: str) -> int | None:
    """The first line of a TOML text that sets ``key`` (for error messages)."""
    for number, line in enumerate(text.splitlines(), 1):
        name = line.split("=", 1)[0].strip().strip("\"'")
        if "=" in line and name == key:
            return number
    return None


def check_types(
    data: dict[str, Any],
    expected: dict[str, type | tuple[type, ...]],
    path: str | os.PathLike[str],
    text: str,
    error: type[PrhBenchError],
) -> None:
    """Refuse unknown keys and values of the wrong type (a bool is not an int here)."""
    for key, value in data.items():
        line = key_line(text, key)
        where = f"{path}, line {line}" if line else str(path)
        if key not in expected:
            raise error(f"{where}: unknown key '{key}'; known keys: {', '.join(sorted(expected))}")
        want = expected[key]
        types = want if isinstance(want, tuple) else (want,)
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            names = " or ".join(_type_name(t) for t in types)
            raise error(f"{where}: key '{key}' must be {names}, got {value!r}")
        if isinstance(value, list) and list in types:
            if not all(isinstance(v, str) for v in value):
                raise error(f"{where}: key '{key}' must be a list of strings, got {value!r}")


def _type_name(t: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        bool: "true or false",
        float: "a number",
        list: "a list of strings",
        dict: "a table",
    }.get(t, t.__name__)


def parse_option(
    text: str, what: str, error: type[PrhBenchError], example: str = "timeout_min=60"
) -> tuple[str, Any]:
    """``KEY=VALUE``, VALUE read as JSON where it parses (60, true, null), else as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise error(f"{what} '{text}' must be KEY=VALUE, e.g. {example}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value
