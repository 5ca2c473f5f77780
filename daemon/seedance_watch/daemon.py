"""The one place that wires the daemon together, and its lifecycle.

``run_service`` reads as one screen: start-up (folders, the store, the provider,
the bucket, the engine and what it reports to) → the main loop (``run`` until a
signal, or one ``--once`` pass) → shutdown (a bounded drain, then everything
closed).  Signal handlers only set events; the main coroutine does the work.
SIGTERM and SIGINT stop intake and drain in-flight steps (bounded), a second SIGINT
exits at once (the ledger is consistent after every write, so that is safe).
SIGHUP reloads the config: the log format and level apply at once (the log handler
is re-created), any other change is logged as needing a restart.

Around the engine: sd_notify (READY=1 once the ledger is recovered and the inbox
watched, WATCHDOG=1 from this loop, STATUS= with job counts, STOPPING=1) and the
``health.listen`` server (``/healthz``, ``/metrics``, the status page, webhooks).
This module is the top floor: it may import every other; nothing imports it but
the command line and the demo.
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

from seedance_watch.commands.check import folder_findings
from seedance_watch.commands.requeue import requeue
from seedance_watch.commands.status import status_report
from seedance_watch.config import Config
from seedance_watch.errors import ConfigError
from seedance_watch.files.fsutil import make_dirs, path_error
from seedance_watch.files.inbox import Inbox
from seedance_watch.files.storage import Storage
from seedance_watch.ledger import database_url, host_name, open_reader, open_retries, open_store
from seedance_watch.ledger.base import DaemonRecorder
from seedance_watch.logs import configure_logging
from seedance_watch.pipeline.engine import Engine
from seedance_watch.pipeline.once import RunSummary
from seedance_watch.pipeline.providers import Providers
from seedance_watch.pipeline.view import EngineView
from seedance_watch.providers.base import ApiKeyLike, ProviderSpec, VideoProvider
from seedance_watch.providers.download import VideoDownloader
from seedance_watch.providers.keys import load_api_key
from seedance_watch.providers.registry import provider_spec
from seedance_watch.service.hooks import HookRunner
from seedance_watch.service.http import HealthServer, Heartbeat
from seedance_watch.service.metrics import Metrics
from seedance_watch.service.notify import Notifications
from seedance_watch.service.sdnotify import Notifier
from seedance_watch.service.web import PageSources

__all__ = [
    "EXIT_BUDGET",
    "EXIT_CREDENTIALS",
    "EXIT_FAILED_JOBS",
    "EXIT_OK",
    "EXIT_SIGINT",
    "EXIT_STORAGE",
    "RunResult",
    "changed_keys",
    "health_check",
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

    A folder that had to be created is logged as a warning naming its key (a typo in
    ``paths.inbox`` would otherwise swallow every drop silently).  A folder that cannot
    be created is a config problem naming its key (exit 2); a failing disk (EIO,
    ENOSPC on the fsync) is a :class:`DurabilityError`.
    """
    for finding in folder_findings(config.paths):
        if finding.level == "error":
            raise ConfigError(finding.message, key=finding.key)
        if finding.level == "warning":
            log.warning("daemon.folder_created", key=finding.key, path=str(finding.path))
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


def _providers(
    config: Config,
    spec: ProviderSpec,
    api_key: ApiKeyLike,
    environ: Mapping[str, str],
    metrics: Metrics,
    downloader: VideoDownloader,
) -> Providers:
    """The configured provider, and a way to build the provider of an older job."""
    gw = config.gateway
    connections = min(100, max(10, gw.max_in_flight * 2))

    def make(other: ProviderSpec, base_url: str, key: ApiKeyLike) -> VideoProvider:
        return other.make(
            base_url,
            key,
            request_timeout=gw.request_timeout,
            max_connections=connections,
            on_response=metrics.http_response,
            downloader=downloader,
        )

    def build(name: str) -> VideoProvider:
        # A job whose task another provider created (gateway.provider changed since):
        # that provider, at its own base URL, with its own key.
        other = provider_spec(name)
        log.info("provider.started", provider=name, base_url=other.base_url)
        return make(other, other.base_url, load_api_key(environ, other.keys))

    return Providers(make(spec, gw.base_url, api_key), build)


async def run_service(
    config: Config,
    api_key: ApiKeyLike,
    *,
    once: bool = False,
    environ: Mapping[str, str] | None = None,
    reload: Callable[[], Config] | None = None,
) -> RunResult:
    """Run the daemon (or one ``--once`` pass) until done or signalled.

    ``environ`` supplies ``NOTIFY_SOCKET``/``WATCHDOG_USEC`` and the hooks' base
    environment (default: the process environment); ``reload`` loads the config
    again on SIGHUP (None: SIGHUP only re-creates the log handler).
    """
    env = os.environ if environ is None else environ
    _make_dirs(config)
    store = open_store(config, environ=env)
    metrics = Metrics(job_counts=store.counts, kind_counts=store.counts_by_kind)
    spec = provider_spec(config.gateway.provider)
    gw = config.gateway
    downloader = VideoDownloader(
        request_timeout=gw.request_timeout,
        max_connections=min(100, max(10, gw.max_in_flight * 2)),
        on_response=metrics.http_response,
    )
    providers = _providers(config, spec, api_key, env, metrics, downloader)
    storage = Storage(config.storage)
    retries = open_retries(config, environ=env)
    hooks = None
    if config.hooks.on_done or config.hooks.on_failed:
        secrets = [api_key.reveal(), config.health.token or ""]
        hooks = HookRunner(config.hooks, env, secrets, scrub=spec.keys.variables)
    notes = (
        Notifications(config.notify, timezone=config.budget.timezone)
        if config.notify.urls
        else None
    )
    engine = Engine(
        config,
        store=store,
        storage=storage,
        providers=providers,
        downloader=downloader,
        inbox=Inbox(
            config.paths.inbox,
            settle_seconds=config.watch.settle_seconds,
            rescan_seconds=config.watch.rescan_seconds,
            pair_timeout=config.watch.pair_timeout,
            mode=config.watch.mode,
        ),
        observer=metrics,
        key_source=api_key.source,
        hooks=hooks,
        notes=notes,
        # A shared store keeps each host's pauses itself; the JSON-lines one, daemon.json.
        daemon_record=store.record_daemon if isinstance(store, DaemonRecorder) else None,
        retries=retries,
    )
    log.info("daemon.starting", once=once, state=str(config.paths.state), jobs=store.counts())
    try:
        if once:
            try:
                summary = await engine.run_once()
            finally:
                await engine.shutdown(DRAIN_SECONDS)
            return RunResult(_once_exit_code(summary), summary)
        # This host's name in a shared store; None on the JSON-lines ledger of one host.
        host = host_name(config) if database_url(config, env) is not None else None
        code = await _run_until_signalled(
            engine, config, spec, metrics, Notifier(env), reload, host=host
        )
        return RunResult(code, engine.summary)
    finally:
        if notes is not None:
            notes.close()
        await providers.aclose()
        await downloader.aclose()
        storage.close()
        retries.close()
        store.close()
        log.info("daemon.stopped")


async def _run_until_signalled(
    engine: Engine,
    config: Config,
    spec: ProviderSpec,
    metrics: Metrics,
    notifier: Notifier,
    reload: Callable[[], Config] | None,
    *,
    host: str | None = None,
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
    view = engine.view()
    server = _start_health(
        config,
        spec,
        view,
        metrics,
        heartbeat,
        # The pauses this daemon records, whatever their reason, as it holds them (no
        # store read: a database pause shows while the database is out of reach).
        paused=lambda: dict(engine.pauses.status.paused),
        host=host,
    )
    helpers = [
        asyncio.create_task(heartbeat.run(), name="heartbeat"),
        asyncio.create_task(notifier.watchdog_loop(lambda: status_line(view)), name="watchdog"),
        asyncio.create_task(_announce_ready(engine, view, notifier), name="ready"),
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


async def _announce_ready(engine: Engine, view: EngineView, notifier: Notifier) -> None:
    """READY=1 once recovery is done and the inbox is watched (``Engine.run`` order)."""
    await engine.inbox.watching.wait()
    log.info("daemon.ready", jobs=view.counts())
    notifier.ready(status_line(view))


def status_line(view: EngineView) -> str:
    """The STATUS= text: job counts by state, and why submissions are paused."""
    counts = view.counts()
    active = {k: n for k, n in counts.items() if n and k not in ("done", "failed")}
    detail = ", ".join(f"{k} {n}" for k, n in active.items())
    text = (
        f"jobs: {sum(active.values())} active"
        + (f" ({detail})" if detail else "")
        + f", {counts.get('done', 0)} done, {counts.get('failed', 0)} failed"
    )
    reasons = view.pauses()
    if reasons:
        text += "; paused: " + "; ".join(f"{k}: {v}" for k, v in reasons.items())
    return text


def _start_health(
    config: Config,
    spec: ProviderSpec,
    view: EngineView,
    metrics: Metrics,
    heartbeat: Heartbeat,
    *,
    paused: Callable[[], Mapping[str, Any]],
    host: str | None,
) -> HealthServer | None:
    """The ``health.listen`` server, or None without one.

    ``host``: this host's name in a shared store (None: the JSON-lines ledger).  On a
    shared store the page shows every host's jobs, read through the store's reader
    (this host's own, from the engine, while the database is out of reach), its hosts
    and their health, and ``/metrics`` the cluster's hosts.
    """
    if config.health.address is None:
        return None

    def retry(job_id: str, include_ambiguous: bool) -> tuple[list[str] | None, str]:
        result = requeue(config, [job_id], reader=reader, include_ambiguous=include_ambiguous)
        return result.moved.get(job_id), result.problems.get(job_id, "")

    def daemon() -> dict[str, Any]:
        return {"paused": paused(), "running": True, "pid": os.getpid()}

    reader = open_reader(config)
    shared = host is not None
    if host is not None:
        metrics.cluster(host, reader.hosts)
    sources = PageSources(
        check=health_check(heartbeat, view, paused),
        metrics=metrics.render,
        jobs=reader.snapshot if shared else view.jobs,
        report=lambda: status_report(reader),
        daemon=daemon,
        retry=retry,
        task_eta=view.task_eta,
        budget=view.budget,
        poke=view.poke,
        hosts=reader.hosts,
        owners=reader.owners,
        host=host,
        local_jobs=view.jobs if shared else None,
    )
    try:
        server = HealthServer(config, sources, webhook_path=spec.webhook_path)
    except OSError as exc:
        raise ConfigError(
            f"health.listen: cannot listen on {config.health.listen}: {exc.strerror or exc}"
        ) from None
    server.start()
    return server


def health_check(
    heartbeat: Heartbeat,
    view: EngineView,
    paused: Callable[[], Mapping[str, Any]] | None = None,
) -> Callable[[], tuple[bool, dict[str, Any]]]:
    """``/healthz``: healthy when the loop beats, the store takes a write now and no
    stage has stopped the engine.

    ``paused``: every pause the daemon records (reason → its entry), shown beside the
    engine's own (credentials, storage), whatever the reason: the budget, the database.
    """

    def pauses() -> dict[str, str]:
        reasons = dict(view.pauses())
        for reason, entry in (paused() if paused is not None else {}).items():
            if reason not in reasons and isinstance(entry, Mapping):
                reasons[str(reason)] = str(entry.get("message") or reason)[:160]
        return reasons

    def check() -> tuple[bool, dict[str, Any]]:
        alive = heartbeat.alive()
        writable = view.writable()
        stopped = view.fatal()
        return alive and writable and stopped is None, {
            "engine_error": stopped,
            "loop_alive": alive,
            "loop_heartbeat_age": round(heartbeat.age(), 3),
            "ledger_writable": writable,
            "ready": view.ready(),
            "jobs": view.counts(),
            "paused": pauses(),
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
    if (
        summary.storage_unavailable is not None
        or summary.database_unavailable is not None
        or summary.unfinished is not None
    ):
        return EXIT_STORAGE
    if summary.failed:
        return EXIT_FAILED_JOBS
    return EXIT_BUDGET if summary.budget_held is not None else EXIT_OK
