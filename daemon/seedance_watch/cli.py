"""The ``seedance-watch`` command line: parses arguments, loads config, calls the rest.

Exit codes (docs/design.md, "Exit codes"): 0 success, 1 the bucket refused us (``--once``), 2 usage
or config error, 3 the gateway refused our credentials, 4 ``--once`` finished with failed jobs, 130
SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from seedance_watch import __version__
from seedance_watch.commands.terminal import printable
from seedance_watch.errors import ConfigError, LedgerLocked, StateError

__all__ = ["main"]

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seedance-watch",
        description="Turn images dropped in a folder into Seedance videos.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            type=Path,
            default=None,
            help="config file (default: $SEEDANCE_WATCH_CONFIG)",
        )

    run = sub.add_parser("run", help="run the daemon in the foreground")
    with_config(run)
    run.add_argument(
        "--once",
        action="store_true",
        help="process the inbox and every unfinished job, then exit",
    )

    status = sub.add_parser("status", help="jobs by state, from the ledger")
    with_config(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    costs = sub.add_parser("costs", help="spend and submits per day and model, from the ledger")
    with_config(costs)
    costs.add_argument(
        "--days", type=_positive_int, default=30, metavar="N", help="look back N days (30)"
    )
    costs.add_argument("--json", action="store_true", help="machine-readable output")

    retry = sub.add_parser("retry", help="move failed jobs' inputs back to the inbox")
    with_config(retry)
    retry.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    retry.add_argument("--failed", action="store_true", help="every failed job")
    retry.add_argument(
        "--include-ambiguous",
        action="store_true",
        help="also submit_ambiguous and task_timeout jobs, whose task may exist and be "
        "billed (a retry may pay twice)",
    )

    validate = sub.add_parser("validate", help="check images and sidecars offline")
    validate.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    validate.add_argument(
        "--config", type=Path, default=None, help="use this config's defaults and model"
    )
    validate.add_argument(
        "--strict", action="store_true", help="refuse model names the daemon does not know"
    )

    health = sub.add_parser(
        "health", help="ask a running daemon's /healthz (health.listen); exit 0 when healthy"
    )
    with_config(health)
    health.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")

    demo = sub.add_parser("demo", help="the whole flow offline, with a built-in simulator")
    demo.add_argument("--folder", type=Path, default=Path("demo"), help="default: ./demo")
    demo.add_argument(
        "--kind",
        choices=("image", "seedance2", "frames", "text", "reference", "all"),
        default="image",
        help="what to drop: an image (default model), an image for a Seedance 2 model, a "
        "first and last frame, a text sidecar, reference images, or all of them",
    )

    ledger = sub.add_parser("ledger", help="the store of jobs: move it into a shared database")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    ledger_import = ledger_sub.add_parser(
        "import",
        help="copy the JSON-lines ledger (paths.state) into cluster.database, once",
    )
    with_config(ledger_import)

    check = sub.add_parser(
        "check",
        help="what run checks before it is ready: folders, the bucket, the API key "
        "(nothing is created, uploaded or paid)",
    )
    with_config(check)

    models = sub.add_parser(
        "models", help="the Seedance models: kinds, options, prices, live or retired"
    )
    models.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("simulator", help="run the built-in Pixazo simulator", add_help=False)
    return parser


def _say(text: str, *, err: bool = False) -> None:
    """Print one line whose parts may come from a file name, a sidecar or the gateway:
    control characters escaped (:func:`~seedance_watch.commands.terminal.printable`)."""
    print(printable(text), file=sys.stderr if err else sys.stdout)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "simulator":
        from seedance_watch.simulator import main as simulator_main

        return simulator_main(args_list[1:])
    args = _parser().parse_args(args_list)
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a reader gone away (`status | head`) shows here, not at exit
        return code
    except BrokenPipeError:
        _drop_stdout()
        return 1
    except ConfigError as exc:
        _say(f"seedance-watch: config error: {exc.message}", err=True)
        return EXIT_USAGE
    except LedgerLocked as exc:
        _say(f"seedance-watch: {exc.message}", err=True)
        return EXIT_USAGE
    except StateError as exc:
        _say(f"seedance-watch: state error: {exc.message}", err=True)
        return 1


def _drop_stdout() -> None:
    """Send what is left of stdout to /dev/null: the pipe's reader has gone (as after
    ``status | head``), and the flush at exit must not fail again with a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _dispatch(args: argparse.Namespace) -> int:
    from seedance_watch.config import load_config

    if args.command == "demo":
        from seedance_watch.demo import run_demo

        return run_demo(args.folder, args.kind)
    if args.command == "validate":
        return _validate(args)
    if args.command == "models":
        from seedance_watch.commands.models import format_models, models_report

        print(json.dumps(models_report(), indent=2) if args.json else format_models())
        return 0
    config = load_config(args.config, os.environ)
    if args.command == "run":
        return _run(config, once=args.once, config_path=args.config)
    if args.command == "health":
        return _health(config, args.timeout)
    if args.command == "status":
        from seedance_watch.commands.status import format_status, status_report
        from seedance_watch.ledger import open_reader

        with contextlib.closing(open_reader(config)) as reader:
            report = status_report(reader)
            missing = None if reader.exists() else reader.where
        print(json.dumps(report, indent=2) if args.json else format_status(report, missing=missing))
        return 0
    if args.command == "costs":
        from seedance_watch.commands.costs import costs_report, format_costs
        from seedance_watch.ledger import open_reader

        with contextlib.closing(open_reader(config)) as reader:
            costs = costs_report(reader, config.budget, now=time.time(), days=args.days)
        print(json.dumps(costs, indent=2) if args.json else format_costs(costs))
        return 0
    if args.command == "retry":
        return _retry(config, args)
    if args.command == "ledger":
        return _ledger_import(config)
    if args.command == "check":
        from seedance_watch.commands.check import run_checks
        from seedance_watch.logs import configure_logging

        # The report is the output; the log (its requests) goes to stderr, warnings only.
        configure_logging(fmt=config.log.format, level="warning")
        checked = run_checks(config, os.environ)
        for line in checked.text().splitlines():  # a folder's name or a peer's words
            _say(line)
        return checked.exit_code
    raise AssertionError(args.command)


def _run(config: object, *, once: bool, config_path: Path | None) -> int:
    from seedance_watch.config import Config, load_config
    from seedance_watch.daemon import run_service
    from seedance_watch.logs import configure_logging, register_secret
    from seedance_watch.providers.keys import load_api_key
    from seedance_watch.providers.registry import provider_spec

    assert isinstance(config, Config)
    configure_logging(fmt=config.log.format, level=config.log.level)
    api_key = load_api_key(os.environ, provider_spec(config.gateway.provider).keys)
    register_secret(api_key.reveal())
    try:
        result = asyncio.run(
            run_service(
                config,
                api_key,
                once=once,
                reload=lambda: load_config(config_path, os.environ),
            )
        )
    except KeyboardInterrupt:
        return 130
    return result.exit_code


def _health(config: object, timeout: float) -> int:
    """The container's HEALTHCHECK: 0 when /healthz answers 200, 1 otherwise."""
    from seedance_watch.config import Config
    from seedance_watch.service.http import probe

    assert isinstance(config, Config)
    address = config.health.address
    if address is None:
        _say("seedance-watch health: health.listen is not set", err=True)
        return EXIT_USAGE
    try:
        status, body = probe(address, timeout=timeout, token=config.health.token)
    except OSError as exc:
        _say(f"seedance-watch health: {config.health.listen}: {exc}", err=True)
        return 1
    _say(body)
    return 0 if status == 200 else 1


def _ledger_import(config: object) -> int:
    from seedance_watch.commands.ledger import import_ledger
    from seedance_watch.config import Config
    from seedance_watch.logs import configure_logging

    assert isinstance(config, Config)
    configure_logging(fmt=config.log.format, level=config.log.level)
    result = import_ledger(config, os.environ)
    if result is None:
        print(f"no ledger at {config.paths.state}: nothing to import", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def _retry(config: object, args: argparse.Namespace) -> int:
    from seedance_watch.commands.requeue import requeue
    from seedance_watch.config import Config

    assert isinstance(config, Config)
    if not args.job_ids and not args.failed:
        _say("seedance-watch retry: give JOB_ID... or --failed", err=True)
        return EXIT_USAGE
    result = requeue(
        config, args.job_ids, all_failed=args.failed, include_ambiguous=args.include_ambiguous
    )
    for job_id, paths in result.moved.items():
        _say(f"{job_id}: back in the inbox as {', '.join(paths)}")
    for job_id, why in result.skipped.items():
        _say(f"{job_id}: skipped: {why}; --include-ambiguous retries it anyway")
    for job_id, why in result.problems.items():
        _say(f"{job_id}: not retried: {why}", err=True)
    if not result.moved and not result.problems and not result.skipped:
        _say("no failed jobs to retry")
    return 1 if result.problems else 0


def _validate(args: argparse.Namespace) -> int:
    from seedance_watch.commands.validate import validate_paths
    from seedance_watch.config import BUILTIN_DEFAULTS, GatewayConfig, load_config

    strict = args.strict
    inbox: Path | None = None
    if args.config is not None:
        config = load_config(args.config, os.environ)
        defaults, gateway = config.defaults, config.gateway
        strict = strict or config.gateway.strict_model
        inbox = config.paths.inbox
    else:
        defaults, gateway = BUILTIN_DEFAULTS, GatewayConfig()
    pairs, problems = validate_paths(
        args.paths,
        defaults=defaults,
        models=gateway.models,
        strict_model=strict,
        inbox=inbox,
        passed=lambda drop: _say(f"{drop.path}: ok: {drop.text()}"),
    )
    for problem in problems:
        _say(f"{problem.path}: {problem.code}: {problem.message}")
    _say(f"{pairs} drop(s) checked, {len(problems)} problem(s)")
    return 1 if problems else 0
