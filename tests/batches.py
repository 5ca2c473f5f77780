"""Shared test helpers (moved from test_crash.py)."""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from seedance_watch.simulator import Simulator


def make_batch(inbox: Path, count: int, seed: int) -> dict[str, bytes]:
    """``count`` distinct pairs, a third of them in subfolders; returns source → image bytes."""
    rng = random.Random(seed)
    sources: dict[str, bytes] = {}
    subs = ["", "", "", "clients/acme", "b"]
    for i in range(count):
        sub = subs[i % len(subs)]
        folder = inbox / sub if sub else inbox
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", (400, 320), (rng.randrange(256), rng.randrange(256), i % 256))
        buf = io.BytesIO()
        img.save(buf, format="JPEG")
        stem = f"shot-{i:03d}"
        (folder / f"{stem}.jpg").write_bytes(buf.getvalue())
        (folder / f"{stem}.yaml").write_text(f'prompt: "Scene number {i} drifts"\nseed: {i}\n')
        sources[f"{sub}/{stem}.jpg" if sub else f"{stem}.jpg"] = buf.getvalue()
    return sources


@dataclass
class Verdict:
    """What the checker found; every list should be empty."""

    done: int = 0
    failed: int = 0
    ambiguous: int = 0
    lost_inputs: list[str] = field(default_factory=list)
    left_in_inbox: list[str] = field(default_factory=list)
    duplicate_outputs: list[str] = field(default_factory=list)
    wrong_videos: list[str] = field(default_factory=list)
    staging_leftovers: list[str] = field(default_factory=list)
    empty_files: list[str] = field(default_factory=list)
    bad_json: list[str] = field(default_factory=list)
    duplicate_submits: list[str] = field(default_factory=list)
    unexpected_failures: list[str] = field(default_factory=list)

    def problems(self) -> dict[str, list[str]]:
        return {
            name: value for name, value in vars(self).items() if isinstance(value, list) and value
        }


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def check_batch(
    folder: Path,
    sources: dict[str, bytes],
    sim: Simulator,
    *,
    allowed_failures: frozenset[str] = frozenset({"submit_ambiguous"}),
) -> Verdict:
    """Check SPEC §6-§8's crash guarantees on the folders after a tortured batch."""
    v = Verdict()
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

    # Every input is in done/ or failed/, exactly once, with its bytes.
    where: dict[str, str] = {}
    for source, data in sources.items():
        sub = str(Path(source).parent)
        stem = Path(source).stem
        homes = []
        for kind, root in (("done", done), ("failed", failed)):
            for path in (root / sub).glob(f"{stem}*.jpg") if (root / sub).is_dir() else []:
                if path.read_bytes() == data:
                    homes.append((kind, path))
        if len(homes) != 1:
            v.lost_inputs.append(f"{source}: found {len(homes)} times in done/ and failed/")
            continue
        kind, path = homes[0]
        if not path.with_suffix(".yaml").is_file():
            v.lost_inputs.append(f"{source}: the sidecar did not follow the image to {kind}/")
        where[source] = kind

    # Failed jobs: a report each; note the ambiguous ones.
    ambiguous_sources: set[str] = set()
    for report_path in failed.rglob("*.error.json"):
        try:
            report = json.loads(report_path.read_text())
        except ValueError:
            v.bad_json.append(str(report_path.relative_to(folder)))
            continue
        v.failed += 1
        if report.get("code") == "submit_ambiguous":
            v.ambiguous += 1
            ambiguous_sources.add(report.get("source", ""))
        if report.get("code") not in allowed_failures:
            v.unexpected_failures.append(f"{report.get('source')}: {report.get('code')}")

    # Outputs: valid JSON naming an existing mp4 with the bytes the gateway served.
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
        outputs_per_source[meta.get("source", "")] += 1
        task = meta.get("task_id")
        if task not in by_task:
            v.wrong_videos.append(f"{rel}.mp4: task {task} was never submitted")
        elif video != sim.video_bytes(task):
            v.wrong_videos.append(f"{rel}.mp4 differs from what task {task} served")
        if meta.get("video_sha256") != _sha(video) or meta.get("video_bytes") != len(video):
            v.wrong_videos.append(f"{rel}.json: video_sha256/video_bytes do not match the mp4")
        if video[4:8] != b"ftyp":
            v.wrong_videos.append(f"{rel}.mp4 has no ftyp box")
    for source, kind in where.items():
        count = outputs_per_source[source]
        if kind == "done":
            v.done += 1
            if count != 1:
                v.duplicate_outputs.append(f"{source}: {count} outputs for one done job")
        elif count:
            v.duplicate_outputs.append(f"{source}: failed, yet {count} outputs")
    for source, count in outputs_per_source.items():
        if source not in sources:
            v.duplicate_outputs.append(f"{count} outputs for an unknown source {source!r}")

    # At most one submit per request, except jobs reported submit_ambiguous.
    by_image = {_sha(data): source for source, data in sources.items()}
    submits = Counter((r.image_sha256, r.text) for r in sim.submits)
    for (image_sha, _text), count in submits.items():
        source = by_image.get(image_sha, f"unknown image {image_sha[:12]}")
        if count > 1 and source not in ambiguous_sources:
            v.duplicate_submits.append(f"{source}: {count} submits")
    return v
