"""Real, playable H.264 mp4s for the four kinds of task (PyAV, libx264).

PyAV comes with the ``demo`` extra; it is imported only when a video is made,
so ``import seedance_watch.simulator`` works on a core install.  Every frame
of a clip differs (a player, or a test, can tell it is video and not a still):

- image: a slow zoom into the submitted image;
- frames: a cross-fade from the first frame to the last, which ends exactly on it;
- text: a slow zoom into a picture drawn from a hash of the prompt (a gradient
  and a few shapes), so one prompt always gives the same picture;
- reference: cross-fades that visit the reference images in order (one image:
  the zoom of an image task).

A clip of ``seconds`` at ``fps`` has ``round(seconds * fps)`` frames (at least
two), so its container duration is exactly ``seconds`` whenever that is a
whole number of frames (every whole second is).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

from PIL import Image, ImageDraw

__all__ = [
    "fit_even",
    "make_frames_video",
    "make_reference_video",
    "make_text_video",
    "make_video",
    "ratio_size",
    "text_picture",
]

# The zoom at the last frame: 1.0 shows the whole image, 1.15 its central 87 %.
_END_ZOOM = 1.15
# Width:height of each --ratio for a text task ("adaptive" has no image to adapt to).
_RATIOS = {
    "16:9": (16, 9),
    "4:3": (4, 3),
    "1:1": (1, 1),
    "3:4": (3, 4),
    "9:16": (9, 16),
    "21:9": (21, 9),
    "adaptive": (16, 9),
}


def fit_even(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``width`` x ``height`` scaled down so the longer side is at most ``max_side``.

    Never scaled up; both sides rounded down to even numbers (yuv420p needs them).
    """
    scale = min(1.0, max_side / max(width, height))
    w = max(2, int(width * scale) // 2 * 2)
    h = max(2, int(height * scale) // 2 * 2)
    return w, h


def ratio_size(ratio: str, long_side: int = 1280) -> tuple[int, int]:
    """The picture size of a text task with ``--ratio ratio`` (unknown ratios: 16:9)."""
    rw, rh = _RATIOS.get(ratio, (16, 9))
    if rw >= rh:
        return long_side, max(2, long_side * rh // rw)
    return max(2, long_side * rw // rh), long_side


def make_video(image: bytes, *, max_side: int = 256, fps: int = 8, seconds: float = 1.0) -> bytes:
    """Encode ``image`` (any format Pillow reads) as a zooming mp4 of ``seconds`` at ``fps``.

    Raises ``ValueError`` if the image cannot be decoded.  CPU-bound: run it in a thread.
    """
    return _zoom_clip(_decode(image), max_side=max_side, fps=fps, seconds=seconds)


def make_frames_video(
    first: bytes, last: bytes, *, max_side: int = 256, fps: int = 8, seconds: float = 1.0
) -> bytes:
    """A cross-fade from ``first`` to ``last``: frame 0 is ``first``, the last frame ``last``.

    The clip takes ``first``'s proportions; ``last`` is stretched to them.  Raises
    ``ValueError`` if either image cannot be decoded.  CPU-bound: run it in a thread.
    """
    start, end = _decode(first), _decode(last)
    width, height = fit_even(start.width, start.height, max_side)
    start = start.resize((width, height), Image.Resampling.BILINEAR)
    end = end.resize((width, height), Image.Resampling.BILINEAR)
    count = _frame_count(fps, seconds)
    pictures = (Image.blend(start, end, index / (count - 1)) for index in range(count))
    return _encode(pictures, width, height, fps)


def make_reference_video(
    images: list[bytes], *, max_side: int = 256, fps: int = 8, seconds: float = 1.0
) -> bytes:
    """A clip that visits ``images`` in order: frame 0 is the first, the last frame the
    last, with cross-fades between neighbours (one image: a zoom, as ``make_video``).

    The clip takes the first image's proportions.  Raises ``ValueError`` if an image
    cannot be decoded or none is given.  CPU-bound: run it in a thread.
    """
    if not images:
        raise ValueError("a reference video needs at least one image")
    if len(images) == 1:
        return make_video(images[0], max_side=max_side, fps=fps, seconds=seconds)
    first = _decode(images[0])
    width, height = fit_even(first.width, first.height, max_side)
    stills = [
        picture.resize((width, height), Image.Resampling.BILINEAR)
        for picture in (first, *(_decode(image) for image in images[1:]))
    ]
    count = _frame_count(fps, seconds)
    gaps = len(stills) - 1

    def pictures() -> Iterator[Image.Image]:
        for index in range(count):
            position = index * gaps / (count - 1)
            gap = min(int(position), gaps - 1)
            yield Image.blend(stills[gap], stills[gap + 1], position - gap)

    return _encode(pictures(), width, height, fps)


def make_text_video(
    prompt: str, ratio: str, *, max_side: int = 256, fps: int = 8, seconds: float = 1.0
) -> bytes:
    """A zooming mp4 of ``text_picture(prompt, ...)`` in the proportions of ``ratio``."""
    width, height = fit_even(*ratio_size(ratio), max_side)
    return _zoom_clip(
        text_picture(prompt, width, height), max_side=max_side, fps=fps, seconds=seconds
    )


def text_picture(prompt: str, width: int, height: int) -> Image.Image:
    """A picture derived from ``prompt`` alone: a diagonal gradient and a few shapes."""
    digest = hashlib.sha256(prompt.encode()).digest()
    top, bottom = tuple(digest[0:3]), tuple(digest[3:6])
    # A vertical gradient from `top` to `bottom`, one line at a time.
    picture = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(picture)
    for y in range(height):
        t = y / max(1, height - 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(0, y), (width, y)], fill=colour)
    for index in range(4):
        chunk = digest[6 + index * 6 : 12 + index * 6]
        x0, y0 = chunk[0] * width // 256, chunk[1] * height // 256
        size = max(4, (32 + chunk[2] % 96) * min(width, height) // 256)
        box = (x0, y0, x0 + size, y0 + size)
        fill = (chunk[3], chunk[4], chunk[5])
        if chunk[2] % 2:
            draw.ellipse(box, fill=fill)
        else:
            draw.rectangle(box, fill=fill)
    return picture


def _decode(image: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(image)) as opened:
            return opened.convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode image: {exc}") from exc


def _frame_count(fps: int, seconds: float) -> int:
    return max(2, round(fps * seconds))


def _zoom_clip(source: Image.Image, *, max_side: int, fps: int, seconds: float) -> bytes:
    width, height = fit_even(source.width, source.height, max_side)
    count = _frame_count(fps, seconds)

    def pictures() -> Iterator[Image.Image]:
        for index in range(count):
            zoom = 1.0 + (_END_ZOOM - 1.0) * index / (count - 1)
            crop_w, crop_h = source.width / zoom, source.height / zoom
            left, top = (source.width - crop_w) / 2, (source.height - crop_h) / 2
            yield source.resize(
                (width, height),
                Image.Resampling.BILINEAR,
                box=(left, top, left + crop_w, top + crop_h),
            )

    return _encode(pictures(), width, height, fps)


def _encode(pictures: Iterator[Image.Image], width: int, height: int, fps: int) -> bytes:
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for picture in pictures:
            frame = av.VideoFrame.from_image(picture)  # type: ignore[no-untyped-call]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()
