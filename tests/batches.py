"""Batches of drops for the torture tests, and the independent checker of their end state.

The checker is written from the contract alone (docs/design.md, "The inbox", "The sidecar",
"Outputs", "The ledger and crash guarantees"): it reads the folders and the simulator's records,
never the daemon's ledger or helpers.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

from PIL import Image

from seedance_watch.simulator.config import SubmitRecord

from .helpers import sha256

Kind = Literal["image", "frames", "text"]


class GatewayRecords(Protocol):
    """What the checker reads of the simulator: its submit records and served videos."""

    @property
    def submits(self) -> list[SubmitRecord]: ...

    def video_bytes(self, task_id: str) -> bytes: ...


@dataclass(frozen=True)
class Drop:
    """One drop as it went into the inbox: every file of it, inbox-relative, with its bytes.

    ``source`` is its lead (the image; for a text drop the sidecar), ``files`` lists the
    lead first; ``prompt`` is the sidecar's prompt.
    """

    source: str
    kind: Kind
    files: dict[str, bytes]
    prompt: str

    @property
    def end_image(self) -> bytes | None:
        """A frames drop's last frame (its second file), else None."""
        return list(self.files.values())[1] if self.kind == "frames" else None


class Batch(dict[str, bytes]):
    """source → the lead's bytes (an image, or a text drop's sidecar), with each ``Drop``."""

    def __init__(self) -> None:
        super().__init__()
        self.drops: dict[str, Drop] = {}

    def add(self, drop: Drop) -> None:
        self.drops[drop.source] = drop
        self[drop.source] = drop.files[drop.source]


def _image(rng: random.Random, blue: int, fmt: str) -> bytes:
    img = Image.new("RGB", (400, 320), (rng.randrange(256), rng.randrange(256), blue))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def drop_kind(i: int, *, kinds: bool) -> Kind:
    """The ``i``-th drop's kind: with ``kinds``, every fifth a text drop, else every third a
    frames drop, else (and always without ``kinds``) an image drop."""
    if kinds and i % 5 == 4:
        return "text"
    if kinds and i % 3 == 2:
        return "frames"
    return "image"


def make_batch(inbox: Path, count: int, seed: int, *, kinds: bool = False) -> Batch:
    """``count`` distinct drops, a third of them in subfolders; returns source → lead bytes.

    Without ``kinds`` every drop is an image + sidecar pair (``shot-NNN.jpg``).  With
    ``kinds`` (see :func:`drop_kind`) a frames drop adds ``shot-NNN-end.png``, named by its
    sidecar's ``last_frame``, and a text drop is ``shot-NNN.yaml`` alone with ``mode: text``.
    """
    rng = random.Random(seed)
    batch = Batch()
    subs = ["", "", "", "clients/acme", "b"]
    for i in range(count):
        sub = subs[i % len(subs)]
        folder = inbox / sub if sub else inbox
        folder.mkdir(parents=True, exist_ok=True)
        kind = drop_kind(i, kinds=kinds)
        stem = f"shot-{i:03d}"
        prompt = f"Scene number {i} drifts"
        # A frames drop goes to a Seedance 2 model, which takes no seed.
        sidecar = f'prompt: "{prompt}"\n' + ("" if kind == "frames" else f"seed: {i}\n")
        files: dict[str, bytes] = {}
        if kind != "text":
            files[f"{stem}.jpg"] = _image(rng, i % 256, "JPEG")
        if kind == "frames":
            files[f"{stem}-end.png"] = _image(rng, 255 - i % 256, "PNG")
            sidecar += f"last_frame: {stem}-end.png\n"
        elif kind == "text":
            sidecar += "mode: text\n"
        files[f"{stem}.yaml"] = sidecar.encode()
        rels = {f"{sub}/{name}" if sub else name: data for name, data in files.items()}
        # The sidecar last, as a person or rsync would: the images are complete before it.
        for name, data in sorted(files.items(), key=lambda item: item[0].endswith(".yaml")):
            (folder / name).write_bytes(data)
        batch.add(Drop(next(iter(rels)), kind, rels, prompt))
    return batch


@dataclass
class Verdict:
    """What the checker found; every list should be empty."""

    done: int = 0
    failed: int = 0
    ambiguous: int = 0
    #: Drops per kind that ended in done/ (``image``, ``frames``, ``text``).
    done_kinds: Counter[str] = field(default_factory=Counter)
    lost_inputs: list[str] = field(default_factory=list)
    left_in_inbox: list[str] = field(default_factory=list)
    split_drops: list[str] = field(default_factory=list)
    duplicate_outputs: list[str] = field(default_factory=list)
    wrong_videos: list[str] = field(default_factory=list)
    wrong_metadata: list[str] = field(default_factory=list)
    staging_leftovers: list[str] = field(default_factory=list)
    empty_files: list[str] = field(default_factory=list)
    bad_json: list[str] = field(default_factory=list)
    missing_reports: list[str] = field(default_factory=list)
    duplicate_submits: list[str] = field(default_factory=list)
    unexpected_failures: list[str] = field(default_factory=list)

    def problems(self) -> dict[str, list[str]]:
        return {
            name: value for name, value in vars(self).items() if isinstance(value, list) and value
        }


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _drops_of(sources: Mapping[str, bytes]) -> dict[str, Drop]:
    """The drops of a batch; a plain mapping (source → image) holds image drops."""
    if isinstance(sources, Batch):
        return sources.drops
    return {s: Drop(s, "image", {s: data}, "") for s, data in sources.items()}


_SUFFIX = re.compile(r"(-[0-9]+)?")


def _suffix_of(original: str, found: str) -> str | None:
    """The collision suffix (``""``, ``-2``, ...) that turned ``original`` into ``found``.

    None when ``found`` is not ``original`` with a suffix before its extension (docs/design.md,
    "Outputs").
    """
    orig, name = PurePosixPath(original), PurePosixPath(found)
    if name.suffix != orig.suffix or not name.stem.startswith(orig.stem):
        return None
    rest = name.stem[len(orig.stem) :]
    return rest if _SUFFIX.fullmatch(rest) else None


def _request_identity(record: SubmitRecord) -> tuple[str, ...]:
    """What a submit asked for, as a drop knows it: its kind and its images (or prompt).

    A text drop has no image: its prompt is the text before the commands (docs/design.md, "The
    gateway protocol").
    """
    if record.kind == "text":
        return ("text", record.text.split(" --", 1)[0])
    if record.kind == "frames":
        return ("frames", *record.fetched_sha256s)
    return ("image", record.image_sha256)


def _drop_identity(drop: Drop) -> tuple[str, ...]:
    if drop.kind == "text":
        return ("text", drop.prompt)
    images = [data for rel, data in drop.files.items() if not rel.endswith(".yaml")]
    return (drop.kind, *(sha256(data) for data in images))


def check_batch(
    folder: Path,
    sources: Mapping[str, bytes],
    sim: GatewayRecords,
    *,
    allowed_failures: frozenset[str] = frozenset({"submit_ambiguous"}),
) -> Verdict:
    """Check docs/design.md, "The sidecar" and "Outputs", "The ledger and crash guarantees",
    "Identity and duplicates"'s crash guarantees on the folders after a tortured batch.

    ``sources`` is what :func:`make_batch` returned (a plain source → image mapping is
    read as image drops, whose sidecars are then checked by name only).
    """
    v = Verdict()
    drops = _drops_of(sources)
    inbox, outbox = folder / "inbox", folder / "outbox"
    done, failed = folder / "done", folder / "failed"
    v.left_in_inbox = [str(p.relative_to(inbox)) for p in _all_files(inbox)]

    # Staging and temp files, zero-byte files anywhere we write.
    for root in (outbox, done, failed):
        for path in _all_files(root):
            rel = f"{root.name}/{path.relative_to(root)}"
            name = path.name
            if name.startswith(".") or name.endswith((".part", ".tmp")):
                v.staging_leftovers.append(rel)
            elif path.stat().st_size == 0:
                v.empty_files.append(rel)

    # Every file of every drop is in done/ or failed/ exactly once, with its bytes, and
    # all files of one drop are together, in its own subfolder, with one suffix ("The sidecar").
    homes: dict[str, list[tuple[str, str]]] = {}  # sha -> [(kind, path relative to kind)]
    for kind, root in (("done", done), ("failed", failed)):
        for path in _all_files(root):
            if path.is_file() and not path.is_symlink():
                homes.setdefault(sha256(path.read_bytes()), []).append(
                    (kind, path.relative_to(root).as_posix())
                )
    where: dict[str, tuple[str, str]] = {}  # source -> (done|failed, suffix)
    for source, drop in drops.items():
        places: dict[str, tuple[str, str]] = {}
        for rel, data in drop.files.items():
            found = homes.get(sha256(data), [])
            if len(found) != 1:
                v.lost_inputs.append(f"{rel}: found {len(found)} times in done/ and failed/")
            else:
                places[rel] = found[0]
        if len(places) != len(drop.files):
            continue
        layout: set[tuple[str, str | None]] = set()
        for rel, (kind, at) in places.items():
            same_folder = PurePosixPath(at).parent == PurePosixPath(rel).parent
            layout.add((kind, _suffix_of(rel, at) if same_folder else None))
        if len(layout) != 1 or None in {suffix for _, suffix in layout}:
            moved = ", ".join(f"{rel} -> {kind}/{at}" for rel, (kind, at) in places.items())
            v.split_drops.append(f"{source}: not together with one suffix: {moved}")
            continue
        kind, suffix = layout.pop()
        assert suffix is not None
        if not isinstance(sources, Batch):  # the sidecar's bytes are unknown: check its name
            sidecar = Path(kind) / Path(places[source][1]).with_suffix(".yaml")
            if not (folder / sidecar).is_file():
                v.lost_inputs.append(f"{source}: the sidecar did not follow the image to {kind}/")
        where[source] = (kind, suffix)

    # Failed drops: a report each, beside the lead with its suffix; note the ambiguous ones.
    ambiguous_sources: set[str] = set()
    report_sources: Counter[str] = Counter()
    for report_path in failed.rglob("*.error.json"):
        try:
            report = json.loads(report_path.read_text())
        except ValueError:
            v.bad_json.append(str(report_path.relative_to(folder)))
            continue
        v.failed += 1
        report_sources[report.get("source", "")] += 1
        if report.get("code") == "submit_ambiguous":
            v.ambiguous += 1
            ambiguous_sources.add(report.get("source", ""))
        if report.get("code") not in allowed_failures:
            v.unexpected_failures.append(f"{report.get('source')}: {report.get('code')}")
    for source, (kind, suffix) in where.items():
        if kind != "failed":
            continue
        lead = PurePosixPath(source)
        report_rel = lead.with_name(f"{lead.stem}{suffix}.error.json")
        if not (failed / report_rel).is_file() or report_sources[source] != 1:
            v.missing_reports.append(
                f"{source}: failed/{report_rel} missing, or {report_sources[source]} reports"
            )

    # Outputs: valid JSON naming an existing mp4 with the bytes the gateway served for
    # this very drop, and the drop's kind, source and hashes ("The sidecar", "Outputs").
    by_task = {record.task_id: record for record in sim.submits}
    outputs_per_source: Counter[str] = Counter()
    jsons = {p.with_suffix("") for p in outbox.rglob("*.json")}
    for mp4 in outbox.rglob("*.mp4"):
        if mp4.with_suffix("") not in jsons:
            v.bad_json.append(f"{mp4.relative_to(outbox)} has no JSON")
    for base in sorted(jsons):
        rel = str(base.relative_to(outbox))
        try:
            meta: dict[str, Any] = json.loads(base.with_suffix(".json").read_text())
        except ValueError:
            v.bad_json.append(f"{rel}.json is not JSON")
            continue
        mp4 = base.with_suffix(".mp4")
        if not mp4.is_file():
            v.bad_json.append(f"{rel}.json names no existing mp4")
            continue
        video = mp4.read_bytes()
        source = meta.get("source", "")
        outputs_per_source[source] += 1
        task = meta.get("task_id")
        owner = drops.get(source)
        if task not in by_task:
            v.wrong_videos.append(f"{rel}.mp4: task {task} was never submitted")
        elif video != sim.video_bytes(task):
            v.wrong_videos.append(f"{rel}.mp4 differs from what task {task} served")
        elif owner is not None and _request_identity(by_task[task]) != _drop_identity(owner):
            v.wrong_videos.append(f"{rel}.mp4: task {task} was not submitted for {source}")
        if meta.get("video_sha256") != sha256(video) or meta.get("video_bytes") != len(video):
            v.wrong_videos.append(f"{rel}.json: video_sha256/video_bytes do not match the mp4")
        if video[4:8] != b"ftyp":
            v.wrong_videos.append(f"{rel}.mp4 has no ftyp box")
        if owner is not None:
            v.wrong_metadata += _metadata_problems(f"{rel}.json", meta, owner)
    for source, (kind, _suffix) in where.items():
        count = outputs_per_source[source]
        if kind == "done":
            v.done += 1
            v.done_kinds[drops[source].kind] += 1
            if count != 1:
                v.duplicate_outputs.append(f"{source}: {count} outputs for one done job")
        elif count:
            v.duplicate_outputs.append(f"{source}: failed, yet {count} outputs")
    for source, count in outputs_per_source.items():
        if source not in drops:
            v.duplicate_outputs.append(f"{count} outputs for an unknown source {source!r}")

    # At most one submit per drop, on any of the three endpoints, except drops reported
    # submit_ambiguous.  A submit of a request of no drop here (another batch on a shared
    # simulator) counts only when it was repeated.
    by_identity = {_drop_identity(drop): source for source, drop in drops.items()}
    submits = Counter(_request_identity(record) for record in sim.submits)
    for identity, count in submits.items():
        source = by_identity.get(identity, f"unknown {identity[0]} request {identity[1][:12]}")
        if count > 1 and source not in ambiguous_sources:
            v.duplicate_submits.append(f"{source}: {count} submits")
    return v


def _metadata_problems(name: str, meta: Mapping[str, Any], drop: Drop) -> list[str]:
    """What the output JSON of ``drop`` gets wrong: kind, source hash, last frame hash."""
    out = []
    if meta.get("kind") != drop.kind:
        out.append(f"{name}: kind {meta.get('kind')!r}, the drop is {drop.kind!r}")
    if meta.get("source_sha256") != sha256(drop.files[drop.source]):
        out.append(f"{name}: source_sha256 is not the hash of {drop.source}")
    end = drop.end_image
    if end is not None and meta.get("last_frame_sha256") != sha256(end):
        out.append(f"{name}: last_frame_sha256 is not the hash of the end image")
    if end is None and meta.get("last_frame_sha256") is not None:
        out.append(f"{name}: last_frame_sha256 on a {drop.kind} drop")
    return out
