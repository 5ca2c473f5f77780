"""The exception tree of seedance-watch.

Every error the daemon can meet is translated, at the edge where it happens
(``storage.py`` for boto3, ``gateway.py`` for httpx, ``ledger.py`` for the
file system, ``ledger/postgres/`` for psycopg), into one of these classes.
Each class says how far it reaches: a *transient* error is retried, a *job*
error fails one job (its ``code`` goes into ``NAME.error.json``), a *pause*
stops all submissions without failing anything, and a *daemon* error stops the
process.

    SeedanceWatchError
    ├── ConfigError                  daemon: bad config or missing secret (exit 2)
    ├── StateError                   daemon: the state directory cannot be trusted
    │   ├── LedgerLocked             another daemon holds the state (exit 2)
    │   ├── LedgerCorrupt            damage before the last record
    │   ├── DurabilityError          fsync/write/rename failed: data may be lost
    │   ├── StoreUnavailable         the database cannot be reached (the write's outcome unknown)
    │   ├── SchemaTooNew             the database's schema is newer than this code
    │   ├── JobFenced                another host owns the job: the write changed nothing
    │   └── LeaseLost                this host was presumed dead: its jobs are another's
    ├── TransientError               retry later (``retry_after`` when the peer said)
    │   ├── GatewayUnavailable       5xx, connection refused/reset, read errors
    │   │   └── SubmitNotSent        a submit that provably never reached the server
    │   ├── RateLimited              HTTP 429
    │   ├── StorageTransient         S3 throttling, 5xx, connection errors
    │   └── DownloadIncomplete       truncated / wrong length / not an mp4 / too big
    ├── PipelinePaused               pause all submissions; nothing is failed
    │   ├── CredentialsRefused       HTTP 401, 402, 403 from the gateway
    │   └── StorageUnavailable       no such bucket, access denied
    └── JobError                     this job fails; ``code`` is stable snake_case
        ├── InvalidSidecar           invalid_sidecar
        ├── InvalidImage             invalid_image
        ├── MissingSidecar           missing_sidecar
        ├── MissingImage             missing_image
        ├── UnsafePath               unsafe_path
        ├── AmbiguousPair            ambiguous_pair (two sidecars or two images, one stem)
        ├── InputVanished            input_vanished (removed from the inbox mid-job)
        ├── InputReplaced            input_replaced (another file under its name mid-job)
        ├── StorageRejected          storage_rejected (S3 refused this one object)
        ├── OverBudget               over_budget (one job over the whole daily cap)
        ├── GatewayRejected          gateway_rejected (400, 404)
        ├── SubmitAmbiguous          submit_ambiguous
        ├── TaskFailed               task_failed
        ├── TaskExpired              task_expired
        ├── TaskCancelled            task_cancelled
        ├── TaskTimeout              task_timeout
        ├── TaskNotFound             task_not_found
        └── DownloadFailed           download_failed
"""

from __future__ import annotations

from typing import Any, ClassVar


class SeedanceWatchError(Exception):
    """Base of every error raised by seedance-watch."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- daemon-fatal ---------------------------------------------------------------------


class ConfigError(SeedanceWatchError):
    """The configuration (or a secret it refers to) is unusable.

    ``key`` names the offending key, dotted (``gateway.base_url``), when there is one.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class StateError(SeedanceWatchError):
    """The state directory cannot be used safely; the daemon stops."""


class LedgerLocked(StateError):
    """Another process holds the lock on the state directory."""

    def __init__(self, message: str, *, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class LedgerCorrupt(StateError):
    """The ledger is damaged somewhere other than its last record."""


class DurabilityError(StateError):
    """A write, fsync or rename of state failed; the kernel may have dropped data."""


class StoreUnavailable(StateError):
    """The shared store's database cannot be reached (refused, timed out, gone mid-call).

    A write that raises it may or may not have been committed: putting the same
    record again is safe (a put writes a job's whole latest record).  Nothing is
    latched: the store works again once the database answers.
    """


class SchemaTooNew(StateError):
    """The database holds a schema newer than this code knows: upgrade this host first."""


class JobFenced(StateError):
    """A write of a job this host no longer owns (or a session that is no longer the
    host's): it changed nothing.

    ``owner`` is the host that owns the job now (None: unknown, or the job's write
    was refused because this host's own session was superseded).  The pipeline must
    forget the job: another host drives it (docs/design.md, "The shared store").
    """

    def __init__(self, message: str, *, job_id: str, host: str, owner: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.host = host
        self.owner = owner


class LeaseLost(StateError):
    """This host's session of the shared store is over: it was presumed dead (its lease
    ran out) and its jobs were adopted, or another daemon took its name.  The daemon
    stops at once, touching nothing more, and exits 1; started again, it is a new
    session (docs/design.md, "Leases and failover")."""


# --- transient ------------------------------------------------------------------------


class TransientError(SeedanceWatchError):
    """Worth retrying later.  ``retry_after`` is the peer's own hint, in seconds."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.http_status = http_status


class GatewayUnavailable(TransientError):
    """The gateway answered 5xx, or the connection failed."""


class SubmitNotSent(GatewayUnavailable):
    """A submit that provably never reached the gateway (safe to send again)."""


class RateLimited(TransientError):
    """The gateway answered 429."""


class StorageTransient(TransientError):
    """A passing S3 failure (throttling, 5xx, network)."""


class DownloadIncomplete(TransientError):
    """The video body was broken; the URL stays valid for 24 hours, so try again."""


# --- pause ------------------------------------------------------------------------------


class PipelinePaused(SeedanceWatchError):
    """Nothing can be submitted until an operator fixes something outside the daemon."""

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class CredentialsRefused(PipelinePaused):
    """The gateway refused the API key (401), the account (402) or the access (403)."""


class StorageUnavailable(PipelinePaused):
    """The bucket is missing or refuses us; every upload would fail the same way."""


# --- job-fatal --------------------------------------------------------------------------


class JobError(SeedanceWatchError):
    """This job cannot succeed.  The attributes become ``NAME.error.json``."""

    code: ClassVar[str] = "job_failed"
    default_hint: ClassVar[str] = ""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        http_status: int | None = None,
        task_id: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.hint = hint if hint is not None else self.default_hint
        self.http_status = http_status
        self.task_id = task_id
        self.key = key
        #: The stage named in the report, when not the job's state at the failure.
        self.stage: str | None = None

    def report(self) -> dict[str, Any]:
        """The fields of the error report this error contributes."""
        out: dict[str, Any] = {"code": self.code, "message": self.message, "hint": self.hint}
        if self.stage is not None:
            out["stage"] = self.stage
        if self.http_status is not None:
            out["http_status"] = self.http_status
        if self.task_id is not None:
            out["task_id"] = self.task_id
        if self.key is not None:
            out["key"] = self.key
        return out


class InvalidSidecar(JobError):
    code = "invalid_sidecar"
    default_hint = "Fix the sidecar in failed/, then run: seedance-watch retry JOB_ID"


class InvalidImage(JobError):
    code = "invalid_image"
    default_hint = (
        "Replace the image in failed/ with a JPEG/PNG/WebP/BMP/TIFF/GIF within the model's "
        "limits (same name), then run: seedance-watch retry JOB_ID"
    )


class MissingSidecar(JobError):
    code = "missing_sidecar"
    default_hint = "Drop NAME.yaml (with a prompt) beside the image, in the same folder."


class MissingImage(JobError):
    code = "missing_image"
    default_hint = "Drop the image with the same name beside the sidecar."


class UnsafePath(JobError):
    code = "unsafe_path"
    default_hint = "Copy the file into the inbox instead of linking to it."


class AmbiguousPair(JobError):
    code = "ambiguous_pair"
    default_hint = "Keep one image and one sidecar per name (NAME.yaml or NAME.yml, not both)."


class InputVanished(JobError):
    code = "input_vanished"
    default_hint = "The file was removed from the inbox while its job ran; drop it again."


class InputReplaced(JobError):
    """The file under an input's name is not the one intake examined (docs/design.md, "A job owns
    the files it examined").

    Raised by ``fsutil.move_file(expect=...)`` and ``Storage.upload``: the job
    owns the exact bytes it hashed, so it never uploads or moves a newcomer;
    the new file is a new drop of its own.
    """

    code = "input_replaced"
    default_hint = (
        "The file was replaced in the inbox while its job ran; the new file is taken "
        "as a new drop. Leave files in the inbox alone until they are moved to done/."
    )


class StorageRejected(JobError):
    code = "storage_rejected"
    default_hint = "S3 refused this object (name too long or file too large); rename or shrink it."


class GatewayRejected(JobError):
    code = "gateway_rejected"
    default_hint = (
        "Check the request's parameters and the model name, fix the sidecar "
        "in failed/, then run: seedance-watch retry JOB_ID"
    )


class OverBudget(JobError):
    """One job alone would cost more than a whole day's ``budget.max_cost_per_day``:
    it could never be submitted, so it fails before anything is uploaded."""

    code = "over_budget"
    default_hint = (
        "Raise budget.max_cost_per_day, or ask for less (a shorter duration, a lower "
        "resolution, a cheaper model: fix the sidecar in failed/), then run: "
        "seedance-watch retry JOB_ID"
    )


class SubmitAmbiguous(JobError):
    code = "submit_ambiguous"
    default_hint = (
        "The submit may have reached the gateway and may be billed. Check your gateway's "
        "dashboard; to submit again on purpose: seedance-watch retry --include-ambiguous JOB_ID"
    )


class TaskFailed(JobError):
    code = "task_failed"
    default_hint = (
        "The model refused or failed the task; adjust the prompt or image in failed/, then "
        "run: seedance-watch retry JOB_ID"
    )


class TaskExpired(JobError):
    code = "task_expired"
    default_hint = "The task expired in the gateway's queue; run: seedance-watch retry JOB_ID"


class TaskCancelled(JobError):
    code = "task_cancelled"
    default_hint = (
        "The task was cancelled at the gateway; if that was not intended, run: "
        "seedance-watch retry JOB_ID"
    )


class TaskTimeout(JobError):
    code = "task_timeout"
    default_hint = (
        "The task did not finish within gateway.task_timeout and may still be billed: look it "
        "up by task_id; to submit again on purpose: "
        "seedance-watch retry --include-ambiguous JOB_ID"
    )


class TaskNotFound(JobError):
    code = "task_not_found"
    default_hint = "The gateway no longer knows this task; run: seedance-watch retry JOB_ID"


class DownloadFailed(JobError):
    code = "download_failed"
    default_hint = (
        "The video could not be downloaded (its URL lasts 24 hours); run: "
        "seedance-watch retry JOB_ID"
    )
