"""The job record and its state machine: pure data and pure functions, no I/O.

A job is one drop (an image and its sidecar).  Its life is a chain of states,
each made durable in the ledger *before* the external action that follows it:

    NEW ──Uploaded──▶ UPLOADED ──SubmitIntent──▶ SUBMITTING ──Submitted──▶ SUBMITTED
     │                   ▲                           │                         │
     │                   └──────SubmitRefused────────┘                  TaskSucceeded
     │                                                                         ▼
     └──────────────Placing (duplicate)──────────▶ PLACING ◀──Placing──── SUCCEEDED
                                                      │    ──Redownload──▶    ▲
                                                   Finished                   │
                                                      ▼
                                                    DONE

    any non-terminal state ──Fail──▶ FAILING ──Finished──▶ FAILED ──Retried──▶ RETRIED

* ``SUBMITTING`` is the intent to submit.  Found on restart, the outcome of the
  submit is unknown and the job fails as ``submit_ambiguous`` (never resubmitted).
* ``PLACING`` records where the output goes and the video's hash before any file
  under a final name appears, so a restart can finish placement without writing
  a second output.  ``FAILING`` likewise records the report before inputs move.
* ``DONE``, ``FAILED`` and ``RETRIED`` are terminal.  A retry is a new drop, hence a
  new job; the failed job becomes ``RETRIED`` pointing to it (``retried_as``), and the
  new one points back (``retry_of``), once the daemon takes the drop.

As in h11's ``_state.py``, every legal transition is in one table and anything
else raises :class:`IllegalTransition`.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ACTIVE_STATES",
    "RESUME",
    "TERMINAL_STATES",
    "Event",
    "Fail",
    "Finished",
    "HookRan",
    "IllegalTransition",
    "InputFile",
    "Job",
    "Placing",
    "Redownload",
    "Retried",
    "Stage",
    "State",
    "SubmitIntent",
    "SubmitRefused",
    "Submitted",
    "TaskSucceeded",
    "Uploaded",
    "apply",
    "content_key",
    "job_files",
    "make_job_id",
]


class State(enum.StrEnum):
    NEW = "new"
    UPLOADED = "uploaded"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    PLACING = "placing"
    FAILING = "failing"
    DONE = "done"
    FAILED = "failed"
    RETRIED = "retried"


TERMINAL_STATES = frozenset({State.DONE, State.FAILED, State.RETRIED})
ACTIVE_STATES = frozenset(State) - TERMINAL_STATES


class Stage(enum.StrEnum):
    """The pipeline stages a job passes through (``pipeline/<stage>.py`` each)."""

    UPLOAD = "upload"
    SUBMIT = "submit"
    POLL = "poll"
    DOWNLOAD = "download"
    FINISH = "finish"


#: Which stage a job in each unfinished state (re-)enters: after a restart, when its
#: timer fires, and after every state change.  A ``SUBMITTING`` job re-entering the
#: submit stage was cut off mid-submit (only a restart finds one): it fails as
#: ``submit_ambiguous``, never resubmitted.
RESUME: dict[State, Stage] = {
    State.NEW: Stage.UPLOAD,
    State.UPLOADED: Stage.SUBMIT,
    State.SUBMITTING: Stage.SUBMIT,
    State.SUBMITTED: Stage.POLL,
    State.SUCCEEDED: Stage.DOWNLOAD,
    State.PLACING: Stage.FINISH,
    State.FAILING: Stage.FINISH,
}
assert set(RESUME) == ACTIVE_STATES


class IllegalTransition(Exception):
    """An event that the job's current state does not allow (a bug, never user input)."""


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Uploaded:
    """Every image of the drop is in the bucket: ``uploads`` pairs a role with its key."""

    uploads: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SubmitIntent:
    """We are about to send the submit request (made durable first).

    ``webhook_token`` is the job's callback secret, recorded before the gateway
    could use it.  ``cost`` is what the submit reserves against the day's budget
    (``core.budget.JobCost.to_dict``), recorded as ``Job.cost``.  ``provider`` names
    the provider the task is created at: its polls go there, also after a restart.
    """

    webhook_token: str | None = None
    cost: dict[str, Any] | None = None
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class SubmitRefused:
    """The submit provably never reached the gateway (or was refused); it may be sent again."""


@dataclass(frozen=True, slots=True)
class Submitted:
    """The gateway accepted the task: its reference, and how to poll it."""

    task_id: str
    poll_url: str | None = None
    dialect: str | None = None


@dataclass(frozen=True, slots=True)
class TaskSucceeded:
    """The task ended well; the video waits at ``video_url`` (valid for 24 hours)."""

    video_url: str
    usage: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Placing:
    """The verified video goes to ``output`` (relative to the outbox); inputs to ``moved_to``.

    ``duplicate_of`` is set when the video is a copy of an earlier job's output.
    ``cost``, when set, replaces ``Job.cost``: a reservation settled at the
    downloaded video's real length, durable before the output JSON shows it.
    """

    output: str
    video_sha256: str
    video_bytes: int
    moved_to: tuple[tuple[str, str], ...]
    duplicate_of: str | None = None
    cost: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Redownload:
    """Placement found neither the output nor the staged video: download again."""


@dataclass(frozen=True, slots=True)
class Fail:
    """The job fails with ``error`` (the report's fields); inputs go to ``moved_to``."""

    error: dict[str, Any]
    moved_to: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Finished:
    """The outputs (or the report) and the moved inputs are durable.

    ``hook_due``: a ``hooks.on_done``/``on_failed`` command is to run for this end.
    """

    hook_due: bool = False


@dataclass(frozen=True, slots=True)
class Retried:
    """The failed job's inputs, sent back by ``seedance-watch retry``, became the drop of
    ``retried_as``: the failure's story continues there."""

    retried_as: str


@dataclass(frozen=True, slots=True)
class HookRan:
    """The job's ``hooks.on_done``/``on_failed`` command ran (or was given up); never again."""


Event = (
    Uploaded
    | SubmitIntent
    | SubmitRefused
    | Submitted
    | TaskSucceeded
    | Placing
    | Redownload
    | Fail
    | Finished
    | HookRan
    | Retried
)

_S = State
_TRANSITIONS: dict[tuple[State, type[Any]], State] = {
    (_S.NEW, Uploaded): _S.UPLOADED,
    (_S.UPLOADED, Uploaded): _S.UPLOADED,  # re-upload after a restart (new key, same job)
    (_S.UPLOADED, SubmitIntent): _S.SUBMITTING,
    (_S.SUBMITTING, SubmitRefused): _S.UPLOADED,
    (_S.SUBMITTING, Submitted): _S.SUBMITTED,
    (_S.SUBMITTED, TaskSucceeded): _S.SUCCEEDED,
    (_S.SUCCEEDED, Placing): _S.PLACING,
    (_S.NEW, Placing): _S.PLACING,  # a duplicate: the earlier job's video is copied
    (_S.PLACING, Redownload): _S.SUCCEEDED,
    (_S.PLACING, Finished): _S.DONE,
    (_S.FAILING, Finished): _S.FAILED,
    (_S.DONE, HookRan): _S.DONE,
    (_S.FAILED, HookRan): _S.FAILED,
    (_S.FAILED, Retried): _S.RETRIED,
}
for _state in ACTIVE_STATES - {State.FAILING}:
    _TRANSITIONS[(_state, Fail)] = State.FAILING


# --- the record -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file as intake examined it: the job owns exactly these bytes (docs/design.md, "A
    job owns the files it examined").

    ``role`` is ``image``, ``last_frame``, ``reference`` (in the sidecar's order) or
    ``sidecar``; ``path`` is relative to the
    inbox.  ``dev``/``ino``/``size``/``mtime_ns`` tell the same file from a new one
    under the same name; ``sha256`` is what was hashed.
    """

    role: str
    path: str
    sha256: str
    size: int
    dev: int
    ino: int
    mtime_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputFile:
        return cls(
            role=str(data["role"]),
            path=str(data["path"]),
            sha256=str(data["sha256"]),
            size=int(data["size"]),
            dev=int(data["dev"]),
            ino=int(data["ino"]),
            mtime_ns=int(data["mtime_ns"]),
        )


@dataclass(frozen=True, slots=True)
class Job:
    """One drop and everything known about it.  Immutable: transitions return a copy.

    Paths are POSIX strings relative to their root folder (``source`` and ``sidecar``
    to the inbox, ``output`` to the outbox, ``moved_to`` pairs from the inbox to
    done/ or failed/, written as ``done/sub/NAME.jpg``).  Times are Unix seconds.
    """

    job_id: str
    state: State
    source: str
    sidecar: str | None
    created_at: float
    updated_at: float
    image_sha256: str | None = None
    content_key: str | None = None
    model: str | None = None
    prompt: str | None = None
    text: str | None = None
    #: Schema v1 only: the one uploaded image's key (v2 writes ``uploads``).
    s3_key: str | None = None
    task_id: str | None = None
    submitted_at: float | None = None
    #: ``image``, ``frames``, ``text`` or ``reference``; v1 records are ``image``.
    kind: str = "image"
    #: The provider module that owns ``task_id`` (``providers/<name>.py``).
    provider: str = "pixazo"
    #: Among waiting jobs, higher goes to the gateway first (``priority:`` in the sidecar
    #: or a folder preset; waiting raises it, see ``core/scheduling.ReadyQueue``).
    priority: int = 0
    #: The effective generation options (sidecar over defaults, fitted to the model):
    #: Seedance 1.0 sends them as the text commands in ``text``, Seedance 2 as body keys.
    #: None in records written before options were kept.
    options: dict[str, Any] | None = None
    #: What the submit costs (``core.budget.JobCost.to_dict``): ``cents`` (int),
    #: ``per`` (``generation`` or ``second``), ``rate`` (USD per unit, a decimal
    #: string), ``seconds`` (charged; per second only) and ``settled`` (False while
    #: a ``duration: auto`` reservation waits for the video's length).  Reserved
    #: with the intent (``SubmitIntent``), settled with the placement (``Placing``),
    #: cleared by a refusal.  None: priced from the model at read time.
    cost: dict[str, Any] | None = None
    #: Every input file, as examined at intake (identity checked before use and moves).
    inputs: tuple[InputFile, ...] = field(default=())
    #: ``(role, s3 key)`` of each uploaded image (``image``, ``last_frame``).
    uploads: tuple[tuple[str, str], ...] = field(default=())
    #: How the task is polled: the gateway's polling URL and its answer dialect.
    poll_url: str | None = None
    dialect: str | None = None
    #: The per-job secret of webhook callbacks (``gateway.webhook_url``).
    webhook_token: str | None = None
    #: When the submit intent was recorded: the submit counts against the day's budget
    #: from then on (cleared when the gateway provably refused it).
    intent_at: float | None = None
    #: A hook is to run for this job's end, and whether it ran (at most once, at
    #: least once across crashes).
    hook_due: bool = False
    hook_done: bool = False
    video_url: str | None = None
    usage: dict[str, Any] | None = None
    completed_at: float | None = None
    output: str | None = None
    video_sha256: str | None = None
    video_bytes: int | None = None
    duplicate_of: str | None = None
    error: dict[str, Any] | None = None
    moved_to: tuple[tuple[str, str], ...] = field(default=())
    #: Lineage: the failed job whose inputs ``seedance-watch retry`` sent back as this
    #: drop, and (on that failed job, now RETRIED) the job its drop became.
    retry_of: str | None = None
    retried_as: str | None = None
    seq: int = 0

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def object_keys(self) -> list[str]:
        """Every bucket key this job uploaded (v1 records: ``s3_key``)."""
        keys = [key for _, key in self.uploads]
        if self.s3_key is not None and self.s3_key not in keys:
            keys.insert(0, self.s3_key)
        return keys

    def uploaded(self) -> tuple[tuple[str, str], ...]:
        """``(role, key)`` of every uploaded image, in upload order (v1: ``s3_key``)."""
        if self.uploads:
            return self.uploads
        return (("image", self.s3_key),) if self.s3_key is not None else ()

    def to_dict(self) -> dict[str, Any]:
        """A compact JSON-ready dict (fields that are None or empty are left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or value == () or value is False:
                continue
            if f.name in ("kind", "provider", "priority") and value == f.default:
                continue
            if f.name in ("moved_to", "uploads"):
                value = [list(pair) for pair in value]
            elif f.name == "inputs":
                value = [item.to_dict() for item in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Inverse of :meth:`to_dict`.  Raises ``KeyError``/``ValueError``/``TypeError``.

        Start-up decodes one record per job (100,000s), so this skips the frozen
        ``__init__`` (one ``object.__setattr__`` per field) and sets the slots directly.
        A field ``to_dict`` left out (None or empty) gets its default; ``sidecar``,
        which has none, is None then.
        """
        if not _FIELD_NAMES.issuperset(data):
            unknown = sorted(set(data) - _FIELD_NAMES)
            raise TypeError(f"unknown job field(s): {', '.join(map(str, unknown))}")
        return _decode(cls, data)  # type: ignore[no-any-return]


def job_files(job: Job) -> list[str]:
    """The inbox files a job holds: every examined input, else its source and sidecar."""
    if job.inputs:
        return [item.path for item in job.inputs]
    return [p for p in (job.source, job.sidecar) if p is not None]


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Job))
_REQUIRED = frozenset({"job_id", "state", "source", "created_at", "updated_at"})


def _make_decoder() -> Any:
    """``_decode(cls, data)``: one unrolled statement per field (no loop, no ``__init__``).

    Generated once at import from the dataclass fields, so it cannot drift from them.
    """
    namespace: dict[str, Any] = {"State": State, "new": object.__new__}
    lines = ["def _decode(cls, data):", "    get = data.get", "    job = new(cls)"]
    for i, f in enumerate(dataclasses.fields(Job)):
        namespace[f"set{i}"] = Job.__dict__[f.name].__set__
        default = None if f.default is dataclasses.MISSING else f.default
        namespace[f"default{i}"] = default
        value = f"data[{f.name!r}]" if f.name in _REQUIRED else f"get({f.name!r}, default{i})"
        if f.name == "state":
            value = f"State({value})"
        elif f.name in ("moved_to", "uploads"):
            value = f"tuple((str(a), str(b)) for a, b in {value})"
        elif f.name == "inputs":
            namespace["InputFile"] = InputFile
            value = f"tuple(InputFile.from_dict(d) for d in {value})"
        lines.append(f"    set{i}(job, {value})")
    lines.append("    return job")
    exec("\n".join(lines), namespace)  # trusted: the source is built just above
    return namespace["_decode"]


_decode = _make_decoder()


def apply(job: Job, event: Event, now: float) -> Job:
    """Return ``job`` after ``event`` at time ``now``; raise if the table forbids it."""
    try:
        target = _TRANSITIONS[(job.state, type(event))]
    except KeyError:
        raise IllegalTransition(
            f"job {job.job_id}: {type(event).__name__} is not allowed in state {job.state}"
        ) from None
    changes: dict[str, Any] = {"state": target, "updated_at": now, "seq": job.seq + 1}
    match event:
        case Uploaded(uploads=uploads):
            changes["uploads"] = uploads
            changes["s3_key"] = None
        case SubmitIntent(webhook_token=token, cost=cost, provider=provider):
            changes["intent_at"] = now
            changes["cost"] = cost
            if provider is not None:
                changes["provider"] = provider
            if token is not None:
                changes["webhook_token"] = token
        case SubmitRefused():
            # Never billed: it no longer counts, and the next intent reserves anew.
            changes["intent_at"] = None
            changes["cost"] = None
        case Submitted(task_id=task_id, poll_url=poll_url, dialect=dialect):
            changes["task_id"] = task_id
            changes["poll_url"] = poll_url
            changes["dialect"] = dialect
            changes["submitted_at"] = now
        case HookRan():
            changes["hook_done"] = True
        case Retried(retried_as=retried_as):
            changes["retried_as"] = retried_as
        case Finished(hook_due=due):
            changes["hook_due"] = due
        case TaskSucceeded(video_url=url, usage=usage):
            changes["video_url"] = url
            changes["usage"] = usage
            changes["completed_at"] = now
        case Placing():
            changes.update(
                output=event.output,
                video_sha256=event.video_sha256,
                video_bytes=event.video_bytes,
                moved_to=event.moved_to,
                duplicate_of=event.duplicate_of,
            )
            if event.cost is not None:
                changes["cost"] = event.cost
        case Redownload():
            changes.update(output=None, video_sha256=None, video_bytes=None, moved_to=())
        case Fail(error=error, moved_to=moved_to):
            error = dict(error)
            error.setdefault("stage", job.state.value)
            if job.task_id is not None:
                error.setdefault("task_id", job.task_id)
            changes["error"] = error
            changes["moved_to"] = moved_to
        case _:
            pass
    return dataclasses.replace(job, **changes)


def content_key(
    image_sha256: str | None,
    model: str,
    text: str,
    *,
    kind: str = "image",
    last_frame_sha256: str | None = None,
    reference_sha256s: tuple[str, ...] = (),
    body_options: Mapping[str, Any] | None = None,
) -> str:
    """The identity of a request: every input image's bytes and the effective request.

    An image drop of a Seedance 1.0 model keeps the first release's key (earlier
    ledgers still dedupe): its options are text commands inside ``text``.  Other
    kinds cover every image in order; a Seedance 2 request adds ``body_options``,
    the options it sends as keys (docs/design.md, "Content key").
    """
    parts: tuple[str, ...] = (image_sha256 or "", model, text)
    if kind != "image" or body_options is not None:
        parts = (kind, image_sha256 or "", last_frame_sha256 or "", model, text)
        if reference_sha256s:
            parts += ("references", *reference_sha256s)
        if body_options is not None:
            parts += ("options", json.dumps(dict(body_options), sort_keys=True))
    h = hashlib.sha256()
    for part in parts:
        # The sidecar refuses lone surrogates; should one come, it hashes, never raises.
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def make_job_id(source: str, image_sha256: str, sidecar_sha256: str, ctime_ns: int) -> str:
    """A job id derived from the drop: what was dropped, where, and when.

    The same files dropped again (or moved back by ``retry``) have a new ctime,
    hence a new id; a rescan of the very same drop finds the same id.  ``source`` is
    hashed as the bytes the file system gave (a name that is not UTF-8 is a str with
    surrogate escapes; docs/design.md, "File names").
    """
    text = f"{source}\0{image_sha256}\0{sidecar_sha256}\0{ctime_ns}"
    h = hashlib.sha256(text.encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]
