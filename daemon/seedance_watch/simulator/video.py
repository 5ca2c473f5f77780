"""A real, playable H.264 mp4 made from the submitted image (PyAV, libx264).

PyAV comes with the ``demo`` extra; it is imported only when a video is made,
so ``import seedance_watch.simulator`` works on a core install.  The clip is a
slow zoom into the image, so every frame differs (a player, or a test, can
tell it is video and not one still).
"""

from __future__ import annotations

import io

from PIL import Image

__all__ = ["fit_even", "make_video"]

# The zoom at the last frame: 1.0 shows the whole image, 1.15 its central 87 %.
_END_ZOOM = 1.15


def fit_even(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``width`` x ``height`` scaled down so the longer side is at most ``max_side``.

    Never scaled up; both sides rounded down to even numbers (yuv420p needs them).
    """
    scale = min(1.0, max_side / max(width, height))
    w = max(2, int(width * scale) // 2 * 2)
    h = max(2, int(height * scale) // 2 * 2)
    return w, h


def make_video(image: bytes, *, max_side: int = 256, fps: int = 8, seconds: float = 1.0) -> bytes:
    """Encode ``image`` (any format Pillow reads) as an mp4 of ``seconds`` at ``fps``.

    Raises ``ValueError`` if the image cannot be decoded.  CPU-bound: run it in a thread.
    """
    import av

    try:
        with Image.open(io.BytesIO(image)) as opened:
            source = opened.convert("RGB")
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode image: {exc}") from exc
    width, height = fit_even(source.width, source.height, max_side)
    frames = max(2, round(fps * seconds))
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for index in range(frames):
            zoom = 1.0 + (_END_ZOOM - 1.0) * index / (frames - 1)
            crop_w, crop_h = source.width / zoom, source.height / zoom
            left, top = (source.width - crop_w) / 2, (source.height - crop_h) / 2
            picture = source.resize(
                (width, height),
                Image.Resampling.BILINEAR,
                box=(left, top, left + crop_w, top + crop_h),
            )
            frame = av.VideoFrame.from_image(picture)  # type: ignore[no-untyped-call]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()
