"""One ledger line: its format, its checksum, and what a bad line means.

Each line is ``{"crc":"<8 hex>","job":<compact JSON of Job.to_dict()>}`` where the
crc is ``zlib.crc32`` of the exact bytes of the job JSON.  The prefix has a fixed
length, so a checker slices the raw line instead of re-serialising it, and ``jq``
reads every file as it is (docs/design.md, "Record format").

A file is checked line by line (:func:`scan`): a bad last line of the newest
segment is an append a crash cut short (a torn tail), a bad line anywhere else is
damage, reported as :class:`~seedance_watch.errors.LedgerCorrupt` naming the file,
line and byte offset (docs/design.md, "Torn tails and damage").
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

from seedance_watch.core.jobs import Job
from seedance_watch.errors import LedgerCorrupt

__all__ = [
    "WHAT_TO_DO",
    "Latest",
    "corrupt",
    "decode_latest",
    "decode_record",
    "encode_record",
    "scan",
]

_HEAD = b'{"crc":"'
_MID = b'","job":'
_BODY = len(_HEAD) + 8 + len(_MID)
_CLOSE = ord("}")
_ID_HEAD = b'{"job_id":"'
_RECORD_START = re.compile(rb'\{"crc":"[0-9a-f]{8}","job":')
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)

#: What a person can do about a damaged ledger, for every refusal's message.
WHAT_TO_DO = (
    "restore the state folder from a backup, or move it aside to start with an empty "
    "ledger (the jobs it holds will be forgotten)"
)


def encode_record(job: Job) -> bytes:
    """One ledger line for ``job``, newline included (pure ASCII)."""
    body = _ENCODER.encode(job.to_dict()).encode("ascii")
    return b'{"crc":"%08x","job":%b}\n' % (zlib.crc32(body), body)


def _check(data: bytes, start: int, end: int) -> bytes:
    """The job JSON of the ledger line ``data[start:end]`` (no newline) if its checksum holds.

    Slices the raw bytes once: this runs for every line of the log at start-up.
    """
    if (
        end - start <= _BODY
        or not data.startswith(_HEAD, start)
        or not data.startswith(_MID, start + 16)
        or data[end - 1] != _CLOSE
    ):
        raise ValueError("not a ledger record")
    body = data[start + _BODY : end - 1]
    if data[start + 8 : start + 16] != b"%08x" % zlib.crc32(body):
        raise ValueError("checksum mismatch")
    return body


def _decode_body(body: bytes) -> Job:
    try:
        return Job.from_dict(json.loads(body))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"invalid job record: {exc!r}") from None


def decode_record(line: bytes) -> Job:
    """The job in one ledger line (without its newline); ``ValueError`` says what is wrong."""
    return _decode_body(_check(line, 0, len(line)))


def _job_id_of(body: bytes) -> str:
    """The job id of a checksummed body, without parsing the whole record.

    ``job_id`` is the first field ``to_dict`` writes; only an id with escapes needs
    the full JSON parser.
    """
    if body.startswith(_ID_HEAD):
        end = body.find(b'"', len(_ID_HEAD))
        if end > 0 and b"\\" not in body[len(_ID_HEAD) : end]:
            return body[len(_ID_HEAD) : end].decode()
    data = json.loads(body)
    job_id = data.get("job_id") if isinstance(data, dict) else None
    if not isinstance(job_id, str):
        raise ValueError("record without a job_id")
    return job_id


def corrupt(path: Path, line_no: int, offset: int, reason: str) -> LedgerCorrupt:
    """The refusal for a bad record: file, line, byte offset, why, and what to do."""
    return LedgerCorrupt(
        f"ledger damaged: {path}, line {line_no} (byte offset {offset}): {reason}. "
        f"Refusing to guess; {WHAT_TO_DO}."
    )


#: job id -> where its latest record is (file, line number, byte offset) and its JSON.
Latest = dict[str, tuple[Path, int, int, bytes]]


def scan(data: bytes, path: Path, latest: Latest, *, tail_ok: bool) -> tuple[int, int | None]:
    """Check every line of one file and note the latest record of each job in ``latest``.

    Returns the number of good lines and where a torn last line starts (if any).  A
    bad last line is a torn append when ``tail_ok`` (the newest segment); any other
    bad line raises :class:`LedgerCorrupt`.  Only checksums are verified here: the
    JSON of the records that stay latest is parsed once, by :func:`decode_latest`,
    so replaying a long log costs little more than reading it.
    """
    pos, line_no, size = 0, 0, len(data)
    while pos < size:
        line_no += 1
        end = data.find(b"\n", pos)
        try:
            if end == -1:
                raise ValueError("no end of line (an interrupted write)")
            body = _check(data, pos, end)
            latest[_job_id_of(body)] = (path, line_no, pos, body)
        except ValueError as exc:
            reason = str(exc)
            if tail_ok and (end == -1 or end == size - 1):
                # One torn append holds one record; a second header means a lost line
                # break merged an acknowledged record into the tail: that is damage.
                if _RECORD_START.search(data, pos + 1) is None:
                    return line_no - 1, pos
                reason += ", and another record follows it on the same line"
            raise corrupt(path, line_no, pos, reason) from None
        pos = end + 1
    return line_no, None


def decode_latest(latest: Latest) -> Iterator[Job]:
    """Parse the latest record of each job."""
    for job_id, (path, line_no, offset, body) in latest.items():
        try:
            job = _decode_body(body)
        except ValueError as exc:
            raise corrupt(path, line_no, offset, str(exc)) from None
        if job.job_id != job_id:
            raise corrupt(path, line_no, offset, "job_id does not match the record")
        yield job
