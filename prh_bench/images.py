"""The one image decoder: bytes or a file -> an 8-bit RGB PIL image, or a one-line error.

Every dataset decodes through ``decode_image``, so every guard below holds for all of them:

* Size. A file may have at most ``MAX_FILE_BYTES``, an image at most ``MAX_PIXELS`` pixels,
  and its long side may be at most ``MAX_ASPECT`` times its short side. The pixel bound caps
  what decoding holds (at most 4 bytes a pixel, 200 MB, plus the RGB copy); the aspect bound
  caps what a model's resize allocates: scaling the short side to S pixels makes at most
  ``S * S * MAX_ASPECT`` pixels (7.5 MB of RGB at S = 224, 40 MB at S = 518). Both are read
  from the header, before any pixel is decoded. Pillow's decompression-bomb warning is an
  error here too, and EPS is not opened (Pillow would run Ghostscript on it).
* Corruption. Truncated or undecodable data fails here, not later in a collator.
* Modes. Every mode is decoded to correct 8-bit RGB or refused in one line:
  ``1``, ``L``, ``P``, ``RGBX``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and the alpha modes
  (``LA``, ``PA``, ``RGBA``, ``RGBa``) go through Pillow's ``convert("RGB")``, as the paper's
  reference code does: alpha is dropped (a transparent pixel shows its stored colour), not
  composited, so features equal the reference's. 16-bit grey (``I;16``, ``I;16L``,
  ``I;16B``, ``I;16N``) and ``I`` with values in 0..65535 keep their high byte (``v >> 8``),
  the rule Pillow itself applies to 16-bit colour PNGs; ``I`` beyond that range, 32-bit float
  ``F`` (no defined value range) and any other mode are refused.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .errors import DatasetError

if TYPE_CHECKING:
    from PIL import Image

#: the most pixels an image may have (a 50-megapixel photo)
MAX_PIXELS = 50_000_000
#: the most the long side may exceed the short side by (a long panorama)
MAX_ASPECT = 50
#: the largest image file read (an uncompressed 50-megapixel RGBA image is 200 MB)
MAX_FILE_BYTES = 256 * 2**20
#: bump when a rule below changes what an image decodes to; a feature-cache key that
#: includes it recomputes features made under older rules
DECODE_VERSION = "2"

#: what an error says to do, unless the caller knows better
HINT = "Replace or remove it."
#: modes Pillow converts to RGB correctly
_CONVERTIBLE = {"1", "L", "P", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "LA", "PA", "RGBA", "RGBa"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


class BadImageError(DatasetError):
    """An image that cannot be decoded within the bounds; ``problem`` is the short reason.

    It takes the one message argument of every typed error, so that torch can rebuild it
    when it carries it out of a DataLoader worker.
    """

    problem = ""


def decode_image(
    source: bytes | str | os.PathLike[str],
    *,
    index: int,
    where: str = "",
    hint: str = HINT,
    exif_transpose: bool = False,
) -> Image.Image:
    """Decode ``source`` (image bytes or a file path) to an 8-bit RGB image.

    ``where`` names the sample in the error (it defaults to ``sample INDEX``) and ``hint``
    says what to do; ``exif_transpose`` applies the EXIF orientation first. Raises
    ``BadImageError`` (a ``DatasetError``) for any image this module refuses.
    """
    with _naming(index, where, hint):
        return _decode(_read(source), exif_transpose)


def read_image_file(
    path: str | os.PathLike[str], *, index: int, where: str = "", hint: str = HINT
) -> bytes:
    """The bytes of an image file, never more than ``MAX_FILE_BYTES`` read (else refused)."""
    with _naming(index, where, hint):
        return _read(path)


class _Refused(Exception):
    """Why an image is refused; ``_naming`` adds which sample it is."""


@contextmanager
def _naming(index: int, where: str, hint: str) -> Iterator[None]:
    try:
        yield
    except _Refused as refused:
        error = BadImageError(f"{where or f'sample {index}'}: {refused}. {hint}")
        error.problem = str(refused)
        raise error from None


def _read(source: bytes | str | os.PathLike[str]) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        try:
            with open(source, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)  # never more than the bound, whatever the file
        except OSError as exc:
            raise _Refused(f"cannot read it ({exc.strerror or exc})") from None
        except ValueError as exc:  # a NUL byte in the path
            raise _Refused(f"cannot read it ({exc})") from None
    if len(data) > MAX_FILE_BYTES:
        raise _Refused(f"a file over {MAX_FILE_BYTES:,} bytes, too large for an image")
    return data


def _decode(data: bytes, exif_transpose: bool) -> Image.Image:
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.init()
    try:
        # catch_warnings is process-wide state; racing threads may lose the filter, which
        # only turns an error back into a warning: MAX_PIXELS (below Pillow's limit) still holds
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=_formats(Image.OPEN))
            _check_size(*img.size)  # from the header: nothing is decoded yet
            img.load()  # decode now, so a truncated file fails here and not in a collator
        if exif_transpose:
            img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except _Refused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        size = str(exc).split(", could be")[0]  # "Image size (N pixels) exceeds limit of M"
        raise _Refused(f"a possible decompression bomb ({size})") from None
    except UnidentifiedImageError:
        raise _Refused("unreadable or corrupt image (not a format this tool reads)") from None
    except Exception as exc:  # hostile data makes Pillow's decoders raise all kinds of errors
        raise _Refused(f"unreadable or corrupt image ({type(exc).__name__}: {exc})") from None


def _formats(registered: dict) -> list[str]:
    """Every format Pillow opens but EPS, whose loader runs Ghostscript on the data."""
    return [name for name in registered if name != "EPS"]


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise _Refused(f"an empty image ({width} x {height})")
    if width * height > MAX_PIXELS:
        raise _Refused(
            f"too large ({width} x {height} = {width * height:,} pixels; at most "
            f"{MAX_PIXELS:,} are decoded)"
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise _Refused(
            f"extreme aspect ratio ({width} x {height}; the long side may be at most "
            f"{MAX_ASPECT} times the short one)"
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in _CONVERTIBLE:
        return img.convert("RGB")
    if img.mode in _SIXTEEN_BIT or img.mode == "I":
        import numpy as np

        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise _Refused(
                f"a 32-bit integer image with values {values.min()}..{values.max()}, outside "
                "the 16-bit range 0..65535 this tool scales to 8 bits; save it as 8-bit"
            )
        grey = (values.astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if img.mode == "F":
        raise _Refused(
            "a 32-bit float image (mode F), whose value range is not defined; save it as 8-bit"
        )
    raise _Refused(f"image mode {img.mode} is not supported; save it as 8-bit RGB")


def require_rgb(image: Image.Image, what: str) -> Image.Image:
    """``image`` itself if it is RGB; else a one-line error naming ``what`` (a sample).

    For collators: a dataset hands over decoded RGB images, so a collator never converts.
    """
    if image.mode != "RGB":
        raise DatasetError(
            f"{what}: the dataset gave a {image.mode} image, not RGB. Its plugin must decode "
            "images with prh_bench.images.decode_image."
        )
    return image
