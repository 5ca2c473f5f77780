"""Explore the crash states of a recorded workload and report what breaks.

:func:`explore` walks every cut point, builds its crash states
(:meth:`CrashModel.states_at`, bounded by ``cap`` per cut, seeded), drops the
states already seen (same tree, same polls before the cut), checks each one
statically, and runs the daemon's recovery (``run --once``) on an evenly spread,
deterministic sample of ``recoveries`` of them.  Before any of that it checks
the model itself: the state "everything kept" at the last cut must equal the
real tree the daemon left (else the recorder missed something).
"""

from __future__ import annotations

import hashlib
import shutil
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from seedance_watch.ledger.jsonl import read_jobs
from seedance_watch.simulator import Simulator

from .checks import (
    LedgerVerdict,
    Violation,
    check_static,
    check_tree_after_recovery,
    ledger_verdict,
    materialize,
    sha256,
    tree_nodes,
)
from .recorder import DirOp, Marker, Op
from .scenario import CONFIG_NAME, Workload, compaction, run_daemon_once
from .states import CrashModel, FsState, Node

__all__ = [
    "Finding",
    "Report",
    "explore",
    "known_signature",
    "lost_link_kept_unlink",
    "model_mismatches",
]


@dataclass
class Finding:
    """A violation, the cut point it was found at and the operations that state lost."""

    violation: Violation
    cut: int
    lost: list[Op]
    before: list[Op]
    stage: str  # "static" or "recovery"
    signature: str | None = None  # a known defect this state shows, if recognised

    def describe(self) -> str:
        known = f"  (the signature of {self.signature})" if self.signature else ""
        lines = [
            f"{self.violation.kind}: {self.violation.detail}{known}",
            f"  {self.stage} check, power cut before op #{self.cut}; the last ops issued:",
        ]
        lines += [f"    {op.describe()}" for op in self.before]
        lines.append("  lost in this state (issued, not durable):")
        lines += [f"    {op.describe()}" for op in self.lost] or ["    (nothing)"]
        return "\n".join(lines)


@dataclass
class Report:
    """How much was explored and what was found."""

    ops: int = 0
    cuts: int = 0
    states: int = 0
    distinct: int = 0
    ledger_opens: int = 0
    recoveries: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    model_errors: list[str] = field(default_factory=list)

    def kinds(self) -> set[str]:
        return set(self.counts)

    def summary(self, examples: int = 1) -> str:
        lines = [
            f"{self.ops} ops, {self.cuts} cut points, {self.states} states "
            f"({self.distinct} distinct), {self.ledger_opens} ledger recoveries, "
            f"{self.recoveries} daemon recoveries, {self.seconds:.1f} s",
        ]
        lines += [f"model error: {e}" for e in self.model_errors]
        for kind, n in sorted(self.counts.items()):
            lines.append(f"{kind}: {n} state(s)")
            shown = [f for f in self.findings if f.violation.kind == kind][:examples]
            lines += ["  " + f.describe().replace("\n", "\n  ") for f in shown]
        if not self.counts and not self.model_errors:
            lines.append("no violation")
        return "\n".join(lines)


def model_mismatches(model: CrashModel, root: Path) -> list[str]:
    """Differences between "everything kept" at the last cut and the real tree."""
    state = model.build(model.full(model.cuts - 1))
    real = tree_nodes(root)
    out: list[str] = []
    for rel in sorted(set(state.nodes) | set(real)):
        a, b = state.nodes.get(rel), real.get(rel)
        if a is None or b is None:
            out.append(f"{rel}: {'only on disk' if a is None else 'only in the model'}")
        elif a.kind != b.kind or a.content != b.content:
            out.append(f"{rel}: model has {a.kind} of {len(a.content)} bytes, disk {b.kind}")
    links_model = _link_groups(state.nodes)
    links_real = _link_groups(real)
    if links_model != links_real:
        out.append(f"hard links differ: model {links_model}, disk {links_real}")
    return out


def _link_groups(nodes: dict[str, Node]) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for rel, node in nodes.items():
        groups.setdefault(node.ino, set()).add(rel)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def _videos(sim: Simulator) -> set[str]:
    out: set[str] = set()
    for submit in sim.submits:
        try:
            out.add(sha256(sim.video_bytes(submit.task_id)))
        except KeyError:
            continue
    return out


def _state_key(state: FsState) -> str:
    h = hashlib.sha256()
    for rel in sorted(state.nodes):
        if rel == "state" or rel.startswith("state/"):
            node = state.nodes[rel]
            h.update(f"{rel}\0{node.kind}\0".encode() + sha256(node.content).encode())
    return h.hexdigest()


def explore(
    workload: Workload,
    sim: Simulator,
    scratch: Path,
    *,
    cap: int = 12,
    seed: int = 1,
    recoveries: int = 4,
    keep_findings: int = 200,
) -> Report:
    """Explore ``workload``'s crash states; ``scratch`` is an empty folder to work in."""
    started = time.monotonic()
    model = CrashModel(workload.recording)
    ops = workload.recording.ops
    report = Report(ops=len(ops), cuts=model.cuts)
    report.model_errors += [f"unmodelled: {u}" for u in workload.recording.unmodelled]
    report.model_errors += model_mismatches(model, workload.root)
    videos = _videos(sim)
    polls = [(op.index, op.detail) for op in ops if isinstance(op, Marker) and op.kind == "poll"]
    verdicts: dict[str, LedgerVerdict] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    candidates: list[tuple[FsState, LedgerVerdict, int]] = []
    found: set[tuple[str, str]] = set()

    counted: set[tuple[str, int]] = set()

    def note(violation: Violation, state: FsState, number: int, stage: str) -> None:
        if (violation.kind, number) not in counted:  # states, not violations, per kind
            counted.add((violation.kind, number))
            report.counts[violation.kind] += 1
        if (violation.kind, violation.detail) in found or len(report.findings) >= keep_findings:
            return
        found.add((violation.kind, violation.detail))
        cut = state.choice.cut
        finding = Finding(violation, cut, state.lost, ops[max(0, cut - 6) : cut], stage)
        finding.signature = known_signature(finding, ops)
        report.findings.append(finding)

    for cut in range(model.cuts):
        polled = frozenset(task for index, task in polls if index < cut)
        for choice in model.states_at(cut, cap, seed):
            report.states += 1
            state = model.build(choice)
            key = (state.key(), polled)
            if key in seen:
                continue
            seen.add(key)
            report.distinct += 1
            ledger_key = _state_key(state)
            verdict = verdicts.get(ledger_key)
            if verdict is None:
                verdict = ledger_verdict(state.nodes, scratch / "ledger")
                verdicts[ledger_key] = verdict
                report.ledger_opens += 1
            for violation in check_static(state, verdict, workload.inputs, videos, set(polled)):
                note(violation, state, report.distinct, "static")
            if verdict.jobs is not None:
                candidates.append((state, verdict, report.distinct))

    if recoveries and candidates:
        step = len(candidates) / recoveries
        picks = sorted({int(i * step + step / 2) for i in range(recoveries)})
        for n, index in enumerate(picks):
            state, verdict, number = candidates[min(index, len(candidates) - 1)]
            for violation in _recover(state, verdict, workload, sim, scratch / f"run-{n}"):
                note(violation, state, number, "recovery")
            report.recoveries += 1
    report.seconds = time.monotonic() - started
    return report


def _recover(
    state: FsState, verdict: LedgerVerdict, workload: Workload, sim: Simulator, root: Path
) -> list[Violation]:
    """``run --once`` on a copy of ``state``, then the checks after recovery."""
    materialize(state.nodes, root, originals=workload.recording.originals)
    try:
        with compaction(workload.compact_every):
            result = run_daemon_once(root / CONFIG_NAME)
    except Exception:
        detail = traceback.format_exc(limit=8).strip().splitlines()
        return [Violation("recovery_crashed", " | ".join(detail[-3:]))]
    after = read_jobs(root / "state")
    violations = check_tree_after_recovery(
        verdict,
        after,
        tree_nodes(root),
        workload.inputs,
        _videos(sim),
        result.exit_code,
        workload.drops,
    )
    if not violations:
        shutil.rmtree(root, ignore_errors=True)
    return violations


def known_signature(finding: Finding, ops: list[Op]) -> str | None:
    """Name the hardening issue's defect a finding's state shows, when it is one we know."""
    if lost_link_kept_unlink(finding, ops):
        return "defect 5 (move_file unlinks before the destination folder is fsynced)"
    for op in finding.lost:
        if isinstance(op, DirOp) and op.kind == "mkdir" and "/" not in op.path:
            return f"defect 6 (folder {op.path}/ created without fsyncing its parent)"
    return None


def lost_link_kept_unlink(finding: Finding, ops: list[Op]) -> bool:
    """Defect 5's signature: a ``link`` into done/ lost while the unlink of its source,
    issued before the cut, was kept."""
    lost = {op.index for op in finding.lost}
    for op in finding.lost:
        if isinstance(op, DirOp) and op.kind == "link" and op.path.startswith("done/"):
            for later in ops[op.index + 1 : finding.cut]:
                if (
                    isinstance(later, DirOp)
                    and later.kind == "unlink"
                    and later.ino == op.ino
                    and later.path.startswith("inbox/")
                    and later.index not in lost
                ):
                    return True
    return False
