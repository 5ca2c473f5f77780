"""The image checks: what every image of a drop must be before it is uploaded.

An image extension whose format the file really has, a size the gateway takes, a
header Pillow identifies and verifies, one full decode, and sides and a ratio
within the models' limits (docs/design.md, "Image checks").  Each failure is an
:class:`~seedance_watch.errors.InvalidImage` naming the numbers involved.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from PIL import Image, UnidentifiedImageError

from seedance_watch.core.names import IMAGE_TYPES
from seedance_watch.errors import InvalidImage

__all__ = ["IMAGE_CONTENT_TYPES", "MAX_IMAGE_BYTES", "PILLOW_FORMATS", "ImageInfo", "check_image"]

MAX_IMAGE_BYTES: Final = 30 * 1024 * 1024
_MIN_SHORT_SIDE: Final = 300  # exclusive
_MAX_LONG_SIDE: Final = 6000  # exclusive
_MIN_RATIO, _MAX_RATIO = 0.4, 2.5  # inclusive

_FORMAT_OF_SUFFIX: Final = {suffix: fmt for suffix, (fmt, _) in IMAGE_TYPES.items()}
IMAGE_CONTENT_TYPES: Final = dict(IMAGE_TYPES.values())
#: Only these decoders are tried, here and for the page's thumbnails: less attack
#: surface, and a clear "not supported".  (The JPEG decoder itself returns "MPO" for
#: the multi-picture JPEGs some cameras write; to everyone else they are JPEGs.)
PILLOW_FORMATS: Final = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")


@dataclass(frozen=True)
class ImageInfo:
    """What the checks learned about an image: canonical format, pixels and bytes."""

    format: str
    width: int
    height: int
    size: int
    content_type: str


def check_image(path: Path) -> ImageInfo:
    """Check an image against the model's limits: its header, then one full decode.

    Raises :class:`InvalidImage` naming the numbers involved.  An ``OSError``
    from the file itself (gone, unreadable) propagates: it is not the image's fault.
    """
    suffix = path.suffix.lower()
    expected = _FORMAT_OF_SUFFIX.get(suffix)
    if expected is None:
        allowed = ", ".join(sorted(_FORMAT_OF_SUFFIX))
        shown = repr(path.suffix) if path.suffix else "no extension"
        raise InvalidImage(f"{shown} is not an image extension; use one of {allowed}")

    with open(path, "rb") as fp:
        # fstat, not stat: the size is that of the very file that is decoded.
        size = os.fstat(fp.fileno()).st_size
        if size == 0:
            raise InvalidImage("the image is empty (0 bytes)")
        if size > MAX_IMAGE_BYTES:
            raise InvalidImage(
                f"the image is {size / 1024 / 1024:.1f} MB ({size} bytes); "
                f"the limit is 30 MB ({MAX_IMAGE_BYTES} bytes)",
                hint="Compress or scale the image below 30 MB.",
            )
        fmt, width, height = _read_header(fp)

    if fmt != expected:
        raise InvalidImage(
            f"the file is a {fmt} image but its extension {path.suffix} means {expected}",
            hint=f"Rename it with the extension of a {fmt} file, or convert it to {expected}.",
        )
    _check_dimensions(width, height)
    _decode(path)
    return ImageInfo(
        format=fmt, width=width, height=height, size=size, content_type=IMAGE_CONTENT_TYPES[fmt]
    )


def _read_header(fp: BinaryIO) -> tuple[str, int, int]:
    """Identify and verify the image, then reopen it for its size (verify spends the file)."""
    try:
        with warnings.catch_warnings():
            # Above Pillow's pixel limit the image breaks the side limits anyway;
            # make the warning an error so the report says so, every time.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp, formats=PILLOW_FORMATS) as im:
                im.verify()
            fp.seek(0)
            with Image.open(fp, formats=PILLOW_FORMATS) as im:
                fmt, (width, height) = im.format or "", im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(
            f"the image is too large to decode ({exc}); "
            f"the longer side must be under {_MAX_LONG_SIDE} px"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(
            "the file is not a readable JPEG, PNG, WebP, BMP, TIFF or GIF image"
        ) from exc
    except OSError as exc:  # Pillow's word for "truncated" or "broken"
        raise InvalidImage(f"the image cannot be decoded: {exc}") from exc
    except Exception as exc:  # crafted files make decoders raise anything
        raise InvalidImage(f"the image cannot be decoded: {type(exc).__name__}: {exc}") from exc
    return ("JPEG" if fmt == "MPO" else fmt), width, height


def _decode(path: Path) -> None:
    """Decode the pixels once: a truncated JPEG passes ``verify()`` (which reads only
    its structure) but would be uploaded, submitted and billed as a broken image."""
    try:
        with Image.open(path, formats=PILLOW_FORMATS) as im:
            im.load()
    except OSError as exc:  # "image file is truncated", "broken data stream"
        raise InvalidImage(
            f"the image cannot be decoded: {exc}",
            hint="The file looks cut short (an interrupted copy?); drop it again.",
        ) from exc
    except Exception as exc:  # crafted files make decoders raise anything
        raise InvalidImage(f"the image cannot be decoded: {type(exc).__name__}: {exc}") from exc


def _check_dimensions(width: int, height: int) -> None:
    shorter, longer = min(width, height), max(width, height)
    if shorter <= _MIN_SHORT_SIDE:
        raise InvalidImage(
            f"image is {width}x{height} px: the shorter side must be over {_MIN_SHORT_SIDE} px",
            hint="Use a larger image or upscale it.",
        )
    if longer >= _MAX_LONG_SIDE:
        raise InvalidImage(
            f"image is {width}x{height} px: the longer side must be under {_MAX_LONG_SIDE} px",
            hint="Scale the image down.",
        )
    # Integer arithmetic: 0.4 and 2.5 are inclusive bounds, exactly.
    if 5 * width < 2 * height or 2 * width > 5 * height:
        ratio = width / height
        shown = f"{ratio:.2f}"
        if _MIN_RATIO <= float(shown) <= _MAX_RATIO:  # rounding must not hide the excess
            shown = f"{ratio:.6g}"
        raise InvalidImage(
            f"aspect ratio {shown} (width/height {width}x{height}) is outside "
            f"{_MIN_RATIO} to {_MAX_RATIO}",
            hint="Crop the image to a ratio between 2:5 and 5:2.",
        )
