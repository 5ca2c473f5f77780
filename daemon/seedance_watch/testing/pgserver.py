"""A throwaway PostgreSQL server for the suite and the benchmarks: Debian's binaries on a
temporary folder.

:class:`PostgresServer` runs ``initdb`` and ``pg_ctl`` on a fresh folder, listens on
a free loopback port (and a unix socket in the same folder), trusts local
connections, and is stopped and removed at the end, also after a failure.  As root
it runs them as the ``postgres`` user (``initdb`` refuses root), with the folder
owned by that user.  Durability settings are off: the server is thrown away, and
what the store promises about commits is the server's business, not the test's.

The binaries are found in ``$PG_BINDIR``, ``pg_config --bindir``, the newest
``/usr/lib/postgresql/*/bin``, then ``$PATH`` (``.ci/run`` installs the package).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg

__all__ = ["PostgresServer", "find_bindir"]

_USER = "postgres"


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is missing."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL server on loopback for a test session; :meth:`fresh_database`
    gives each test its own database (``CREATE DATABASE``: tens of milliseconds)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.folder = Path(tempfile.mkdtemp(prefix="seedance-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = 0
        self._names = itertools.count(1)
        self._started = False
        self.timings: dict[str, float] = {}

    # --- running the binaries ---

    def _command(self, *args: str) -> list[str]:
        if self.as_root:
            runuser = shutil.which("runuser")
            if runuser is not None:
                return [runuser, "-u", _USER, "--", *args]
            quoted = " ".join(f"'{a}'" for a in args)
            return ["su", "-s", "/bin/sh", _USER, "-c", quoted]
        return list(args)

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run(
            self._command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            output = done.stderr + done.stdout
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {output}\n{log}")

    def start(self) -> PostgresServer:
        started = time.perf_counter()
        if self.as_root:
            # The postgres user must reach the folder; only it may own the data.
            self.folder.chmod(0o755)
            shutil.chown(self.folder, _USER, _USER)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            _USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        self.timings["initdb"] = time.perf_counter() - started
        self.port = _free_port()
        begun = time.perf_counter()
        self._pg_start()
        self._started = True
        self.timings["start"] = time.perf_counter() - begun
        return self

    def _pg_start(self) -> None:
        """``pg_ctl start`` on the data folder, on :attr:`port`, waiting until it answers."""
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.folder}",
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c synchronous_commit=off",
                "-c max_connections=200",
                "-c shared_buffers=32MB",
            ]
        )
        pg_ctl = str(self.bindir / "pg_ctl")
        self._run(
            pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def pause(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data (``mode``: ``fast``, a clean stop that ends
        every connection; ``immediate``, a crash): the database is out of reach until
        :meth:`resume`."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def resume(self) -> None:
        """Start the stopped server again on the same port (a crash is recovered first)."""
        self._pg_start()

    def stop(self) -> None:
        """Stop the server (fast: the data is thrown away) and remove its folder."""
        try:
            if self._started:
                self._started = False
                begun = time.perf_counter()
                self._run(
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                )
                self.timings["stop"] = time.perf_counter() - begun
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- databases ---

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        """A URL of ``database`` over TCP (the trusting server ignores a password)."""
        user = _USER if password is None else f"{_USER}:{password}"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def fresh_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url`` (connections to it are ended first)."""
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
