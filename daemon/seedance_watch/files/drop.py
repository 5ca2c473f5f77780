"""The rules of a drop: read, hash and check its files, and the job they make.

A drop is an image and its sidecar, with a last frame or reference images when the
sidecar names them, or a sidecar alone (text to video).  :func:`examine_drop` reads
every file once through the descriptor whose identity the job records, hashes it,
validates the sidecar and the images, and returns the job and, for an invalid
drop, the error it fails with; the ``bare_*`` functions and :func:`event_error`
make the job and the error of an inbox event that is not a valid drop.  Shared by
the intake stage (which runs them in a worker thread) and ``validate``.  No
asyncio, no ledger and no network here.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from seedance_watch import errors as E
from seedance_watch.core.budget import BudgetPrices, money
from seedance_watch.core.jobs import InputFile, Job, State, content_key, make_job_id
from seedance_watch.core.models import DEFAULT_MODELS, Kind
from seedance_watch.core.names import is_image, is_sidecar, pair_stem
from seedance_watch.core.options import GenerationOptions
from seedance_watch.core.stability import AmbiguousDrop, InboxEvent, Orphan, PairReady, Unsafe
from seedance_watch.files.fsutil import lstat_beneath, open_beneath, read_beneath
from seedance_watch.files.images import (
    MAX_IMAGE_BYTES,
    check_image,
    check_image_bytes,
    image_too_large,
)
from seedance_watch.files.presets import read_presets
from seedance_watch.files.sidecar import (
    SIDECAR_MAX_BYTES,
    Sidecar,
    build_request,
    parse_sidecar,
)

__all__ = [
    "Drop",
    "bare_inputs",
    "bare_job",
    "bare_job_id",
    "check_drop_files",
    "check_last_frame",
    "check_reference",
    "event_error",
    "event_files",
    "examine_drop",
    "input_file",
    "inputs_in_place",
    "job_groups",
    "over_budget",
]


@dataclass(frozen=True)
class Drop:
    job: Job
    error: E.JobError | None


@dataclass(frozen=True)
class _Image:
    """One image of a drop as intake read it: the hash of its bytes, what ``fstat``
    said of the descriptor read, and what the image checks said of those same bytes."""

    sha256: str
    stat: os.stat_result
    error: E.InvalidImage | None


def _read_image(inbox: Path, role: str, rel: str) -> _Image:
    """Open ``rel`` once (no link followed at any depth, never blocking: see
    :func:`fsutil.open_beneath`), refuse a size over the limit from ``fstat`` before
    reading a byte, then hash and check the very bytes read (docs/design.md, "A job
    owns the files it examined")."""
    with os.fdopen(open_beneath(inbox, rel), "rb") as f:
        too_large = image_too_large(os.fstat(f.fileno()).st_size)
        if too_large is not None:
            raise _named(too_large, role, rel)
        data = f.read(MAX_IMAGE_BYTES + 1)
        st = os.fstat(f.fileno())
    error = None
    try:
        check_image_bytes(PurePosixPath(rel).name, data)
    except E.InvalidImage as exc:
        error = _named(exc, role, rel)
    return _Image(hashlib.sha256(data).hexdigest(), st, error)


def _named(exc: E.InvalidImage, role: str, rel: str) -> E.InvalidImage:
    """The report of a last frame or a reference image names the file."""
    what = _WHAT.get(role)
    if what is None:
        return exc
    return E.InvalidImage(f"{what} {PurePosixPath(rel).name}: {exc.message}", hint=exc.hint)


_WHAT = {"last_frame": "last frame", "reference": "reference image"}


def input_file(role: str, rel: str, sha256: str, st: os.stat_result) -> InputFile:
    """The identity of an examined input (docs/design.md, "A job owns the files it examined": a job
    owns the exact files it read)."""
    return InputFile(role, rel, sha256, st.st_size, st.st_dev, st.st_ino, st.st_mtime_ns)


def examine_drop(
    inbox: Path,
    image_rel: str | None,
    sidecar_rel: str,
    *,
    last_frame: str | None = None,
    references: tuple[str, ...] = (),
    defaults: GenerationOptions,
    models: Mapping[Kind, str] = DEFAULT_MODELS,
    now: float,
    strict_model: bool = False,
) -> Drop:
    """Hash and validate one drop; the job id is derived from what was dropped.

    A drop is an image and its sidecar, plus ``last_frame`` for a first-and-last-frame
    drop; the sidecar alone (``image_rel`` None) for text to video; the sidecar and its
    ``references`` (in its order) for reference images.  Every file is read once,
    through the descriptor whose identity the job records; the lead (the job's
    ``source``) is the image, else the sidecar.  The folder presets above the drop
    (:mod:`.presets`) are read with it.  With ``strict_model`` a sidecar or preset
    ``model:`` the daemon does not know fails the drop (``gateway.strict_model``);
    otherwise it is logged and kept.
    """
    named = [("image", image_rel), ("last_frame", last_frame), ("sidecar", sidecar_rel)]
    named += [("reference", rel) for rel in references]
    files = [(role, rel) for role, rel in named if rel is not None]
    kind = _paired_kind(image_rel, last_frame, references)
    try:
        sidecar_bytes, sidecar_st = read_beneath(
            inbox, sidecar_rel, max_bytes=SIDECAR_MAX_BYTES + 1
        )
        images = {rel: _read_image(inbox, role, rel) for role, rel in files if role != "sidecar"}
    except E.JobError as exc:
        return Drop(_bare(inbox, files, kind, now), exc)
    except FileNotFoundError as exc:
        gone = E.InputVanished(f"{Path(exc.filename or '').name} left the inbox.")
        return Drop(replace(_bare(inbox, files, kind, now), inputs=_hashed(inbox, files)), gone)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link appeared under an examined name, or above it
            name = exc.filename or image_rel or sidecar_rel
            unsafe = E.UnsafePath(f"{name} is a symbolic link; not followed.")
            return Drop(_bare(inbox, files, kind, now), unsafe)
        raise
    sidecar_sha = hashlib.sha256(sidecar_bytes).hexdigest()
    shas = {rel: image.sha256 for rel, image in images.items()} | {sidecar_rel: sidecar_sha}
    stats = {rel: image.stat for rel, image in images.items()} | {sidecar_rel: sidecar_st}
    lead = files[0][1]
    reference_shas = tuple(shas[rel] for rel in references)
    # The id of an image drop is what it always was; other images are part of the drop.
    others = [shas[last_frame]] if last_frame is not None else list(reference_shas)
    sidecar_part = "\0".join([sidecar_sha, *others])
    job = Job(
        job_id=make_job_id(lead, shas[lead], sidecar_part, stats[lead].st_ctime_ns),
        state=State.NEW,
        source=lead,
        sidecar=sidecar_rel,
        created_at=now,
        updated_at=now,
        image_sha256=shas[image_rel] if image_rel is not None else None,
        kind=kind,
        inputs=tuple(input_file(role, rel, shas[rel], stats[rel]) for role, rel in files),
    )
    try:
        sidecar = parse_sidecar(sidecar_bytes, strict_model=strict_model)
        # Read now, not at start: an edited preset applies to the next drop.
        folder = PurePosixPath(sidecar_rel).parent.as_posix()
        presets = read_presets(inbox, folder, strict_model=strict_model)
        check_drop_files(sidecar, image_rel, sidecar_rel, last_frame, references)
        request = build_request(sidecar, defaults=defaults, models=models, presets=presets)
        # The image checks ran on the bytes hashed; their verdict comes after the sidecar's.
        for image in images.values():
            if image.error is not None:
                raise image.error
    except E.JobError as exc:
        return Drop(job, exc)
    job = replace(
        job,
        kind=request.kind,
        model=request.model,
        prompt=request.prompt,
        text=request.text,
        options=request.options.set_options(),
        priority=request.priority,
        content_key=content_key(
            job.image_sha256,
            request.model,
            request.text,
            kind=request.kind,
            last_frame_sha256=shas[last_frame] if last_frame is not None else None,
            reference_sha256s=reference_shas,
            body_options=request.body_options,
        ),
    )
    return Drop(job, None)


def _paired_kind(image_rel: str | None, last_frame: str | None, references: tuple[str, ...]) -> str:
    """The kind of drop the pairer found (a job that fails before its sidecar is read)."""
    if references:
        return "reference"
    if image_rel is None:
        return "text"
    return "frames" if last_frame is not None else "image"


def over_budget(job: Job, prices: BudgetPrices) -> E.OverBudget | None:
    """The error of a job that alone would cost more than the whole daily cap (it could
    never be submitted: better refused now, before its images are uploaded)."""
    cap = prices.max_cost_per_day
    if cap is None or job.model is None:
        return None
    cost = prices.reserve(job.model, job.options)
    if cost.cents <= cap:
        return None
    how = (
        f"{cost.seconds} s at {cost.rate} per second"
        if cost.seconds is not None
        else "one generation"
    )
    return E.OverBudget(
        f"This {job.kind} drop with {job.model} would cost {money(cost.cents)} "
        f"{prices.currency} ({how}), more than budget.max_cost_per_day "
        f"({money(cap)}): it could never be submitted."
    )


def check_drop_files(
    sidecar: Sidecar,
    image_rel: str | None,
    sidecar_rel: str,
    last_frame: str | None,
    references: tuple[str, ...] = (),
) -> None:
    """The files paired are the ones the sidecar asks for, or InvalidSidecar.

    A text or reference drop has no image of the sidecar's name: one beside it is
    refused, naming both, and so is a reference or last frame of that name.  Files
    paired that the sidecar (as read now) does not name mean it changed after it
    was found complete (InputReplaced).
    """
    changed = _changed(sidecar_rel)
    if sidecar.mode == "text":
        if image_rel is not None:
            raise E.InvalidSidecar(
                f"{sidecar_rel} says mode: text (text to video, no image), but the image "
                f"{image_rel} has the same name; a text drop is its sidecar alone",
                key="mode",
                hint="Remove the image, or remove the line mode: text to animate the image.",
            )
        if last_frame is not None or references:
            raise changed
        return
    if sidecar.references:
        _check_reference_files(sidecar, image_rel, sidecar_rel, references)
        if last_frame is not None:
            raise changed
        return
    if references:
        raise changed
    if image_rel is None:
        # Paired as a text drop, but the sidecar read now asks for an image.
        raise changed
    if sidecar.last_frame is not None:
        if PurePosixPath(sidecar.last_frame).stem == PurePosixPath(sidecar_rel).stem:
            raise E.InvalidSidecar(
                f"last_frame: {sidecar.last_frame} is the drop's own image; the end image "
                "must be another file",
                key="last_frame",
                hint="Name the end image in last_frame:, a file with another name.",
            )
        if last_frame is None or PurePosixPath(last_frame).name != sidecar.last_frame:
            raise changed
    elif last_frame is not None:
        raise changed


def _check_reference_files(
    sidecar: Sidecar, image_rel: str | None, sidecar_rel: str, references: tuple[str, ...]
) -> None:
    """A reference drop is its sidecar and the images it lists, none of its own name."""
    own_stem = PurePosixPath(sidecar_rel).stem
    hint = (
        "Give the reference images names of their own (not the sidecar's), list them "
        "in references:, and remove the image of the sidecar's name."
    )
    own = [ref for ref in sidecar.references if PurePosixPath(ref).stem == own_stem]
    if own:
        raise E.InvalidSidecar(
            f"references: {', '.join(own)} has the name of the sidecar {sidecar_rel}; a "
            "reference drop is its sidecar and the images it lists, none of its own name",
            key="references",
            hint=hint,
        )
    if image_rel is not None:
        raise E.InvalidSidecar(
            f"{sidecar_rel} lists reference images (references:), but the image "
            f"{image_rel} has the same name; a reference drop is its sidecar and the "
            "images it lists",
            key="references",
            hint=hint,
        )
    if tuple(PurePosixPath(rel).name for rel in references) != sidecar.references:
        raise _changed(sidecar_rel)


def _changed(sidecar_rel: str) -> E.InputReplaced:
    """The files paired are not the ones the sidecar names now: it was rewritten."""
    name = PurePosixPath(sidecar_rel).name
    return E.InputReplaced(f"{name} changed after it was found complete; drop it again.")


def check_last_frame(path: Path) -> None:
    """:func:`check_image` for a last frame: the same limits, the report names the file."""
    _check_named_image(path, "last_frame")


def check_reference(path: Path) -> None:
    """:func:`check_image` for a reference image: the same limits, the report names it."""
    _check_named_image(path, "reference")


def _check_named_image(path: Path, role: str) -> None:
    try:
        check_image(path)
    except E.InvalidImage as exc:
        raise _named(exc, role, path.name) from exc


def _bare(inbox: Path, files: list[tuple[str, str]], kind: str, now: float) -> Job:
    """The job of a drop that could not be examined (it will only fail)."""
    paths = [rel for _, rel in files]
    return replace(
        Job(
            job_id=bare_job_id(paths, now),
            state=State.NEW,
            source=paths[0],
            sidecar=next((rel for role, rel in files if role == "sidecar"), None),
            created_at=now,
            updated_at=now,
            kind=kind,
        ),
        inputs=bare_inputs(inbox, files),
    )


def _hashed(inbox: Path, files: Iterable[tuple[str, str]]) -> tuple[InputFile, ...]:
    """The identities of a drop's files still there, hashed as an examined drop's are.

    A drop found partly gone is most often one that another host of a shared store is
    moving away as it ends: its files' claims carry their hashes, and so must this
    drop's, to meet them (an unhashed identity would claim the same file anew)."""
    out = []
    for role, rel in files:
        try:
            data, st = read_beneath(inbox, rel, max_bytes=MAX_IMAGE_BYTES + 1)
        except OSError:
            continue
        out.append(input_file(role, rel, hashlib.sha256(data).hexdigest(), st))
    return tuple(out)


def bare_inputs(inbox: Path, files: Iterable[tuple[str, str]]) -> tuple[InputFile, ...]:
    """The identities of files that were not hashed (``sha256`` empty): a failed drop
    still owns only the very files it was about, so a newcomer under one of their
    names stays in the inbox.  A file gone already is left out."""
    out = []
    for role, rel in files:
        try:
            st = lstat_beneath(inbox, rel)
        except OSError:
            continue
        out.append(input_file(role, rel, "", st))
    return tuple(out)


def inputs_in_place(inbox: Path, inputs: Iterable[InputFile]) -> bool:
    """Whether every input is still in the inbox as it was examined (the same device,
    inode, size and mtime), reached below the inbox without following a link."""
    for item in inputs:
        try:
            st = lstat_beneath(inbox, item.path)
        except OSError:
            return False
        seen = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if seen != (item.dev, item.ino, item.size, item.mtime_ns):
            return False
    return True


def bare_job_id(files: list[str], now: float) -> str:
    """The id of a drop that is not a valid pair (orphan, link, ambiguous names)."""
    return make_job_id("\0".join(files), "-", "-", int(now * 1e9))


def event_files(event: InboxEvent) -> list[str]:
    """The inbox files of an event, the lead (the job's source) first."""
    if isinstance(event, PairReady | AmbiguousDrop):
        return list(event.paths)
    return _lead_first([event.path, *event.partners])


def _lead_first(files: list[str]) -> list[str]:
    """Images before sidecars, and first the lead: the image of the sidecar's name, else
    the sidecar (never the last frame of a drop whose own image is missing)."""
    ordered = sorted(files, key=lambda p: not is_image(p))
    sidecars = [p for p in ordered if is_sidecar(p)]
    if sidecars:
        stem = pair_stem(sidecars[0])
        lead = next((p for p in ordered if is_image(p) and pair_stem(p) == stem), sidecars[0])
        ordered.remove(lead)
        ordered.insert(0, lead)
    return ordered


def _roles(event: InboxEvent, files: list[str]) -> list[tuple[str, str]]:
    """``(role, path)`` of a failing drop's files (an orphaned drop's files of another
    stem than its sidecar are what the sidecar claims them as: its ``last_frame``, its
    ``reference`` images; the rest by their names)."""
    claimed: dict[str, str] = {}
    if isinstance(event, Orphan) and event.role is not None:
        own = pair_stem(event.path)
        claimed = {p: event.role for p in event.partners if pair_stem(p) != own}
    roles = [claimed.get(rel) or ("image" if is_image(rel) else "sidecar") for rel in files]
    return list(zip(roles, files, strict=True))


def bare_job(event: InboxEvent, now: float, inbox: Path | None = None) -> Job:
    """A job for an input that is not a valid drop (it will only fail).

    With ``inbox``, the job records the identity of each file (see :func:`bare_inputs`).
    """
    files = event_files(event)
    sidecars = [p for p in files if not is_image(PurePosixPath(p).name)]
    pair = len(files) == 2 and not is_image(PurePosixPath(files[1]).name)
    job = Job(
        job_id=bare_job_id(files, now),
        state=State.NEW,
        source=files[0],
        sidecar=files[1] if pair else (sidecars[0] if sidecars else None),
        created_at=now,
        updated_at=now,
    )
    if inbox is not None:
        job = replace(job, inputs=bare_inputs(inbox, _roles(event, files)))
    return job


def event_error(event: InboxEvent) -> E.JobError:
    """The error a drop that is not a valid pair fails with (shared with ``validate``)."""
    if isinstance(event, Orphan):
        if event.code == "missing_sidecar":
            stem = PurePosixPath(event.path).stem
            return E.MissingSidecar(
                f"No sidecar ({stem}.yaml or {stem}.yml) arrived for {event.path} "
                "within watch.pair_timeout."
            )
        if event.missing and event.role == "reference":
            listed = ", ".join(event.missing)
            images = "image" if len(event.missing) == 1 else "images"
            return E.MissingImage(
                f"The reference {images} {listed} named by {event.path} did not arrive "
                "within watch.pair_timeout.",
                hint=f"Drop {', '.join(PurePosixPath(p).name for p in event.missing)} beside "
                "the sidecar, or fix its references: line, then move the drop back into "
                "the inbox.",
            )
        if event.missing:
            (missing,) = event.missing
            own = [p for p in event.partners if pair_stem(p) == pair_stem(event.path)]
            also = "" if own else f", nor an image with the name of {event.path}"
            return E.MissingImage(
                f"The last frame {missing} named by {event.path} did not arrive "
                f"within watch.pair_timeout{also}.",
                hint=f"Drop {PurePosixPath(missing).name} beside the sidecar, or fix "
                "its last_frame: line, then move the drop back into the inbox.",
            )
        return E.MissingImage(
            f"No image arrived for the sidecar {event.path} within watch.pair_timeout."
        )
    if isinstance(event, Unsafe):
        return E.UnsafePath(
            f"{event.path} is a symbolic link; links are never followed out of the inbox."
        )
    if isinstance(event, AmbiguousDrop):
        return E.AmbiguousPair(event.message)
    raise TypeError(f"a ready pair is not an error: {event!r}")


def job_groups(paths: tuple[str, ...] | list[str]) -> list[list[str]]:
    """The files of an ambiguous group, as jobs of at most two files each.

    A job record holds two inputs (an image and a sidecar), so ``a.jpg`` + ``a.yaml`` +
    ``a.yml`` fail as ``[a.jpg, a.yaml]`` then ``[a.yml]``: images first, each with a
    sidecar while there are some, so every file moves to failed/ beside a report.
    """
    images = sorted(p for p in paths if is_image(PurePosixPath(p).name))
    others = sorted(p for p in paths if not is_image(PurePosixPath(p).name))
    ordered: list[str] = []
    while images or others:
        if images:
            ordered.append(images.pop(0))
        if others:
            ordered.append(others.pop(0))
    return [ordered[i : i + 2] for i in range(0, len(ordered), 2)]
