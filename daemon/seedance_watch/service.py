"""The daemon's lifecycle: start-up → main loop → shutdown, readable in one screen.

Signal handlers only set events; the main coroutine does the work.  SIGTERM and
SIGINT stop intake and drain in-flight steps (bounded), a second SIGINT exits at
once (the ledger is consistent after every write, so that is safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from .config import ApiKey, Config
from .engine import Engine, RunSummary
from .gateway import Gateway
from .inbox import Inbox
from .ledger import Ledger
from .metrics import Metrics
from .storage import Storage

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
EXIT_STORAGE = 1
EXIT_USAGE = 2
EXIT_CREDENTIALS = 3
EXIT_FAILED_JOBS = 4
EXIT_SIGINT = 130

DRAIN_SECONDS = 20.0


@dataclass
class RunResult:
    exit_code: int
    summary: RunSummary


def _make_dirs(config: Config) -> None:
    for path in (config.paths.inbox, config.paths.outbox, config.paths.done, config.paths.failed):
        path.mkdir(parents=True, exist_ok=True)


async def run_service(
    config: Config,
    api_key: ApiKey,
    *,
    once: bool = False,
    environ: Mapping[str, str] | None = None,
) -> RunResult:
    """Run the daemon (or one ``--once`` pass) until done or signalled."""
    _make_dirs(config)
    ledger = Ledger.open(config.paths.state)
    metrics = Metrics(job_counts=ledger.counts)
    gw = config.gateway

    def on_response(operation: str, status: int | None, seconds: float) -> None:
        metrics.http_responses.labels(operation=operation, status=str(status or "error")).inc()

    gateway = Gateway(
        gw.base_url,
        api_key,
        request_timeout=gw.request_timeout,
        max_connections=min(100, max(10, gw.max_in_flight * 2)),
        on_response=on_response,
    )
    storage = Storage(config.storage)
    engine = Engine(
        config,
        ledger=ledger,
        storage=storage,
        gateway=gateway,
        inbox=Inbox(
            config.paths.inbox,
            settle_seconds=config.watch.settle_seconds,
            rescan_seconds=config.watch.rescan_seconds,
            pair_timeout=config.watch.pair_timeout,
            mode=config.watch.mode,
        ),
        metrics=metrics,
        key_source=api_key.source,
    )
    log.info("daemon.starting", once=once, state=str(config.paths.state), jobs=ledger.counts())
    try:
        if once:
            try:
                summary = await engine.run_once()
            finally:
                await engine.shutdown(DRAIN_SECONDS)
            return RunResult(_once_exit_code(summary), summary)
        code = await _run_until_signalled(engine)
        return RunResult(code, engine.summary)
    finally:
        await gateway.aclose()
        storage.close()
        ledger.close()
        log.info("daemon.stopped")


async def _run_until_signalled(engine: Engine) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if signum == signal.SIGINT and signal.SIGINT in received:
            log.warning("daemon.second_sigint")
            os._exit(EXIT_SIGINT)
        received.append(signum)
        log.info("daemon.signal", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        try:
            await engine.run(stop)
        finally:
            await engine.shutdown(DRAIN_SECONDS)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
    return EXIT_SIGINT if signal.SIGINT in received else EXIT_OK


def _once_exit_code(summary: RunSummary) -> int:
    if summary.credentials_refused is not None:
        return EXIT_CREDENTIALS
    if summary.storage_unavailable is not None:
        return EXIT_STORAGE
    return EXIT_FAILED_JOBS if summary.failed else EXIT_OK
