"""The state folder's ``LOCK``: one daemon per folder, and who that is.

A daemon ``flock()``s ``LOCK`` for its whole life and writes its pid, host and start
time into it; a second daemon on the same folder is refused naming the first
(:class:`~seedance_watch.errors.LedgerLocked`).  Whether a daemon runs is told by
testing the lock itself, never by a recorded pid, which another process may have
reused or which may belong to another PID namespace.  On a network file system the
lock may be local to one host, so opening there is warned about (docs/design.md,
"The lock").
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

import structlog

from seedance_watch.errors import ConfigError, DurabilityError, LedgerLocked, StateError
from seedance_watch.files import fsutil
from seedance_watch.ledger.base import StoreHolder

__all__ = [
    "LOCK_NAME",
    "acquire_lock",
    "folder_error",
    "held_by",
    "lock_holder",
    "warn_if_network_fs",
]

log = structlog.get_logger(__name__)

LOCK_NAME = "LOCK"
# A LOCK file replaced under us, or a brief shared lock of `status`: try again.
_LOCK_ATTEMPTS = 5
_LOCK_RETRY_SECONDS = 0.05
_UNKNOWN_HOLDER = "holder unknown (the LOCK file names no process yet)"


def _describe_holder(raw: bytes) -> str:
    try:
        info = json.loads(raw)
        return f"pid {info['pid']} on host {info['host']}, started {info['started_at']}"
    except (ValueError, KeyError, TypeError):
        return _UNKNOWN_HOLDER


def _holder(raw: bytes) -> StoreHolder:
    """The holder that the LOCK file's bytes name (as much of it as they say)."""
    try:
        info = json.loads(raw)
    except ValueError:
        info = None
    fields = info if isinstance(info, dict) else {}
    pid, host, started = fields.get("pid"), fields.get("host"), fields.get("started_at")
    return StoreHolder(
        description=_describe_holder(raw),
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        host=host if isinstance(host, str) else None,
        started_at=started if isinstance(started, str) else None,
    )


def folder_error(state_dir: Path, exc: OSError) -> ConfigError | DurabilityError:
    """An OSError on the state folder itself: a config problem when the path cannot be
    used (EACCES, ENOTDIR, EROFS...), a durability one when the disk fails (EIO, ENOSPC)."""
    name = errno.errorcode.get(exc.errno or 0, "error")
    where = f", at {exc.filename}" if exc.filename else ""
    return fsutil.path_error(
        exc,
        "paths.state",
        unusable=f"paths.state {state_dir} cannot be used: {exc.strerror or exc} "
        f"({name}{where}); give paths.state a local folder this user can create and write",
        failing=f"the state folder {state_dir} cannot be prepared: {exc.strerror or exc} "
        f"({name}{where})",
    )


def acquire_lock(state_dir: Path, mode: int = 0o600) -> int:
    """flock() ``LOCK`` and name this process in it; returns the descriptor.

    ``mode``: of a ``LOCK`` created now (:func:`~seedance_watch.ledger.modes.file_mode`).

    Closing the descriptor releases the lock.  After the lock is taken the
    descriptor must still be the file named ``LOCK``: a LOCK deleted or replaced
    meanwhile (a person moving the folder aside, another daemon starting in the same
    instant) would leave two daemons each holding a lock on a different file.  Then
    it tries again, a few times.
    """
    path = state_dir / LOCK_NAME
    for attempt in range(_LOCK_ATTEMPTS):
        last = attempt == _LOCK_ATTEMPTS - 1
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
        except OSError as exc:
            raise folder_error(state_dir, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not last:
                # Perhaps `seedance-watch status` testing the lock for a moment.
                os.close(fd)
                time.sleep(_LOCK_RETRY_SECONDS)
                continue
            holder = _describe_holder(os.pread(fd, 4096, 0))
            os.close(fd)
            raise LedgerLocked(
                f"the state folder {state_dir} is in use by another seedance-watch daemon "
                f"({holder}); stop it first, or give this one its own paths.state",
                holder=holder,
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StateError(f"cannot lock the state folder {state_dir}: {exc}") from exc
        if _is_lock_file(fd, path):
            break
        os.close(fd)
        log.warning("ledger.lock_replaced", state=str(state_dir), attempt=attempt + 1)
    else:
        raise StateError(
            f"the LOCK file in {state_dir} was replaced each time this daemon locked it; "
            "something else is using the state folder: stop it, or give this daemon "
            "its own paths.state"
        )
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd


def _is_lock_file(fd: int, path: Path) -> bool:
    """True when descriptor ``fd`` is the file that ``path`` names now."""
    held = os.fstat(fd)
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def held_by(state_dir: Path) -> StoreHolder | None:
    """The daemon holding the state folder's lock now; None when nobody does.

    Tests the lock itself -- a non-blocking shared flock(), released at once --
    and reads what the holder wrote into ``LOCK`` through the same descriptor.
    Never creates ``LOCK``.  A folder that cannot be used raises
    :class:`ConfigError` (key ``paths.state``).
    """
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise folder_error(state_dir, exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(os.pread(fd, 4096, 0))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def lock_holder(state_dir: Path) -> str | None:
    """Who holds the state folder's lock (``"pid ... on host ..."``); None when nobody does.

    :func:`held_by`, described in words.
    """
    holder = held_by(state_dir)
    return None if holder is None else holder.description


def warn_if_network_fs(state_dir: Path) -> None:
    """Log ``ledger.network_fs`` when the state folder is on a network file system."""
    found = fsutil.file_system_of(state_dir)
    if found is not None and fsutil.is_network_fs(found[1]):
        mount_point, fstype = found
        log.warning(
            "ledger.network_fs",
            state=str(state_dir),
            fstype=fstype,
            mount_point=mount_point,
            risk="flock() there may be local to this host: a daemon on another machine "
            "would not see the lock, and fsync may not reach the server's disk",
            advice="put paths.state on a local disk; never share one state folder between machines",
        )
