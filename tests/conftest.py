"""Shared fixtures: a real S3 emulator and a real PostgreSQL server on loopback, sample
images; Hypothesis profiles."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from PIL import Image

from seedance_watch.testing.s3emulator import EMULATOR_CREDENTIALS, S3Emulator

from .pgserver import PostgresServer, find_bindir

BUCKET = "test-bucket"

# The suite is deterministic by default, in CI and in a fresh clone alike: every
# property test draws the same examples on every run (derandomize) and no example
# database from an earlier run changes what is tried.  To hunt for new failures,
# run with HYPOTHESIS_PROFILE=explore (random examples, the local database).
settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Emulator]:
    """moto's server on a free loopback port, with the ``test-bucket`` bucket."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in EMULATOR_CREDENTIALS.items():
            mp.setenv(key, value)
        with S3Emulator(BUCKET) as emulator:
            yield emulator


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (Debian's package), stopped at the end.

    Missing binaries fail the test in CI (``.ci/run`` installs them) and skip it
    elsewhere, naming the package.
    """
    bindir = find_bindir()
    if bindir is None:
        message = (
            "PostgreSQL's server binaries (initdb, pg_ctl) are missing: install Debian's "
            "postgresql package (.ci/run does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with PostgresServer(bindir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database of the session's server, dropped after the test."""
    url = postgres_server.fresh_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator's placeholder credentials in boto3's standard chain."""
    for key, value in EMULATOR_CREDENTIALS.items():
        monkeypatch.setenv(key, value)


def make_image_bytes(
    width: int = 640,
    height: int = 480,
    fmt: str = "JPEG",
    color: tuple[int, int, int] = (40, 120, 200),
) -> bytes:
    """A decodable image with a gradient (so encoders have something to chew on)."""
    img = Image.new("RGB", (width, height), color)
    for x in range(0, width, 8):
        for y in range(0, height, 8):
            img.putpixel((x, y), ((x * 255) // width, (y * 255) // height, 128))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def write_pair() -> object:
    """``write_pair(folder, "beach", prompt=..., **options)`` writes beach.jpg + beach.yaml."""

    def _write(
        folder: Path,
        stem: str,
        *,
        ext: str = ".jpg",
        fmt: str = "JPEG",
        sidecar: str | None = None,
        size: tuple[int, int] = (640, 480),
    ) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        image = folder / f"{stem}{ext}"
        image.write_bytes(make_image_bytes(*size, fmt=fmt))
        side = folder / f"{stem}.yaml"
        side.write_text(sidecar if sidecar is not None else f'prompt: "A calm scene: {stem}"\n')
        return image, side

    return _write
