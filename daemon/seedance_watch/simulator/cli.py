"""``seedance-watch simulator``: the built-in Pixazo gateway alone, in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from seedance_watch.simulator.config import FAULT_TARGETS, SimulatorConfig
from seedance_watch.simulator.server import serve

__all__ = ["main"]

_FAULTS = (
    "error_5xx_rate",
    "drop_connection_rate",
    "slow_reply_rate",
    "submit_accept_then_drop_rate",
    "fail_task_rate",
    "expire_task_rate",
    "truncate_video_rate",
    "rate_429",
    "cancel_task_rate",
    "submit_status_rate",
)


def _parser() -> argparse.ArgumentParser:
    defaults = SimulatorConfig()
    p = argparse.ArgumentParser(
        prog="seedance-watch simulator",
        description="A local Pixazo gateway (Seedance 1.0 Pro and Seedance 2, as it answers "
        "today) for tests and demos.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port (default 8765)")
    p.add_argument(
        "--api-key",
        default=defaults.api_key,
        help="the key to accept, a placeholder (default: %(default)s)",
    )
    p.add_argument("--queued-seconds", type=float, default=defaults.queued_seconds)
    p.add_argument("--running-seconds", type=float, default=defaults.running_seconds)
    p.add_argument("--max-concurrent", type=int, default=None)
    p.add_argument("--concurrency-mode", choices=("queue", "reject"), default="queue")
    p.add_argument("--rate-limit-per-minute", type=int, default=None)
    p.add_argument("--status-style", choices=("modelark", "pixazo"), default="modelark")
    p.add_argument(
        "--submit-answer",
        choices=("id", "envelope"),
        default=defaults.submit_answer,
        help='answer submits {"id"} or with the envelope (request_id, polling_url)',
    )
    p.add_argument("--polling-origin", default=None, help="origin written into polling_url")
    p.add_argument("--media-url-style", choices=("string", "list", "alternate"), default="string")
    p.add_argument("--error-style", choices=("object", "string", "alternate"), default="object")
    p.add_argument(
        "--submit-status-codes",
        default=",".join(str(c) for c in defaults.submit_status_codes),
        help="comma-separated statuses that --submit-status-rate draws from (default 502,504)",
    )
    p.add_argument("--webhook-timeout", type=float, default=defaults.webhook_timeout)
    p.add_argument(
        "--video-seconds",
        type=float,
        default=defaults.video_seconds,
        help="every clip's length, overriding the duration each task asked for",
    )
    p.add_argument(
        "--auto-seconds",
        type=int,
        default=defaults.auto_seconds,
        help="the length a Seedance 2 model picks for duration -1 (default: %(default)s)",
    )
    p.add_argument("--video-fps", type=int, default=defaults.video_fps)
    p.add_argument("--video-max-side", type=int, default=defaults.video_max_side)
    p.add_argument("--video-ttl-seconds", type=float, default=defaults.video_ttl_seconds)
    p.add_argument("--seed", type=int, default=0, help="seed of the fault dice")
    p.add_argument("--slow-reply-seconds", type=float, default=defaults.slow_reply_seconds)
    p.add_argument(
        "--faults-on",
        default=",".join(sorted(FAULT_TARGETS)),
        help="comma-separated: submit,poll,video",
    )
    p.add_argument("--credit-exhausted", action="store_true", help="answer 402")
    p.add_argument("--access-denied", action="store_true", help="answer 403")
    for name in _FAULTS:
        p.add_argument("--" + name.replace("_", "-"), type=float, default=0.0, metavar="RATE")
    return p


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; 0 then, 2 on bad arguments."""
    args = _parser().parse_args(argv)
    skip = ("host", "port", "faults_on", "submit_status_codes")
    knobs = {k: v for k, v in vars(args).items() if k not in skip}
    faults_on = frozenset(t.strip() for t in args.faults_on.split(",") if t.strip())
    try:
        codes = tuple(int(c) for c in args.submit_status_codes.split(",") if c.strip())
        config = SimulatorConfig(faults_on=faults_on, submit_status_codes=codes, **knobs)
    except ValueError as exc:
        print(f"seedance-watch simulator: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(config, args.host, args.port))
    except OSError as exc:
        print(
            f"seedance-watch simulator: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 2
    return 0


async def _run(config: SimulatorConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def ready(url: str) -> None:
        print(f"Pixazo simulator listening on {url} (API key: {config.api_key})", flush=True)

    server = asyncio.create_task(serve(config, host, port, on_ready=ready))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({server, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (server, stopper):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server  # re-raises a start-up error (e.g. the port is taken)
