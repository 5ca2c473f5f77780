"""File-name rules of the inbox, shared by the watcher and ``validate``.

An input is an image ``NAME.EXT`` plus its sidecar ``NAME.yaml`` (or ``.yml``) in
the same folder.  Temporary and hidden names are ignored until renamed.
"""

from __future__ import annotations

from pathlib import PurePath, PurePosixPath

__all__ = [
    "IMAGE_SUFFIXES",
    "IMAGE_TYPES",
    "SIDECAR_SUFFIXES",
    "content_type",
    "is_ignored",
    "is_image",
    "is_sidecar",
    "object_name",
    "pair_stem",
    "split_source",
]

#: The one table of accepted images: suffix → (Pillow format, Content-Type).
IMAGE_TYPES: dict[str, tuple[str, str]] = {
    ".jpg": ("JPEG", "image/jpeg"),
    ".jpeg": ("JPEG", "image/jpeg"),
    ".png": ("PNG", "image/png"),
    ".webp": ("WEBP", "image/webp"),
    ".bmp": ("BMP", "image/bmp"),
    ".tif": ("TIFF", "image/tiff"),
    ".tiff": ("TIFF", "image/tiff"),
    ".gif": ("GIF", "image/gif"),
}
IMAGE_SUFFIXES = frozenset(IMAGE_TYPES)
SIDECAR_SUFFIXES = frozenset({".yaml", ".yml"})
IGNORED_ENDINGS = (".part", ".tmp", ".crdownload", ".partial", ".swp")


def is_ignored(name: str) -> bool:
    """Hidden, editor and partial-download names (matched case-insensitively)."""
    return name.startswith((".", "~")) or name.lower().endswith(IGNORED_ENDINGS)


def content_type(name: str) -> str:
    """The Content-Type of an image by its (checked) suffix."""
    entry = IMAGE_TYPES.get(PurePath(name).suffix.lower())
    return entry[1] if entry else "application/octet-stream"


def is_image(name: str) -> bool:
    return not is_ignored(name) and PurePath(name).suffix.lower() in IMAGE_SUFFIXES


def is_sidecar(name: str) -> bool:
    return not is_ignored(name) and PurePath(name).suffix.lower() in SIDECAR_SUFFIXES


def pair_stem(rel_path: str) -> str:
    """The pairing key of an inbox-relative POSIX path: ``sub/beach.JPG`` → ``sub/beach``."""
    path = PurePath(rel_path)
    return str(path.with_suffix("")) if path.suffix else rel_path


def split_source(rel_path: str) -> tuple[str, str]:
    """``sub/dir/beach.jpg`` → (``sub/dir``, ``beach``); the subdir is ``""`` at the top."""
    path = PurePosixPath(rel_path)
    parent = str(path.parent)
    return ("" if parent == "." else parent), path.stem


def object_name(role: str, file_name: str, number: int = 1) -> str:
    """The name of a job's image in its folder of the bucket: fixed and safe, the
    image's suffix kept (lower case) for whoever reads the type from the key:
    ``image.jpg``, ``last_frame.png``, ``reference-2.webp`` (``number``: the
    reference's place in the sidecar's list, from 1).  Never the file's own name,
    which may hold anything a file system allows (docs/design.md, "Storage")."""
    suffix = PurePath(file_name).suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        suffix = ""
    return f"{role}-{number}{suffix}" if role == "reference" else f"{role}{suffix}"
