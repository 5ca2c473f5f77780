"""Power-loss crash states, the wide version: every cut point of a longer recording.

    python bench/crash_states.py [--pairs 6] [--cap 64] [--recoveries 40] [--seed 1]
                                 [--move-order real|old|safe] [--fresh-state]
                                 [--compact-every N]

Records the real daemon (in-process, against the simulator and the S3 emulator
on loopback) doing ``--pairs`` image + sidecar jobs, with every file-system
operation under its folders; then, for every cut point of that list, builds up
to ``--cap`` of the states a POSIX file system may leave after a power cut there
(``tests/crashfs/states.py`` states the model), checks each one and runs the
daemon's recovery (``run --once``) on ``--recoveries`` of them, spread evenly.
``--move-order old`` replays defect 5 (the explorer must find it), ``safe`` the
order its fix asks for, ``real`` whatever ``move_file`` does on this tree;
``--fresh-state`` lets the daemon create ``state/`` itself (defect 6), and
``--compact-every N`` makes the ledger rotate and snapshot every N lines.

Prints the machine, the parameters, how many ops, cut points and states it
explored, the time, and each kind of violation with an example.  Exit status 1
if anything was found.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import print_header  # noqa: E402
from tests.crashfs.explorer import explore  # noqa: E402
from tests.crashfs.scenario import record_jobs, simulator_config  # noqa: E402
from tests.test_power_loss import old_move_file, safe_move_file  # noqa: E402

from seedance_watch.files import fsutil  # noqa: E402
from seedance_watch.simulator import Simulator  # noqa: E402
from seedance_watch.testing.s3emulator import EMULATOR_CREDENTIALS, S3Emulator  # noqa: E402

BUCKET = "bench-bucket"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6, help="jobs in the recorded run")
    parser.add_argument("--cap", type=int, default=64, help="states per cut point, at most")
    parser.add_argument("--recoveries", type=int, default=40, help="daemon runs on states")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--move-order", choices=("real", "old", "safe"), default="real")
    parser.add_argument("--fresh-state", action="store_true", help="no state/ before the run")
    parser.add_argument(
        "--compact-every", type=int, default=None, help="ledger compaction floor (lines)"
    )
    parser.add_argument("--examples", type=int, default=1, help="examples shown per kind")
    parser.add_argument("--dir", type=Path, default=None, help="where to make the temp folder")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    os.environ.update(EMULATOR_CREDENTIALS)
    print_header(
        "crash states after a power cut (ALICE-style explorer)",
        {
            "pairs": args.pairs,
            "cap": args.cap,
            "recoveries": args.recoveries,
            "seed": args.seed,
            "move_order": args.move_order,
            "fresh_state": args.fresh_state,
            "compact_every": args.compact_every,
        },
    )
    if args.move_order != "real":
        fsutil.move_file = old_move_file if args.move_order == "old" else safe_move_file
    tmp = Path(tempfile.mkdtemp(prefix="crash-states-", dir=args.dir))
    started = time.monotonic()
    with S3Emulator(BUCKET) as s3, Simulator(simulator_config()) as sim:
        workload = record_jobs(
            tmp / "recorded",
            s3,
            sim,
            bucket=BUCKET,
            pairs=args.pairs,
            fresh_state=args.fresh_state,
            compact_every=args.compact_every,
        )
        recorded = time.monotonic() - started
        scratch = tmp / "scratch"
        scratch.mkdir()
        report = explore(
            workload, sim, scratch, cap=args.cap, seed=args.seed, recoveries=args.recoveries
        )
    ops = workload.recording.ops
    kinds: dict[str, int] = {}
    for op in ops:
        name = f"{type(op).__name__.removesuffix('Op').lower()}:{op.kind}"
        kinds[name] = kinds.get(name, 0) + 1
    print("recorded")
    print(f"  run --once          exit {workload.result.exit_code}, {recorded:.1f} s")
    print(f"  operations          {len(ops)}  {dict(sorted(kinds.items()))}")
    print("explored")
    print(f"  cut points          {report.cuts}  (every one)")
    print(f"  states              {report.states}  ({report.distinct} distinct)")
    print(f"  ledger recoveries   {report.ledger_opens}  (distinct state folders opened)")
    print(f"  daemon recoveries   {report.recoveries}  (run --once on a copy of a state)")
    print(f"  explorer time       {report.seconds:.1f} s")
    print(f"  wall time           {time.monotonic() - started:.1f} s")
    print("found")
    for line in report.summary(examples=args.examples).splitlines()[1:]:
        print(f"  {line}")
    if report.counts or report.model_errors:
        print(f"  folders kept in {tmp}")
        return 1
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
