"""Image checks before upload: format, bytes, sides and aspect ratio (docs/design.md, "The
sidecar")."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from seedance_watch.errors import InvalidImage
from seedance_watch.files.images import MAX_IMAGE_BYTES, ImageInfo, check_image


def _image(path: Path, size: tuple[int, int], fmt: str, mode: str = "RGB") -> Path:
    """Write a real image of ``size`` in ``fmt`` at ``path``."""
    Image.new(mode, size, 0 if mode == "1" else (30, 90, 160)).save(path, format=fmt)
    return path


def _png_header(width: int, height: int) -> bytes:
    """A PNG with only a signature, IHDR and IEND: Pillow reads its size, nothing to decode."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("suffix", "fmt", "content_type"),
    [
        (".jpg", "JPEG", "image/jpeg"),
        (".jpeg", "JPEG", "image/jpeg"),
        (".JPG", "JPEG", "image/jpeg"),
        (".png", "PNG", "image/png"),
        (".webp", "WEBP", "image/webp"),
        (".bmp", "BMP", "image/bmp"),
        (".tif", "TIFF", "image/tiff"),
        (".TIFF", "TIFF", "image/tiff"),
        (".gif", "GIF", "image/gif"),
    ],
)
def test_each_supported_format_is_accepted(
    tmp_path: Path, suffix: str, fmt: str, content_type: str
) -> None:
    """A valid image in each format passes and reports format, pixels, bytes and MIME type."""
    path = _image(tmp_path / f"pic{suffix}", (640, 480), fmt)
    assert check_image(path) == ImageInfo(
        format=fmt,
        width=640,
        height=480,
        size=path.stat().st_size,
        content_type=content_type,
    )


def test_empty_file_is_refused(tmp_path: Path) -> None:
    """A zero-byte image is refused as empty."""
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(InvalidImage, match=r"^the image is empty \(0 bytes\)$") as info:
        check_image(path)
    assert info.value.code == "invalid_image"


def test_file_over_30_mb_is_refused_before_decoding(tmp_path: Path) -> None:
    """An image over 30 MB is refused with its size and the limit, without decoding it."""
    path = tmp_path / "huge.png"
    with path.open("wb") as fp:
        fp.write(_png_header(640, 480))
        fp.truncate(31 * 1024 * 1024)  # sparse: cheap to make
    with pytest.raises(InvalidImage) as info:
        check_image(path)
    assert "31.0 MB (32505856 bytes)" in info.value.message
    assert f"the limit is 30 MB ({MAX_IMAGE_BYTES} bytes)" in info.value.message


def test_file_of_exactly_30_mb_passes_the_size_check(tmp_path: Path) -> None:
    """30 MB is allowed: the file goes on to be decoded (and fails there, as garbage)."""
    path = tmp_path / "limit.png"
    with path.open("wb") as fp:
        fp.truncate(MAX_IMAGE_BYTES)
    with pytest.raises(InvalidImage, match="not a readable"):
        check_image(path)


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    """A file that no decoder recognises is refused as unreadable."""
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(InvalidImage, match="not a readable JPEG, PNG, WebP, BMP, TIFF or GIF"):
        check_image(path)


def test_truncated_png_is_refused(tmp_path: Path) -> None:
    """A PNG cut short (an interrupted copy) fails verification."""
    buf = io.BytesIO()
    Image.effect_noise((640, 480), 64).save(buf, format="PNG")
    data = buf.getvalue()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidImage, match="cannot be decoded"):
        check_image(path)


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    """A JPEG cut short (an interrupted copy) passes a header check but not the decode:
    it is refused rather than uploaded and billed."""
    image = Image.effect_noise((800, 600), 60).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    with pytest.raises(InvalidImage, match="truncated"):
        check_image(path)


def test_unsupported_format_is_refused(tmp_path: Path) -> None:
    """A decodable image of a format the model does not take (PPM) is refused."""
    path = _image(tmp_path / "pic.png", (640, 480), "PPM")
    with pytest.raises(InvalidImage, match="not a readable"):
        check_image(path)


def test_jpeg_named_png_is_refused_naming_both(tmp_path: Path) -> None:
    """A JPEG saved as .png is refused; the message names the real and the expected format."""
    path = _image(tmp_path / "photo.png", (640, 480), "JPEG")
    with pytest.raises(InvalidImage) as info:
        check_image(path)
    assert info.value.message == "the file is a JPEG image but its extension .png means PNG"


def test_unknown_extension_is_refused(tmp_path: Path) -> None:
    """A file whose extension is not an image extension is refused, listing the allowed ones."""
    path = _image(tmp_path / "pic.heic", (640, 480), "JPEG")
    with pytest.raises(
        InvalidImage, match=r"'\.heic' is not an image extension; use one of .*\.jpg"
    ):
        check_image(path)


def test_missing_file_raises_os_error(tmp_path: Path) -> None:
    """A vanished file is an OSError for the caller, not an invalid image."""
    with pytest.raises(FileNotFoundError):
        check_image(tmp_path / "gone.jpg")


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((200, 900), "image is 200x900 px: the shorter side must be over 300 px"),
        ((640, 300), "image is 640x300 px: the shorter side must be over 300 px"),
        ((6000, 2400), "image is 6000x2400 px: the longer side must be under 6000 px"),
        ((2400, 6000), "image is 2400x6000 px: the longer side must be under 6000 px"),
        ((1860, 600), "aspect ratio 3.10 (width/height 1860x600) is outside 0.4 to 2.5"),
        ((400, 1001), "aspect ratio 0.3996 (width/height 400x1001) is outside 0.4 to 2.5"),
        ((1001, 400), "aspect ratio 2.5025 (width/height 1001x400) is outside 0.4 to 2.5"),
    ],
)
def test_dimensions_outside_limits_are_refused(
    tmp_path: Path, size: tuple[int, int], message: str
) -> None:
    """Sides and aspect ratio outside the model's limits are refused with the numbers."""
    path = _image(tmp_path / "pic.png", size, "PNG", mode="1")
    with pytest.raises(InvalidImage) as info:
        check_image(path)
    assert info.value.message == message


@pytest.mark.parametrize("size", [(301, 301), (1000, 400), (400, 1000), (5999, 2400)])
def test_dimensions_at_the_limits_pass(tmp_path: Path, size: tuple[int, int]) -> None:
    """301 px, 5999 px and ratios of exactly 0.4 and 2.5 are inside the limits."""
    path = _image(tmp_path / "pic.png", size, "PNG", mode="1")
    assert (check_image(path).width, check_image(path).height) == size


@pytest.mark.parametrize("side", [10000, 15000])
def test_decompression_bomb_is_refused_not_warned(tmp_path: Path, side: int) -> None:
    """Pillow's bomb warning (and error) become InvalidImage about the size, no warning leaks."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(side, side))
    with pytest.raises(InvalidImage, match=r"too large to decode.*under 6000 px"):
        check_image(path)


def test_multi_picture_jpeg_counts_as_jpeg(tmp_path: Path) -> None:
    """A multi-picture JPEG (Pillow says MPO) is a JPEG for the checks and the MIME type."""
    first, second = Image.new("RGB", (640, 480)), Image.new("RGB", (640, 480), (9, 9, 9))
    path = tmp_path / "stereo.jpg"
    first.save(path, format="MPO", save_all=True, append_images=[second])
    with Image.open(path) as im:
        assert im.format == "MPO"
    info = check_image(path)
    assert (info.format, info.content_type) == ("JPEG", "image/jpeg")


def test_decompression_bomb_warning_never_reaches_the_warnings_system(tmp_path: Path) -> None:
    """Even where warnings are only recorded (production), the bomb check emits none."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(10000, 10000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InvalidImage, match="too large to decode"):
            check_image(path)
    assert caught == []
