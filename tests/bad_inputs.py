"""Shared test helpers (moved from test_inputs.py)."""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .helpers import make_image_bytes

GOOD_JPEG = make_image_bytes(640, 480)


OLD = time.time() - 3600  # an mtime far beyond any pair_timeout


def solid(width: int, height: int, fmt: str = "PNG") -> bytes:
    """A cheap decodable image of any size (one colour compresses to almost nothing)."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 60)).save(buf, format=fmt)
    return buf.getvalue()


@dataclass(frozen=True)
class Bad:
    """One bad drop: ``files`` maps inbox names to bytes (``None``: a link out of the inbox)."""

    id: str
    files: dict[str, bytes | None]
    code: str
    needles: tuple[str, ...]
    old: bool = False  # give the files an old mtime (orphans fail at once)
    #: Where the inputs and reports land in failed/ when not simply under their own names.
    landed: tuple[str, ...] = ()

    @property
    def reports(self) -> tuple[str, ...]:
        """The error reports of this drop, relative to failed/."""
        if self.landed:
            return tuple(n for n in self.landed if n.endswith(".error.json"))
        return (Path(next(iter(self.files))).stem + ".error.json",)

    @property
    def moved(self) -> tuple[str, ...]:
        return tuple(n for n in self.landed if not n.endswith(".error.json")) or tuple(self.files)


def sidecar_case(id: str, text: str, *needles: str) -> Bad:
    return Bad(
        id, {f"{id}.jpg": GOOD_JPEG, f"{id}.yaml": text.encode()}, "invalid_sidecar", needles
    )


def image_case(id: str, ext: str, data: bytes, *needles: str) -> Bad:
    files = {f"{id}{ext}": data, f"{id}.yaml": b'prompt: "fine words"\n'}
    return Bad(id, files, "invalid_image", needles)


OVER_30_MB = GOOD_JPEG + bytes(30 * 1024 * 1024 + 1 - len(GOOD_JPEG))


BAD_INPUTS = [
    sidecar_case(
        "yaml-syntax", 'prompt: "never closed\nratio: 16:9\n', "YAML syntax error at line"
    ),
    sidecar_case("yaml-list", "- prompt: a\n- prompt: b\n", "mapping", "a list"),
    sidecar_case("no-prompt", "ratio: 16:9\n", "prompt"),
    sidecar_case("empty-prompt", 'prompt: "  "\n', "prompt", "non-empty"),
    sidecar_case("typo-key", "prompt: x\nresolutoin: 720p\n", "resolutoin", "'resolution'"),
    # A typo past the first MiB was cut off unseen (issue 21, item 5).
    sidecar_case(
        "over-a-mib",
        "prompt: x\n" + "#" * (1 << 20) + "\nresolutoin: 1080p\n",
        "1048576 bytes (1 MiB), the limit",
    ),
    sidecar_case("quoted-int", 'prompt: x\nduration: "5"\n', "duration", "'5'", "integer"),
    sidecar_case(
        "yes-bool", "prompt: x\ncamerafixed: yes\n", "camerafixed", "yes", "true or false"
    ),
    sidecar_case("duration-30", "prompt: x\nduration: 30\n", "duration", "30", "2 to 15"),
    sidecar_case("seed-big", "prompt: x\nseed: 4294967296\n", "seed", "4294967296", "4294967295"),
    sidecar_case("res-4k", "prompt: x\nresolution: 4k\n", "resolution", "4k", "1080p"),
    sidecar_case("cmd-in-prompt", 'prompt: "waves --ratio 16:9"\n', "--ratio", "ratio:"),
    sidecar_case("odd-model", "prompt: x\nmodel: seedance-9-ultra\n", "model", "seedance-9-ultra"),
    image_case("text-as-jpg", ".jpg", b"hello, this is not an image\n", "not a readable"),
    image_case("zero-bytes", ".png", b"", "0 bytes"),
    image_case("png-as-jpg", ".jpg", solid(640, 480), "PNG", ".jpg"),
    image_case("huge-file", ".jpg", OVER_30_MB, "30 MB", str(len(OVER_30_MB))),
    image_case("tiny", ".png", solid(200, 320), "200x320", "300 px"),
    image_case("too-wide", ".png", solid(1500, 500), "3.00", "1500x500"),
    image_case("too-long", ".png", solid(6000, 3000), "6000x3000", "6000 px"),
    Bad(
        "lonely-image",
        {"lonely-image.jpg": GOOD_JPEG},
        "missing_sidecar",
        ("lonely-image.jpg",),
        old=True,
    ),
    Bad(
        "lonely-side",
        {"lonely-side.yaml": b"prompt: x\n"},
        "missing_image",
        ("lonely-side.yaml",),
        old=True,
    ),
    Bad(
        "two-spellings",
        {"two-spellings.jpg": GOOD_JPEG, "two-spellings.yaml": b"a: 1\n", "two-spellings.yml": b""},
        "ambiguous_pair",
        ("two-spellings.yaml", "two-spellings.yml"),
        # A job holds two inputs: the third file fails as a second job, with the next suffix.
        landed=(
            "two-spellings.jpg",
            "two-spellings.yaml",
            "two-spellings.error.json",
            "two-spellings-2.yml",
            "two-spellings-2.error.json",
        ),
    ),
    Bad("escape", {"escape.jpg": None}, "unsafe_path", ("escape.jpg", "symbolic link")),
]


def drop_bad_inputs(inbox: Path, outside: Path) -> bytes:
    """Write every bad input into ``inbox``; returns the bytes of the symlink's target."""
    secret = outside / "secret.jpg"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(GOOD_JPEG)
    for case in BAD_INPUTS:
        for name, data in case.files.items():
            path = inbox / name
            if data is None:
                path.symlink_to(secret)
                continue
            path.write_bytes(data)
            if case.old:
                os.utime(path, (OLD, OLD))
    return secret.read_bytes()
