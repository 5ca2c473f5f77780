"""The image checks: what every image of a drop must be before it is uploaded.

An image extension whose format the file really has, a size the gateway takes, a
header Pillow identifies and verifies, one full decode, and sides and a ratio
within the models' limits (docs/design.md, "Image checks").  Each failure is an
:class:`~seedance_watch.errors.InvalidImage` naming the numbers involved.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Final

from PIL import Image, UnidentifiedImageError

from seedance_watch.core.names import IMAGE_TYPES
from seedance_watch.errors import InvalidImage

__all__ = [
    "IMAGE_CONTENT_TYPES",
    "MAX_IMAGE_BYTES",
    "PILLOW_FORMATS",
    "ImageInfo",
    "check_image",
    "check_image_bytes",
    "image_too_large",
]

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


def image_too_large(size: int) -> InvalidImage | None:
    """The refusal of an image of ``size`` bytes over the limit (None within it): asked
    of ``fstat`` before a byte is read, so a huge sparse file costs nothing."""
    if size <= MAX_IMAGE_BYTES:
        return None
    return InvalidImage(
        f"the image is {size / 1024 / 1024:.1f} MB ({size} bytes); "
        f"the limit is 30 MB ({MAX_IMAGE_BYTES} bytes)",
        hint="Compress or scale the image below 30 MB.",
    )


def check_image(path: Path) -> ImageInfo:
    """:func:`check_image_bytes` of the file at ``path`` (``validate``'s way in).

    The file is opened without blocking (a FIFO is refused, never waited on), its
    size is checked with ``fstat`` before it is read, and the bytes read are the
    ones checked.  An ``OSError`` from the file itself (gone, unreadable)
    propagates: it is not the image's fault.
    """
    _check_suffix(path.name)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fp:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidImage("the file is not a regular file (a FIFO, a device or a folder)")
        too_large = image_too_large(st.st_size)
        if too_large is not None:
            raise too_large
        os.set_blocking(fd, True)
        data = fp.read(MAX_IMAGE_BYTES + 1)
    return check_image_bytes(path.name, data)


def check_image_bytes(name: str, data: bytes) -> ImageInfo:
    """Check the image ``data`` (the bytes of the file ``name``) against the model's
    limits: the extension, the size, the header, then one full decode.

    Intake passes the very bytes it hashed, so what is checked is what is uploaded
    (the upload sends only bytes of that hash).  Raises :class:`InvalidImage` naming
    the numbers involved.
    """
    suffix = PurePosixPath(name).suffix
    expected = _check_suffix(name)
    size = len(data)
    if size == 0:
        raise InvalidImage("the image is empty (0 bytes)")
    too_large = image_too_large(size)
    if too_large is not None:
        raise too_large
    fmt, width, height = _read_header(io.BytesIO(data))
    if fmt != expected:
        raise InvalidImage(
            f"the file is a {fmt} image but its extension {suffix} means {expected}",
            hint=f"Rename it with the extension of a {fmt} file, or convert it to {expected}.",
        )
    _check_dimensions(width, height)
    _decode(data)
    return ImageInfo(
        format=fmt, width=width, height=height, size=size, content_type=IMAGE_CONTENT_TYPES[fmt]
    )


def _check_suffix(name: str) -> str:
    """The Pillow format an image's extension promises, or InvalidImage."""
    suffix = PurePosixPath(name).suffix
    expected = _FORMAT_OF_SUFFIX.get(suffix.lower())
    if expected is None:
        allowed = ", ".join(sorted(_FORMAT_OF_SUFFIX))
        shown = repr(suffix) if suffix else "no extension"
        raise InvalidImage(f"{shown} is not an image extension; use one of {allowed}")
    return expected


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


def _decode(data: bytes) -> None:
    """Decode the pixels once: a truncated JPEG passes ``verify()`` (which reads only
    its structure) but would be uploaded, submitted and billed as a broken image."""
    try:
        with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as im:
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
