"""Crash torture, the long version: hundreds of SIGKILLs of the real daemon.

    python bench/torture.py [--kills 300] [--pairs 24] [--kills-per-batch 30] [--seed 1]
                            [--kinds]

Runs batches of ``--pairs`` pairs (a third in subfolders) against the simulator and
the S3 emulator on loopback.  Each batch SIGKILLs the daemon (a subprocess) at
seeded random stage events ``--kills-per-batch`` times, restarting it each time,
then finishes with ``run --once``; batches repeat until ``--kills`` kills are done.
With ``--kinds`` a batch mixes the three kinds of drop (docs/design.md, "Pairing"): every third a
first-and-last-frame drop of three files, every fifth a text drop (a sidecar alone),
and the checker also wants each drop's files together, with one suffix.
The independent checker of ``tests/test_crash.py`` (written from the contract in docs/design.md, not
from the daemon's code) then counts, over all batches: lost inputs, duplicate
outputs, drops split apart, wrong output metadata, staging leftovers, duplicate
submits (other than jobs reported ``submit_ambiguous``) and ambiguous jobs.  Exit
status 1 if any count that must be zero is not.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_crash import torture, torture_simulator_config  # noqa: E402

from seedance_watch.simulator import Simulator  # noqa: E402
from seedance_watch.testing.s3emulator import EMULATOR_CREDENTIALS, S3Emulator  # noqa: E402

BUCKET = "test-bucket"
MUST_BE_ZERO = (
    "lost_inputs",
    "left_in_inbox",
    "split_drops",
    "duplicate_outputs",
    "wrong_videos",
    "wrong_metadata",
    "staging_leftovers",
    "empty_files",
    "bad_json",
    "missing_reports",
    "duplicate_submits",
    "unexpected_failures",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=300, help="SIGKILLs in total")
    parser.add_argument("--pairs", type=int, default=24, help="pairs per batch")
    parser.add_argument("--kills-per-batch", type=int, default=30)
    parser.add_argument("--max-events", type=int, default=10, help="stage events per life, max")
    parser.add_argument("--max-in-flight", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="where to make the temp folder")
    parser.add_argument(
        "--kinds", action="store_true", help="mix image, frames and text drops in each batch"
    )
    args = parser.parse_args()
    # The in-process simulator logs every task at debug; keep the figures readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    os.environ.update(EMULATOR_CREDENTIALS)
    os.environ["SEEDANCE_WATCH_GATEWAY__MAX_IN_FLIGHT"] = str(args.max_in_flight)

    print("seedance-watch crash torture")
    print(f"  date      {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")
    print(f"  machine   {platform.platform()}; {os.cpu_count()} CPUs")
    print(f"  python    {sys.version.split()[0]}")
    print(
        f"  params    kills={args.kills} pairs/batch={args.pairs} "
        f"kills/batch={args.kills_per_batch} max-events={args.max_events} "
        f"max-in-flight={args.max_in_flight} seed={args.seed} kinds={args.kinds}"
    )
    totals: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    done_kinds: Counter[str] = Counter()
    examples: list[str] = []
    started = time.monotonic()
    kills = batches = 0
    # Kept on failure, for the post-mortem (removed when every check passed).
    tmp = tempfile.mkdtemp(prefix="torture-", dir=args.dir)
    with S3Emulator(BUCKET) as s3:
        while kills < args.kills:
            seed = args.seed * 1_000_003 + batches
            folder = Path(tmp) / f"batch-{batches:03d}"
            folder.mkdir()
            batch_kills = min(args.kills_per_batch, args.kills - kills)
            with Simulator(torture_simulator_config(seed)) as sim:
                result = torture(
                    folder,
                    s3,
                    sim,
                    pairs=args.pairs,
                    kills=batch_kills,
                    seed=seed,
                    max_events=args.max_events,
                    kinds=args.kinds,
                )
            v = result.verdict
            kills += result.kills
            batches += 1
            phases.update(result.phases)
            totals["jobs"] += args.pairs
            totals["done"] += v.done
            totals["failed"] += v.failed
            totals["ambiguous"] += v.ambiguous
            done_kinds.update(v.done_kinds)
            for name, found in v.problems().items():
                totals[name] += len(found)
                examples += [f"batch {batches - 1} seed {seed}: {name}: {x}" for x in found[:3]]
            print(
                f"  batch {batches - 1:3d}: {result.kills} kills, {v.done} done, "
                f"{v.failed} failed ({v.ambiguous} ambiguous), problems "
                f"{sum(len(x) for x in v.problems().values())}, {result.seconds:.1f} s",
                flush=True,
            )
    wall = time.monotonic() - started
    print("\nresults")
    print(f"  kills               {kills}  (in {batches} batches)")
    print(f"  kills by stage      {dict(sorted(phases.items()))}")
    done, failed = totals["done"], totals["failed"]
    print(f"  jobs                {totals['jobs']}  ({done} done, {failed} failed)")
    print(f"  done by kind        {dict(sorted(done_kinds.items()))}")
    print(f"  lost inputs         {totals['lost_inputs'] + totals['left_in_inbox']}")
    print(f"  drops split apart   {totals['split_drops']}")
    print(f"  duplicate outputs   {totals['duplicate_outputs']}")
    print(f"  wrong videos        {totals['wrong_videos']}")
    print(f"  wrong metadata      {totals['wrong_metadata']}")
    print(f"  staging leftovers   {totals['staging_leftovers'] + totals['empty_files']}")
    print(f"  bad JSON            {totals['bad_json']}")
    print(f"  missing reports     {totals['missing_reports']}")
    print(f"  duplicate submits   {totals['duplicate_submits']}  (ambiguous jobs excepted)")
    print(f"  unexpected failures {totals['unexpected_failures']}")
    print(f"  ambiguous jobs      {totals['ambiguous']}  (failed as submit_ambiguous)")
    print(f"  wall time           {wall:.1f} s")
    for line in examples[:20]:
        print(f"  ! {line}")
    if any(totals[name] for name in MUST_BE_ZERO):
        print(f"  folders kept in {tmp}")
        return 1
    shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
