"""``seedance-watch check``: what ``run`` checks before it is ready, without running.

* the five folders exist and are folders the daemon can write (one that ``run``
  would have to create is a warning naming the key: often a typo);
* the bucket exists and takes a write and a delete of a probe object (the
  credentials work);
* the gateway accepts the API key, asked with a call that costs nothing where the
  provider offers one (where it does not, the report says so plainly);
* on a shared store (``cluster.database``), the database answers, runs PostgreSQL 13
  or newer and holds no schema newer than this version knows.

Exit codes are ``run``'s (docs/design.md, "Exit codes"): 0 all good (warnings
allowed), 1 the bucket or the database refuses us or cannot be reached, 2 a config or
folder problem, 3 the gateway refused the key.  Nothing is created, uploaded or paid.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from seedance_watch import errors as E
from seedance_watch.config import Config, PathsConfig
from seedance_watch.files.storage import Storage
from seedance_watch.ledger import probe_database
from seedance_watch.providers.keys import load_api_key
from seedance_watch.providers.registry import provider_spec

__all__ = ["CheckReport", "Finding", "folder_findings", "run_checks"]

Level = Literal["ok", "warning", "error"]

EXIT_OK, EXIT_STORAGE, EXIT_USAGE, EXIT_CREDENTIALS = 0, 1, 2, 3


@dataclass(frozen=True)
class Finding:
    """One thing checked: how it went, in a sentence, and the config key it is about."""

    level: Level
    message: str
    key: str | None = None
    path: Path | None = None
    exit_code: int = EXIT_OK


@dataclass
class CheckReport:
    findings: list[Finding]

    @property
    def exit_code(self) -> int:
        """The worst problem's exit code (a refused key beats the bucket beats config)."""
        codes = {f.exit_code for f in self.findings if f.level == "error"}
        for code in (EXIT_CREDENTIALS, EXIT_USAGE, EXIT_STORAGE):
            if code in codes:
                return code
        return EXIT_OK

    def text(self) -> str:
        return "\n".join(f"{f.level}: {f.message}" for f in self.findings)


def folder_findings(paths: PathsConfig) -> list[Finding]:
    """Each configured folder: fine, missing (``run`` creates it: a warning), or unusable."""
    out: list[Finding] = []
    for key in ("inbox", "outbox", "done", "failed", "state"):
        path: Path = getattr(paths, key)
        name = f"paths.{key}"
        if not path.exists() and not path.is_symlink():
            out.append(
                Finding(
                    "warning",
                    f"{name} {path} does not exist; run creates it (is the path right?)",
                    name,
                    path,
                )
            )
        elif not path.is_dir():
            out.append(Finding("error", f"{name} {path} is not a folder", name, path, EXIT_USAGE))
        elif not os.access(path, os.W_OK | os.X_OK):
            message = f"{name} {path} is a folder this user ({os.getuid()}) cannot write"
            out.append(Finding("error", message, name, path, EXIT_USAGE))
        else:
            out.append(Finding("ok", f"{name} {path}", name, path))
    return out


class _Bucket(Protocol):
    def probe(self) -> str: ...

    def close(self) -> None: ...


def _storage_findings(bucket: _Bucket, where: str) -> list[Finding]:
    try:
        bucket.probe()
    except E.StorageUnavailable as exc:
        return [Finding("error", exc.message, "storage.bucket", exit_code=EXIT_STORAGE)]
    except E.StorageTransient as exc:
        message = f"the bucket cannot be reached: {exc.message}"
        return [Finding("error", message, "storage.endpoint_url", exit_code=EXIT_STORAGE)]
    finally:
        bucket.close()
    return [Finding("ok", f"{where} takes a write and a delete", "storage.bucket")]


async def _key_findings(config: Config, environ: Mapping[str, str]) -> list[Finding]:
    spec = provider_spec(config.gateway.provider)
    key = load_api_key(environ, spec.keys)
    gw = config.gateway
    provider = spec.make(
        gw.base_url,
        key,
        request_timeout=gw.request_timeout,
        max_connections=2,
        on_response=None,
        downloader=None,
    )
    try:
        free = await provider.check_key()
    except E.CredentialsRefused as exc:
        return [Finding("error", f"{exc.message} [key from {key.source}]", exit_code=3)]
    except E.TransientError as exc:
        message = f"the gateway at {gw.base_url} cannot be reached: {exc.message}"
        return [Finding("error", message, "gateway.base_url", exit_code=EXIT_STORAGE)]
    finally:
        await provider.aclose()
    if not free:
        message = (
            f"the {spec.name} key (from {key.source}) cannot be checked without paying: "
            "the gateway offers no free call; the first submit will tell"
        )
        return [Finding("warning", message)]
    return [Finding("ok", f"{gw.base_url} accepts the {spec.name} key (from {key.source})")]


def _database_findings(config: Config, environ: Mapping[str, str]) -> list[Finding]:
    try:
        said = probe_database(config, environ)
    except E.ConfigError as exc:  # an unreadable $CREDENTIALS_DIRECTORY/database-url
        return [Finding("error", exc.message, exc.key, exit_code=EXIT_USAGE)]
    except E.StateError as exc:  # out of reach, refusing us, too old, a newer schema
        return [Finding("error", exc.message, "cluster.database", exit_code=EXIT_STORAGE)]
    return [] if said is None else [Finding("ok", said, "cluster.database")]


def run_checks(config: Config, environ: Mapping[str, str]) -> CheckReport:
    """Every check, in order; none stops the others (one run shows every problem)."""
    findings = folder_findings(config.paths)
    where = f"the bucket {config.storage.bucket}" + (
        f" at {config.storage.endpoint_url}" if config.storage.endpoint_url else ""
    )
    try:
        findings += _storage_findings(Storage(config.storage), where)
    except E.ConfigError as exc:  # the storage settings themselves
        findings.append(Finding("error", exc.message, exc.key, exit_code=EXIT_USAGE))
    findings += _database_findings(config, environ)
    try:
        findings += asyncio.run(_key_findings(config, environ))
    except E.ConfigError as exc:  # no key found
        findings.append(Finding("error", exc.message, exc.key, exit_code=EXIT_USAGE))
    return CheckReport(findings)
