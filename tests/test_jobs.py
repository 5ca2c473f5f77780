"""The job state machine: every legal transition, and that illegal ones raise."""

from __future__ import annotations

import pytest

from seedance_watch.core.jobs import (
    ACTIVE_STATES,
    Fail,
    Finished,
    HookRan,
    IllegalTransition,
    InputFile,
    Job,
    Placing,
    Redownload,
    State,
    SubmitIntent,
    SubmitRefused,
    Submitted,
    TaskSucceeded,
    Uploaded,
    apply,
    content_key,
    make_job_id,
)

from .helpers import sha256


def new_job() -> Job:
    return Job(
        job_id="j1",
        state=State.NEW,
        source="sub/beach.jpg",
        sidecar="sub/beach.yaml",
        created_at=100.0,
        updated_at=100.0,
    )


PLACING = Placing(
    output="sub/beach.mp4",
    video_sha256="ab" * 32,
    video_bytes=1234,
    moved_to=(("sub/beach.jpg", "done/sub/beach.jpg"),),
)


def test_happy_path_records_each_fact() -> None:
    """The chain NEW → … → DONE keeps the key, task id, URL and output it was given."""
    job = new_job()
    job = apply(job, Uploaded(uploads=(("image", "p/j1/beach.jpg"),)), 101)
    job = apply(job, SubmitIntent(), 102)
    assert job.state is State.SUBMITTING
    job = apply(job, Submitted(task_id="cgt-1"), 103)
    assert (job.state, job.task_id, job.submitted_at) == (State.SUBMITTED, "cgt-1", 103)
    job = apply(job, TaskSucceeded(video_url="http://v/x.mp4", usage={"total_tokens": 5}), 110)
    assert (job.video_url, job.completed_at, job.usage) == (
        "http://v/x.mp4",
        110,
        {"total_tokens": 5},
    )
    job = apply(job, PLACING, 111)
    assert (job.state, job.output, job.video_bytes) == (State.PLACING, "sub/beach.mp4", 1234)
    job = apply(job, Finished(), 112)
    assert job.state is State.DONE and job.terminal
    assert job.seq == 6 and job.updated_at == 112
    assert job.uploaded() == (("image", "p/j1/beach.jpg"),)
    assert job.object_keys == ["p/j1/beach.jpg"]


def test_submit_not_sent_returns_to_uploaded() -> None:
    """A submit that never reached the gateway may be sent again."""
    job = apply(
        apply(apply(new_job(), Uploaded(uploads=(("image", "k"),)), 1), SubmitIntent(), 2),
        SubmitRefused(),
        3,
    )
    assert job.state is State.UPLOADED


def test_redownload_clears_the_placement_plan() -> None:
    job = apply(
        apply(
            apply(apply(new_job(), Uploaded(uploads=(("image", "k"),)), 1), SubmitIntent(), 2),
            Submitted(task_id="t"),
            3,
        ),
        TaskSucceeded(video_url="u"),
        4,
    )
    job = apply(apply(job, PLACING, 5), Redownload(), 6)
    assert job.state is State.SUCCEEDED and job.output is None and job.moved_to == ()


@pytest.mark.parametrize("state", sorted(ACTIVE_STATES - {State.FAILING}))
def test_fail_from_every_active_state(state: State) -> None:
    """Any unfinished job can fail; the report records the stage and the task id."""
    job = new_job()
    job = Job(**{**job.to_dict(), "state": state, "task_id": "cgt-9"})  # type: ignore[arg-type]
    failed = apply(job, Fail(error={"code": "x", "message": "m"}, moved_to=()), 5)
    assert failed.state is State.FAILING
    assert failed.error == {"code": "x", "message": "m", "stage": state.value, "task_id": "cgt-9"}
    assert apply(failed, Finished(), 6).state is State.FAILED


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (State.NEW, SubmitIntent()),
        (State.NEW, Submitted(task_id="t")),
        (State.SUBMITTED, SubmitIntent()),
        (State.SUBMITTING, SubmitIntent()),
        (State.DONE, Fail(error={}, moved_to=())),
        (State.FAILED, Finished()),
        (State.FAILING, Fail(error={}, moved_to=())),
        (State.SUCCEEDED, Finished()),
    ],
)
def test_illegal_transitions_raise(state: State, event: object) -> None:
    job = Job(**{**new_job().to_dict(), "state": state})  # type: ignore[arg-type]
    with pytest.raises(IllegalTransition):
        apply(job, event, 1)  # type: ignore[arg-type]


def test_round_trip_through_dict() -> None:
    """to_dict/from_dict preserve every field (moved_to pairs included)."""
    job = apply(
        apply(
            apply(apply(new_job(), Uploaded(uploads=(("image", "k"),)), 1), SubmitIntent(), 2),
            Submitted(task_id="t"),
            3,
        ),
        TaskSucceeded(video_url="u", usage={"a": 1}),
        4,
    )
    job = apply(job, PLACING, 5)
    data = job.to_dict()
    assert "duplicate_of" not in data  # None fields are left out
    assert Job.from_dict(data) == job


def test_identity_helpers() -> None:
    """The content key depends on image, model and text; the job id on the drop."""
    assert content_key("a", "m", "t") == content_key("a", "m", "t")
    assert content_key("a", "m", "t") != content_key("a", "m", "t2")
    assert content_key("a", "m", "t") != content_key("a", "m2", "t")
    # An image drop's key is the first release's: sha256 of "image\0model\0text\0".
    assert content_key("a", "m", "t") == sha256(b"a\0m\0t\0")
    # A frames drop's key covers both images; a text drop's only the model and text.
    frames = content_key("a", "m", "t", kind="frames", last_frame_sha256="z")
    assert frames != content_key("a", "m", "t", kind="frames", last_frame_sha256="y")
    assert frames != content_key("a", "m", "t")
    text = content_key(None, "m", "t", kind="text")
    assert text == content_key(None, "m", "t", kind="text")
    assert text != content_key(None, "m", "t2", kind="text")
    assert text != content_key(None, "m", "t")  # a text drop never dedupes an image drop
    first = make_job_id("x.jpg", "a", "b", 1)
    assert first == make_job_id("x.jpg", "a", "b", 1)
    assert first != make_job_id("x.jpg", "a", "b", 2)
    assert len(first) == 16


def test_a_v1_record_loads_as_pixazo_image_to_video() -> None:
    """A record written by the first release (one ``s3_key``, no kind) loads unchanged."""
    v1 = {
        "job_id": "j1",
        "state": "uploaded",
        "source": "beach.jpg",
        "sidecar": "beach.yaml",
        "created_at": 1.0,
        "updated_at": 2.0,
        "image_sha256": "aa",
        "s3_key": "seedance-watch/j1/beach.jpg",
        "seq": 1,
    }
    job = Job.from_dict(v1)
    assert (job.kind, job.provider, job.inputs, job.uploads) == ("image", "pixazo", (), ())
    assert job.uploaded() == (("image", "seedance-watch/j1/beach.jpg"),)  # no last frame
    assert job.to_dict() == v1  # written back as it was read


def test_v2_fields_round_trip_and_intent_is_cleared_by_a_refusal() -> None:
    """Inputs, uploads, the task reference and the budget's intent time survive to_dict."""
    inputs = (
        InputFile("image", "a.jpg", "aa", 10, 1, 2, 3),
        InputFile("last_frame", "b.png", "bb", 11, 1, 4, 5),
        InputFile("sidecar", "a.yaml", "cc", 12, 1, 6, 7),
    )
    job = Job(**{**new_job().to_dict(), "kind": "frames", "inputs": inputs})  # type: ignore[arg-type]
    job = apply(job, Uploaded(uploads=(("image", "k1"), ("last_frame", "k2"))), 1)
    job = apply(job, SubmitIntent(), 2)
    assert job.intent_at == 2
    assert apply(job, SubmitRefused(), 3).intent_at is None
    job = apply(
        job,
        Submitted(task_id="r1", poll_url="http://g/v2/requests/status/r1", dialect="envelope"),
        3,
    )
    assert job.intent_at == 2 and job.dialect == "envelope"
    assert Job.from_dict(job.to_dict()) == job
    assert [f for f in job.to_dict()["inputs"]][1]["role"] == "last_frame"
    assert job.object_keys == ["k1", "k2"]


def test_a_hook_runs_once_per_terminal_job() -> None:
    """HookRan is recorded on DONE or FAILED only, and keeps the state."""
    job = Job(**{**new_job().to_dict(), "state": State.DONE})  # type: ignore[arg-type]
    ran = apply(job, HookRan(), 9)
    assert ran.state is State.DONE and ran.hook_done
    with pytest.raises(IllegalTransition):
        apply(new_job(), HookRan(), 9)
