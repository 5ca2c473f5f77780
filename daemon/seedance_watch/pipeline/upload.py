"""The upload stage: a new job's images go to the bucket (``NEW → UPLOADED``).

Each image of the drop (the image, and the last frame of a frames drop; a text
drop has none) is uploaded under ``{prefix}{job_id}/{file name}`` with its
Content-Type.  Transient S3 errors are retried a few times in this coroutine
(stamina), then the job goes back on the timer heap; an unusable bucket pauses
uploads (nothing fails); a vanished input fails the job.
"""

from __future__ import annotations

import asyncio
import errno
import time
from pathlib import PurePosixPath

import stamina

from seedance_watch import errors as E
from seedance_watch.core.jobs import InputFile, Job, Stage, Uploaded
from seedance_watch.core.names import content_type
from seedance_watch.core.scheduling import STAGE_POLICIES
from seedance_watch.pipeline.stage import Advance, Fail, Outcome, Pause, Retry, StageDeps, Wait

__all__ = ["IMAGE_ROLES", "UploadStage", "images_of"]

#: The roles of the inputs that are uploaded (the sidecar is not).
IMAGE_ROLES = ("image", "last_frame", "reference")


def images_of(job: Job) -> list[tuple[str, str, InputFile | None]]:
    """``(role, inbox path, examined identity)`` of each image a job uploads, in order."""
    if job.inputs:
        return [(i.role, i.path, i) for i in job.inputs if i.role in IMAGE_ROLES]
    return [] if job.kind == "text" else [("image", job.source, None)]


class UploadStage:
    stage = Stage.UPLOAD

    def __init__(self, deps: StageDeps) -> None:
        self.deps = deps
        self.inbox = deps.config.paths.inbox

    async def run(self, job: Job) -> Outcome:
        d = self.deps
        credentials = d.pauses.credentials
        if d.free_key_check and credentials.is_open:
            # The key is refused: it is probed for free; nothing goes up meanwhile.
            return Wait(max(credentials.probe_at, d.clock()) + 0.5)
        # While the bucket is unusable one upload at a time probes it; the rest wait.
        wait = d.pauses.storage.acquire(d.clock())
        if wait > 0:
            return Wait(d.clock() + wait)
        uploads: list[tuple[str, str]] = []
        started = time.monotonic()
        total = 0
        policy = STAGE_POLICIES[self.stage]
        hook = d.retry_hook(job.job_id, self.stage, E.StorageTransient)
        try:
            for role, rel, examined in images_of(job):
                path = self.inbox / rel
                key = d.storage.key_for(job.job_id, PurePosixPath(rel).name)
                async for attempt in stamina.retry_context(
                    on=hook, attempts=policy.attempts, timeout=None
                ):
                    with attempt, d.critical():
                        # Only the bytes intake hashed go up (docs/design.md, "The inbox"): other
                        # bytes under that name fail this job as input_replaced.  (The hash
                        # decides, not the inode: a restored inbox has new inodes.)
                        total += await asyncio.to_thread(
                            d.storage.upload,
                            path,
                            key,
                            content_type=content_type(rel),
                            expect_sha256=examined.sha256 if examined else None,
                        )
                uploads.append((role, key))
        except FileNotFoundError:
            return Fail(E.InputVanished("An image left the inbox before its upload."))
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise  # a file error: the engine retries the step
            # A symbolic link took the name of an image intake examined: never followed.
            name = PurePosixPath(exc.filename or "").name or "an image"
            return Fail(E.InputReplaced(f"{name} is now a symbolic link; not followed."))
        except E.StorageUnavailable as exc:
            return Pause("storage", exc)
        except E.StorageTransient as exc:
            return Retry(exc.message, exc.retry_after)
        except E.JobError as exc:
            return Fail(exc)
        d.pauses.storage_ok()
        d.observer.uploaded(total, time.monotonic() - started)
        return Advance(Uploaded(uploads=tuple(uploads)))
