"""The daemon's lifecycle: start-up → main loop → shutdown, readable in one screen.

Signal handlers only set events; the main coroutine does the work.  SIGTERM and
SIGINT stop intake and drain in-flight steps (bounded), a second SIGINT exits at
once (the ledger is consistent after every write, so that is safe).  SIGHUP
reloads the config: the log format and level apply at once (the log handler is
re-created), any other change is logged as needing a restart.

Around the engine: sd_notify (READY=1 once the ledger is recovered and the inbox
watched, WATCHDOG=1 from this loop, STATUS= with job counts, STOPPING=1) and the
``health.listen`` endpoint (``/healthz``, ``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from seedance_watch.config import Config
from seedance_watch.errors import ConfigError
from seedance_watch.files.fsutil import make_dirs, path_error
from seedance_watch.files.inbox import Inbox
from seedance_watch.files.storage import Storage
from seedance_watch.ledger.base import JobStore
from seedance_watch.ledger.jsonl import Ledger
from seedance_watch.logs import configure_logging, redact_text
from seedance_watch.pipeline.engine import Engine, RunSummary
from seedance_watch.providers.base import ApiKeyLike
from seedance_watch.providers.download import VideoDownloader
from seedance_watch.providers.registry import provider_spec
from seedance_watch.service.hooks import HookRunner
from seedance_watch.service.http import HealthServer, Heartbeat
from seedance_watch.service.metrics import Metrics
from seedance_watch.service.notify import Notifications
from seedance_watch.service.sdnotify import Notifier

__all__ = [
    "EXIT_CREDENTIALS",
    "EXIT_FAILED_JOBS",
    "EXIT_OK",
    "EXIT_SIGINT",
    "EXIT_STORAGE",
    "RunResult",
    "run_service",
]

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_STORAGE = 1  # --once: the bucket refuses us, or the store/gateway stays unreachable
EXIT_CREDENTIALS = 3
EXIT_FAILED_JOBS = 4
EXIT_BUDGET = 5
EXIT_SIGINT = 130

DRAIN_SECONDS = 20.0


@dataclass
class RunResult:
    exit_code: int
    summary: RunSummary


def _make_dirs(config: Config) -> None:
    """Create the four folders durably (each new folder's parent fsynced).

    A folder that cannot be created is a config problem naming its key (exit 2); a
    failing disk (EIO, ENOSPC on the fsync) is a :class:`DurabilityError`.
    """
    paths = config.paths
    for key, path in (
        ("inbox", paths.inbox),
        ("outbox", paths.outbox),
        ("done", paths.done),
        ("failed", paths.failed),
    ):
        try:
            make_dirs(path)
        except OSError as exc:
            raise path_error(
                exc,
                f"paths.{key}",
                unusable=f"paths.{key} {path} cannot be created: {exc.strerror or exc}",
                failing=f"cannot create paths.{key} {path} durably: {exc}",
            ) from exc


async def run_service(
    config: Config,
    api_key: ApiKeyLike,
    *,
    once: bool = False,
    environ: Mapping[str, str] | None = None,
    reload: Callable[[], Config] | None = None,
) -> RunResult:
    """Run the daemon (or one ``--once`` pass) until done or signalled.

    ``environ`` supplies ``NOTIFY_SOCKET``/``WATCHDOG_USEC`` (default: the process
    environment); ``reload`` loads the config again on SIGHUP (None: SIGHUP only
    re-creates the log handler).
    """
    _make_dirs(config)
    ledger = Ledger.open(config.paths.state)
    metrics = Metrics(job_counts=ledger.counts, kind_counts=ledger.counts_by_kind)
    gw = config.gateway

    def on_response(operation: str, status: int | None, seconds: float) -> None:
        metrics.http_responses.labels(operation=operation, status=str(status or "error")).inc()

    connections = min(100, max(10, gw.max_in_flight * 2))
    downloader = VideoDownloader(
        request_timeout=gw.request_timeout, max_connections=connections, on_response=on_response
    )
    spec = provider_spec(gw.provider)
    gateway = spec.make(
        gw.base_url,
        api_key,
        request_timeout=gw.request_timeout,
        max_connections=connections,
        on_response=on_response,
        downloader=downloader,
    )
    storage = Storage(config.storage)
    secrets = [api_key.reveal(), config.health.token or ""]
    hooks = None
    if config.hooks.on_done or config.hooks.on_failed:
        hooks = HookRunner(config.hooks, os.environ if environ is None else environ, secrets)
    notes = (
        Notifications(config.notify, timezone=config.budget.timezone)
        if config.notify.urls
        else None
    )
    engine = Engine(
        config,
        ledger=ledger,
        storage=storage,
        provider=gateway,
        downloader=downloader,
        inbox=Inbox(
            config.paths.inbox,
            settle_seconds=config.watch.settle_seconds,
            rescan_seconds=config.watch.rescan_seconds,
            pair_timeout=config.watch.pair_timeout,
            mode=config.watch.mode,
        ),
        metrics=metrics,
        key_source=api_key.source,
        hooks=hooks,
        notes=notes,
    )
    log.info("daemon.starting", once=once, state=str(config.paths.state), jobs=ledger.counts())
    try:
        if once:
            try:
                summary = await engine.run_once()
            finally:
                await engine.shutdown(DRAIN_SECONDS)
            return RunResult(_once_exit_code(summary), summary)
        env = os.environ if environ is None else environ
        code = await _run_until_signalled(engine, config, Notifier(env), reload)
        return RunResult(code, engine.summary)
    finally:
        if notes is not None:
            notes.close()
        await gateway.aclose()
        storage.close()
        ledger.close()
        log.info("daemon.stopped")


async def _run_until_signalled(
    engine: Engine, config: Config, notifier: Notifier, reload: Callable[[], Config] | None
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hup = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if signum == signal.SIGINT and signal.SIGINT in received:
            log.warning("daemon.second_sigint")
            os._exit(EXIT_SIGINT)
        received.append(signum)
        log.info("daemon.signal", signal=signal.Signals(signum).name)
        stop.set()

    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    heartbeat = Heartbeat()
    server = _start_health(config, engine, heartbeat)
    helpers = [
        asyncio.create_task(heartbeat.run(), name="heartbeat"),
        asyncio.create_task(notifier.watchdog_loop(lambda: status_line(engine)), name="watchdog"),
        asyncio.create_task(_announce_ready(engine, notifier), name="ready"),
        asyncio.create_task(_reload_on_hup(hup, config, reload), name="reload"),
    ]
    try:
        try:
            await engine.run(stop)
        finally:
            notifier.stopping()
            log.info("daemon.draining", grace=DRAIN_SECONDS)
            await engine.shutdown(DRAIN_SECONDS)
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        if server is not None:
            server.close()
        for signum in signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
    return EXIT_SIGINT if signal.SIGINT in received else EXIT_OK


async def _announce_ready(engine: Engine, notifier: Notifier) -> None:
    """READY=1 once recovery is done and the inbox is watched (``Engine.run`` order)."""
    await engine.inbox.watching.wait()
    log.info("daemon.ready", jobs=engine.ledger.counts())
    notifier.ready(status_line(engine))


def status_line(engine: Engine) -> str:
    """The STATUS= text: job counts by state, and why submissions are paused."""
    counts = engine.ledger.counts()
    active = {k: n for k, n in counts.items() if n and k not in ("done", "failed")}
    detail = ", ".join(f"{k} {n}" for k, n in active.items())
    text = (
        f"jobs: {sum(active.values())} active"
        + (f" ({detail})" if detail else "")
        + f", {counts.get('done', 0)} done, {counts.get('failed', 0)} failed"
    )
    reasons = pause_reasons(engine)
    if reasons:
        text += "; paused: " + "; ".join(f"{k}: {v}" for k, v in reasons.items())
    return text


def pause_reasons(engine: Engine) -> dict[str, str]:
    """Why submissions (credentials) or uploads (storage) are paused, if they are."""
    out: dict[str, str] = {}
    for name, breaker in (("credentials", engine.credentials), ("storage", engine.store_breaker)):
        if breaker.reason is not None:
            out[name] = redact_text(breaker.reason)[:160]
    return out


def _start_health(config: Config, engine: Engine, heartbeat: Heartbeat) -> HealthServer | None:
    address = config.health.address
    if address is None:
        return None
    check = health_check(
        heartbeat,
        engine.ledger,
        ready=engine.inbox.watching.is_set,
        paused=lambda: pause_reasons(engine),
        fatal=lambda: None if engine.fatal is None else engine.fatal.message,
    )
    try:
        server = HealthServer(
            config,
            check=check,
            metrics=engine.metrics,
            jobs=engine.ledger.snapshot,
            task_eta=engine.deps.estimator.typical,
            budget_view=engine.budget.view,
            on_webhook=engine.poke,
        )
    except OSError as exc:
        raise ConfigError(
            f"health.listen: cannot listen on {config.health.listen}: {exc.strerror or exc}"
        ) from None
    server.start()
    return server


def health_check(
    heartbeat: Heartbeat,
    ledger: JobStore,
    *,
    ready: Callable[[], bool],
    paused: Callable[[], Mapping[str, str]],
    fatal: Callable[[], str | None] = lambda: None,
) -> Callable[[], tuple[bool, dict[str, Any]]]:
    """``/healthz``: healthy when the loop beats, the ledger takes a write now and no
    stage has stopped the engine."""

    def check() -> tuple[bool, dict[str, Any]]:
        alive = heartbeat.alive()
        writable = ledger.writable()
        stopped = fatal()
        return alive and writable and stopped is None, {
            "engine_error": stopped,
            "loop_alive": alive,
            "loop_heartbeat_age": round(heartbeat.age(), 3),
            "ledger_writable": writable,
            "ready": ready(),
            "jobs": ledger.counts(),
            "paused": dict(paused()),
        }

    return check


async def _reload_on_hup(
    hup: asyncio.Event, running: Config, reload: Callable[[], Config] | None
) -> None:
    """On SIGHUP: re-create the log handler and apply the new log settings.

    Everything else is fixed for the life of the process; a changed key is logged
    (``config.reload_needs_restart``) rather than half-applied.
    """
    while True:
        await hup.wait()
        hup.clear()
        log.info("daemon.signal", signal="SIGHUP")
        new = running
        if reload is not None:
            try:
                new = await asyncio.to_thread(reload)
            except ConfigError as exc:
                log.error("config.reload_failed", error=exc.message)
                continue
        # Said before the switch, so it shows at the old level and in the old format.
        log.info("config.reloaded", log_format=new.log.format, log_level=new.log.level)
        configure_logging(fmt=new.log.format, level=new.log.level)
        restart = [k for k in changed_keys(running, new) if not k.startswith("log.")]
        if restart:
            log.warning("config.reload_needs_restart", keys=restart)


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted names of the config keys whose values differ."""
    out: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{prefix}{key}.")
        elif a != b:
            out.append(prefix.rstrip("."))

    walk(old.model_dump(), new.model_dump(), "")
    return out


def _once_exit_code(summary: RunSummary) -> int:
    if summary.credentials_refused is not None:
        return EXIT_CREDENTIALS
    if summary.storage_unavailable is not None or summary.unfinished is not None:
        return EXIT_STORAGE
    if summary.failed:
        return EXIT_FAILED_JOBS
    return EXIT_BUDGET if summary.budget_held is not None else EXIT_OK
