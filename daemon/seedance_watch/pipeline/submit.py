"""The submit stage: one billed call per job (``UPLOADED → SUBMITTING → SUBMITTED``).

Every created task is billed, so the intent is made durable before the call and the task reference
returned as :class:`Advance` -- the engine writes it before any other side effect.  On a shared
store the intent is written only if the whole account has room for it (a slot, a token, the
day's caps across the hosts), decided in the same transaction; else the job is held
(:class:`Hold`).  A submit that provably never reached the gateway (or that it refused with
429/500/503) goes back to ``UPLOADED`` and waits; 401/402/403 pause submits; anything else that
may have reached the gateway is ``submit_ambiguous`` and never resent (docs/design.md, "The
gateway protocol").  A job found in ``SUBMITTING`` was cut off mid-submit by a crash: its
outcome is unknown, so it fails the same way.
"""

from __future__ import annotations

import asyncio
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

from seedance_watch import errors as E
from seedance_watch.core.jobs import Job, Stage, State, SubmitIntent, SubmitRefused, Submitted
from seedance_watch.core.scheduling import task_kind
from seedance_watch.ledger.base import SubmitRefusal
from seedance_watch.pipeline.stage import Advance, Fail, Hold, Outcome, Pause, Retry, StageDeps
from seedance_watch.providers.base import GenerationRequest

__all__ = ["SubmitStage", "new_webhook_token", "webhook_url_for"]

log = structlog.get_logger(__name__)


def new_webhook_token() -> str:
    """An unguessable per-job token for webhook callbacks."""
    return secrets.token_urlsafe(24)


def webhook_url_for(base: str, token: str) -> str:
    """``gateway.webhook_url`` with ``token=<token>`` added to its query."""
    parts = urlsplit(base)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


class SubmitStage:
    stage = Stage.SUBMIT

    def __init__(self, deps: StageDeps) -> None:
        self.deps = deps

    async def run(self, job: Job) -> Outcome:
        d = self.deps
        if job.state is State.SUBMITTING:
            return Fail(
                E.SubmitAmbiguous(
                    "The daemon stopped while this job's submit was in flight, so "
                    "whether the gateway created (and bills) a task is unknown."
                )
            )
        model, text = job.model, job.text
        assert model is not None and text is not None
        provider = d.providers.default
        row = provider.models.get(model)
        if row is not None and row.retired:
            # Taken in before its model was switched off (an upgrade found it waiting):
            # never sent, so never billed.
            return Fail(
                E.InvalidSidecar(
                    f"model: {row.retirement()}; this job was not submitted.",
                    key="model",
                    hint="Retry it after setting model: to a live one "
                    "(`seedance-watch models`), or remove the line for the default.",
                )
            )
        with d.critical():
            media: list[tuple[str, str]] = []
            try:
                # In the order they were uploaded: the sidecar's order for references.
                # Presigned now, not at upload: a job held back (a pause, the budget)
                # still sends a fresh URL.
                for role, key in job.uploaded():
                    media.append((role, await asyncio.to_thread(d.storage.url_for, key)))
            except (E.StorageTransient, E.StorageUnavailable) as exc:
                return Retry(exc.message, getattr(exc, "retry_after", None))
            webhook = d.config.gateway.webhook_url
            token = job.webhook_token
            if webhook is not None and token is None:
                token = new_webhook_token()
            cost = d.prices.reserve(model, job.options)
            intent = SubmitIntent(webhook_token=token, cost=cost.to_dict(), provider=provider.name)
            admitted = d.intent(job, intent)
            if isinstance(admitted, SubmitRefusal):
                return Hold(admitted)  # nothing written: the account has no room now
            job = admitted
            d.observer.submit_attempted()
            request = GenerationRequest(
                kind=job.kind,  # type: ignore[arg-type]
                model=model,
                text=text,
                options=job.options or {},
            )
            try:
                ref = await provider.create_task(
                    request,
                    media,
                    webhook_url=webhook_url_for(webhook, token) if webhook and token else None,
                )
            except (E.SubmitNotSent, E.RateLimited) as exc:
                # Provably not created: back to UPLOADED and wait (nothing billed or
                # lost); a 429 also slows every submit down (adaptive).
                if isinstance(exc, E.RateLimited):
                    # Never below a quarter of the configured rate: a burst of 429s
                    # (each with its own Retry-After) must not stall submits for minutes.
                    d.bucket.slow_down(floor_per_minute=d.config.gateway.requests_per_minute / 4)
                return Retry(exc.message, exc.retry_after, event=SubmitRefused())
            except E.CredentialsRefused as exc:
                return Pause("credentials", exc, event=SubmitRefused())
            except E.GatewayRejected as exc:
                # Refused (400, 404): no task, nothing billed -- the budget no longer
                # counts it -- and the job fails.
                d.put(job, SubmitRefused())
                exc.stage = "submitting"
                return Fail(exc)
            except E.JobError as exc:
                return Fail(exc)
            except Exception as exc:  # the outcome of this submit is unknown
                log.exception("job.submit_error", job_id=job.job_id)
                return Fail(
                    E.SubmitAmbiguous(f"The submit ended with an unexpected error: {exc!r}")
                )
        return Advance(
            Submitted(task_id=ref.task_id, poll_url=ref.poll_url, dialect=ref.dialect),
            at=d.clock()
            + d.estimator.first_poll_delay(
                task_kind(job.model, job.options, job.text), self.poll_interval, key=job.job_id
            ),
        )

    @property
    def poll_interval(self) -> float:
        gw = self.deps.config.gateway
        return gw.webhook_poll_interval if gw.webhook_url else gw.poll_interval
