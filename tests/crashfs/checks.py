"""The invariants a crash state must keep, before and after recovery.

Static, on the state itself (cheap, every state):

* ``ledger_unreadable``: opening the ledger raises something other than a clear
  :class:`LedgerCorrupt`/:class:`StateError` refusal (a traceback of another kind);
  ``ledger_refused``: it refuses (a power cut must not need an operator).
* ``input_lost``: a dropped input is in none of inbox/, done/, failed/ byte-identical.
* ``partial_output``: an ``outbox/**/*.mp4`` is not exactly a video the gateway served.
* ``two_outputs``: two mp4 files of one job (same ``job_id`` in the JSON beside them,
  or the same video).
* ``task_id_lost``: the daemon polled a task before the cut, and no job holds its id.
* ``move_unrecorded`` / ``output_unrecorded``: an input sits in done/ or failed/, or
  an mp4 in the outbox, and no job in the ledger planned it there.

Dynamic, after ``run --once`` on a copy of the state (a sample of states):

* ``recovery_crashed`` / ``recovery_exit``: the run raised, or ended other than 0, or
  4 with only ``submit_ambiguous`` failures;
* ``input_lost`` / ``left_in_inbox``: every input ends in done/ or failed/;
* ``drop_split``: a drop's files (a frames drop has three) are not together in one
  of done/ or failed/ with one collision suffix (docs/design.md, "The sidecar");
* ``partial_output``, ``two_outputs``, and ``done_without_output``: each DONE job
  has its one mp4 with its video's hash;
* ``acted_on_lost``: a job that held a task id, had a planned placement or moved
  inputs in the state, does not end DONE with that same task id.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import traceback
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from seedance_watch.core.jobs import Job, State
from seedance_watch.errors import LedgerCorrupt, StateError
from seedance_watch.ledger.jsonl import Ledger

from ..helpers import sha256
from .recorder import DIR, FILE, SYMLINK
from .states import FsState, Node

__all__ = [
    "LedgerVerdict",
    "Violation",
    "check_static",
    "check_tree_after_recovery",
    "ledger_verdict",
    "materialize",
    "tree_nodes",
]

INPUT_FOLDERS = ("inbox", "done", "failed")


@dataclass(frozen=True)
class Violation:
    """One broken invariant: its kind, what was found, and the state it was found in."""

    kind: str
    detail: str


@dataclass(frozen=True)
class LedgerVerdict:
    """What recovery made of a state folder: its jobs, a refusal, or a crash."""

    jobs: Mapping[str, Job] | None
    refused: str | None = None
    crashed: str | None = None


def materialize(
    nodes: Mapping[str, Node],
    dest: Path,
    *,
    under: str = "",
    originals: Mapping[int, Path] | None = None,
) -> None:
    """Write ``nodes`` (optionally only those below ``under``) as a real tree at ``dest``.

    Paths that share an inode become hard links, as they were.  A file that was there
    when the recording began and still holds its bytes is a hard link to its kept
    original (``originals``, :attr:`Recording.originals`): the very inode, as after a
    real power cut, so a job that examined it still owns it.
    """
    dest.mkdir(parents=True, exist_ok=True)
    prefix = under + "/" if under else ""
    first: dict[int, Path] = {}
    for rel in sorted(nodes):
        if prefix and not rel.startswith(prefix):
            continue
        node = nodes[rel]
        path = dest / rel[len(prefix) :]
        if node.kind == DIR:
            path.mkdir(exist_ok=True)
        elif node.kind == SYMLINK:
            path.symlink_to(os.fsdecode(node.content))
        elif node.ino in first:
            os.link(first[node.ino], path)
        else:
            original = (originals or {}).get(node.ino)
            if original is not None and original.read_bytes() == node.content:
                os.link(original, path)
            else:
                path.write_bytes(node.content)
            first[node.ino] = path


def tree_nodes(root: Path) -> dict[str, Node]:
    """A real tree as :class:`Node` values (inodes from ``st_ino``), for the same checks."""
    nodes: dict[str, Node] = {}
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            st = os.lstat(path)
            if path.is_symlink():
                nodes[rel] = Node(SYMLINK, st.st_ino, os.fsencode(path.readlink()))
            elif path.is_dir():
                nodes[rel] = Node(DIR, st.st_ino)
            else:
                nodes[rel] = Node(FILE, st.st_ino, path.read_bytes())
    return nodes


def ledger_verdict(nodes: Mapping[str, Node], scratch: Path) -> LedgerVerdict:
    """Open the ledger of ``nodes``'s ``state/`` folder (a copy in ``scratch``)."""
    if os.path.lexists(scratch):
        shutil.rmtree(scratch)
    materialize(nodes, scratch, under="state")
    try:
        with Ledger.open(scratch) as ledger:
            return LedgerVerdict(dict(ledger.jobs()))
    except (LedgerCorrupt, StateError) as exc:
        return LedgerVerdict(None, refused=str(exc))
    except Exception:
        return LedgerVerdict(None, crashed=traceback.format_exc(limit=6))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _outputs(nodes: Mapping[str, Node]) -> dict[str, Node]:
    return {
        p: n
        for p, n in nodes.items()
        if p.startswith("outbox/")
        and p.endswith(".mp4")
        and not p.rsplit("/", 1)[-1].startswith(".")
    }


def _json_job_id(nodes: Mapping[str, Node], mp4: str) -> str | None:
    meta = nodes.get(mp4[: -len(".mp4")] + ".json")
    if meta is None or meta.kind != FILE:
        return None
    try:
        data = json.loads(meta.content)
    except ValueError:
        return None
    job_id = data.get("job_id") if isinstance(data, dict) else None
    return job_id if isinstance(job_id, str) else None


def check_files(
    nodes: Mapping[str, Node],
    inputs: Mapping[str, bytes],
    videos: set[str],
    *,
    finished: bool,
) -> list[Violation]:
    """Inputs kept, outputs whole and single.  ``finished``: after recovery (inbox empty)."""
    out: list[Violation] = []
    found: Counter[str] = Counter()
    counted = ("done", "failed") if finished else INPUT_FOLDERS
    for rel, node in nodes.items():
        if node.kind == FILE and "/" in rel and rel.split("/", 1)[0] in counted:
            found[sha256(node.content)] += 1
    wanted = Counter(sha256(data) for data in inputs.values())
    for rel, data in sorted(inputs.items()):
        digest = sha256(data)
        if found[digest] < wanted[digest]:
            in_inbox = finished and any(
                n.kind == FILE and n.content == data
                for p, n in nodes.items()
                if p.startswith("inbox/")
            )
            kind = "left_in_inbox" if in_inbox else "input_lost"
            where = "done/ or failed/" if finished else "inbox/, done/ or failed/"
            out.append(Violation(kind, f"{rel} ({len(data)} bytes) is in none of {where}"))
            wanted[digest] -= 1  # report each missing copy once
    by_job: dict[str, list[str]] = {}
    by_video: dict[str, list[str]] = {}
    for rel, node in sorted(_outputs(nodes).items()):
        digest = sha256(node.content) if node.kind == FILE else ""
        if node.kind != FILE or digest not in videos:
            out.append(
                Violation(
                    "partial_output",
                    f"{rel} ({len(node.content)} bytes) is not a video the gateway served",
                )
            )
            continue
        by_video.setdefault(digest, []).append(rel)
        job_id = _json_job_id(nodes, rel)
        if job_id is not None:
            by_job.setdefault(job_id, []).append(rel)
    for key, paths in [*by_job.items(), *by_video.items()]:
        if len(paths) > 1:
            out.append(Violation("two_outputs", f"{' and '.join(paths)} are one job's ({key})"))
    return out


def check_static(
    state: FsState,
    verdict: LedgerVerdict,
    inputs: Mapping[str, bytes],
    videos: set[str],
    polled: set[str],
) -> list[Violation]:
    """The invariants of one crash state, before any recovery runs."""
    out = check_files(state.nodes, inputs, videos, finished=False)
    if verdict.crashed is not None:
        out.append(Violation("ledger_unreadable", verdict.crashed.strip().splitlines()[-1]))
    if verdict.refused is not None:
        out.append(Violation("ledger_refused", verdict.refused))
    if verdict.jobs is None:
        return out
    jobs = verdict.jobs.values()
    have_task = {job.task_id for job in jobs if job.task_id}
    for task_id in sorted(polled - have_task):
        out.append(Violation("task_id_lost", f"task {task_id} was polled; no job holds it"))
    planned_moves = {dst for job in jobs for _src, dst in job.moved_to}
    planned_outputs = {f"outbox/{job.output}" for job in jobs if job.output}
    input_digests = {sha256(data) for data in inputs.values()}
    for rel, node in sorted(state.nodes.items()):
        top = rel.split("/", 1)[0]
        if (
            top in ("done", "failed")
            and node.kind == FILE
            and sha256(node.content) in input_digests
            and rel not in planned_moves
        ):
            out.append(Violation("move_unrecorded", f"{rel} is there; no job planned it"))
    for rel in sorted(_outputs(state.nodes)):
        if rel not in planned_outputs:
            out.append(Violation("output_unrecorded", f"{rel} is there; no job planned it"))
    return out


def check_tree_after_recovery(
    before: LedgerVerdict,
    after: Mapping[str, Job],
    nodes: Mapping[str, Node],
    inputs: Mapping[str, bytes],
    videos: set[str],
    exit_code: int,
    drops: Sequence[tuple[str, ...]] = (),
) -> list[Violation]:
    """The invariants after ``run --once`` on a crash state: nothing left, nothing lost,
    each of ``drops`` (tree-relative paths of one drop's inputs) moved whole."""
    out = check_files(nodes, inputs, videos, finished=True)
    out += check_drops_together(nodes, inputs, drops)
    failed = [job for job in after.values() if job.state is State.FAILED]
    unexpected = [j for j in failed if (j.error or {}).get("code") != "submit_ambiguous"]
    if exit_code not in (0, 4) or (exit_code == 4 and unexpected) or (exit_code == 0 and failed):
        codes = sorted({str((j.error or {}).get("code")) for j in failed})
        out.append(Violation("recovery_exit", f"exit code {exit_code}, failures {codes}"))
    for job in after.values():
        if job.state is State.DONE and job.output:
            node = nodes.get(f"outbox/{job.output}")
            if node is None or sha256(node.content) != job.video_sha256:
                out.append(Violation("done_without_output", f"job {job.job_id}: {job.output}"))
        elif not job.terminal:
            out.append(Violation("recovery_exit", f"job {job.job_id} left in {job.state.value}"))
    for job in (before.jobs or {}).values():
        acted = job.task_id or job.moved_to or job.state in (State.PLACING, State.DONE)
        if not acted or job.state in (State.FAILING, State.FAILED):
            continue
        final = after.get(job.job_id)
        if (
            final is None
            or final.state is not State.DONE
            or (job.task_id is not None and final.task_id != job.task_id)
        ):
            what = "missing" if final is None else f"{final.state.value}, task {final.task_id}"
            out.append(
                Violation(
                    "acted_on_lost",
                    f"job {job.job_id} was {job.state.value} with task {job.task_id}; "
                    f"after recovery: {what}",
                )
            )
    return out


_SUFFIX = re.compile(r"(-[0-9]+)?")


def check_drops_together(
    nodes: Mapping[str, Node], inputs: Mapping[str, bytes], drops: Sequence[tuple[str, ...]]
) -> list[Violation]:
    """Each drop's files in one folder of done/ or failed/, with one suffix (``-2``...).

    A file found other than once is ``input_lost``'s business and skipped here.
    """
    where: dict[str, list[str]] = {}
    for rel, node in nodes.items():
        if node.kind == FILE and rel.split("/", 1)[0] in ("done", "failed"):
            where.setdefault(sha256(node.content), []).append(rel)
    out: list[Violation] = []
    for drop in drops:
        homes = {path: where.get(sha256(inputs[path]), []) for path in drop}
        if any(len(found) != 1 for found in homes.values()):
            continue
        layout = set()
        for path, (found,) in homes.items():
            orig, at = PurePosixPath(path), PurePosixPath(found)
            rest = at.stem[len(orig.stem) :] if at.stem.startswith(orig.stem) else "?"
            ok = at.suffix == orig.suffix and _SUFFIX.fullmatch(rest) is not None
            layout.add((at.parts[0], at.parent.parts[1:], rest if ok else f"? {found}"))
        if len(layout) != 1 or any(suffix.startswith("?") for *_, suffix in layout):
            moved = ", ".join(f"{p} -> {f}" for p, (f,) in homes.items())
            out.append(Violation("drop_split", f"not together with one suffix: {moved}"))
    return out
