"""The simulator serves the Seedance 2 family at its own endpoints, as the gateway does
today: bodies checked key by key and role by role, always the envelope (its
request_id prefixed with the endpoint's family), videos made from the images in
their roles and as long as the task asked; and it reports its peak concurrency."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from seedance_watch.core.models import MODELS, ModelTable
from seedance_watch.simulator import Simulator, SimulatorConfig
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import BUCKET, Receiver, sha256, wait_for
from .simhelpers import (
    FAST_2,
    MODEL,
    STATUS,
    SUBMIT,
    TEXT,
    SimFactory,
    body,
    body_2,
    close_to,
    container_seconds,
    decoded_frames,
    endpoint_2,
    fast_tasks,
    frames_body_2,
    image_item,
    mean_colour,
    post,
    reference_body_2,
    solid_png,
    status,
    status_until_done,
)

RED = (220, 40, 40)
GREEN = (40, 200, 40)
BLUE = (40, 40, 220)
#: Never fetched: every refusal below comes before the images are.
NOWHERE = "http://127.0.0.1:9/never.png"
#: Short clips, small pictures: the duration tests encode whole seconds of video.
SMALL = {"video_fps": 4, "video_max_side": 64}


def envelope_id(prefix: str) -> re.Pattern[str]:
    """``<prefix>_<UUIDv7>``, as the gateway's request ids are."""
    return re.compile(
        rf"^{re.escape(prefix)}_[0-9a-f]{{8}}-[0-9a-f]{{4}}-7[0-9a-f]{{3}}-[89ab][0-9a-f]{{3}}"
        r"-[0-9a-f]{12}$"
    )


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_sim() -> Iterator[Simulator]:
    """One simulator for the refusals (none of them creates anything)."""
    with Simulator(fast_tasks()) as sim:
        yield sim


@pytest.fixture
def put_image(s3_server: S3Emulator) -> Callable[[bytes], str]:
    """``put_image(data)``: a presigned GET URL of ``data`` in the S3 emulator."""
    client = s3_server.client()

    def _put(data: bytes) -> str:
        key = f"sim2/{uuid.uuid4().hex}.png"
        client.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType="image/png")
        url: str = client.generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=600
        )
        return url

    return _put


def completed_video(sim: Simulator, request_id: str) -> bytes:
    """Poll ``request_id`` to COMPLETED and download its video (checked against the record)."""
    answer, seen = status_until_done(sim, request_id)
    assert answer["status"] == "COMPLETED", answer
    assert set(seen) <= {"QUEUED", "PROCESSING", "COMPLETED"}
    video = httpx.get(answer["output"]["media_url"], timeout=10)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.content == sim.video_bytes(request_id)
    return video.content


# --- happy paths ----------------------------------------------------------------------------


def test_image_drop_first_frame_zooms_and_lasts_the_duration_asked(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """A first frame alone at first-last-frame-to-video: the envelope (even with
    submit_answer=id), request_id prefixed seedance-2-0-fast_, polled at
    /v2/requests/status to COMPLETED; an H.264 clip of the image, 4 s as asked."""
    sim = sim_factory(fast_tasks(), **SMALL)
    red = solid_png(RED)
    url = put_image(red)
    path = endpoint_2("image")
    assert path == "/seedance-2-0-fast/v1/first-last-frame-to-video-fast"
    r = post(sim, path, frames_body_2(url, duration=4, resolution="480p", generate_audio=False))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {"request_id", "status", "polling_url"}
    request_id = answer["request_id"]
    assert envelope_id("seedance-2-0-fast").match(request_id) and answer["status"] == "QUEUED"
    assert answer["polling_url"] == f"{sim.base_url}{STATUS}{request_id}"
    video = completed_video(sim, request_id)
    frames = decoded_frames(video)
    assert len(frames) == 4 * 4 and frames[0].size == (64, 48)
    assert close_to(mean_colour(frames[0]), RED, 12) and close_to(mean_colour(frames[-1]), RED, 12)
    assert container_seconds(video) == pytest.approx(4.0)
    [record] = sim.submits
    assert record.task_id == request_id and record.endpoint == path
    assert (record.kind, record.model, record.family) == ("image", FAST_2, "2")
    assert record.roles == ("first_frame",) and record.fetched_urls == (url,)
    assert record.fetched_sha256s == (sha256(red),) and record.image_sha256 == sha256(red)
    assert record.dialect == "envelope" and record.answer == answer
    assert record.polling_url == answer["polling_url"] and record.answer_status == 200
    assert record.params == {
        "resolution": "480p",
        "ratio": "adaptive",
        "duration": 4,
        "generate_audio": False,
        "watermark": False,
    }
    assert record.video_seconds == 4.0 and sim.task_params(request_id)["duration"] == 4


def test_frames_drop_fades_from_the_first_frame_to_the_last(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """first_frame then last_frame: both fetched in order; the clip starts on the first
    image and ends on the last; with no duration sent it lasts the default 5 s."""
    sim = sim_factory(fast_tasks(), **SMALL)
    red, blue = solid_png(RED), solid_png(BLUE, size=(480, 640))
    first, last = put_image(red), put_image(blue)
    r = post(sim, endpoint_2("frames"), frames_body_2(first, last, ratio="4:3"))
    assert r.status_code == 200, r.text
    request_id = r.json()["request_id"]
    video = completed_video(sim, request_id)
    frames = decoded_frames(video)
    assert len(frames) == 5 * 4 and frames[0].size == (64, 48)
    assert close_to(mean_colour(frames[0]), RED, 12), mean_colour(frames[0])
    assert close_to(mean_colour(frames[-1]), BLUE, 12), mean_colour(frames[-1])
    middle = mean_colour(frames[len(frames) // 2])
    assert BLUE[0] + 30 < middle[0] < RED[0] - 30  # a blend, neither end
    assert container_seconds(video) == pytest.approx(5.0)
    [record] = sim.submits
    assert record.kind == "frames" and record.roles == ("first_frame", "last_frame")
    assert record.fetched_urls == (first, last)
    assert record.fetched_sha256s == (sha256(red), sha256(blue))
    assert record.params["ratio"] == "4:3" and record.params["duration"] == 5


def test_text_drop_at_mini_with_auto_duration_lasts_auto_seconds(
    sim_factory: SimFactory,
) -> None:
    """text-to-video at seedance-2-0-mini (no /v1): the prompt picture in the ratio
    asked; duration -1 lets the "model" pick auto_seconds, and the mp4 lasts that."""
    sim = sim_factory(fast_tasks(), auto_seconds=7, **SMALL)
    path = endpoint_2("text", "seedance-2-0-mini")
    assert path == "/seedance-2-0-mini/text-to-video"
    r = post(sim, path, body_2("A lighthouse at night", ratio="9:16", duration=-1))
    assert r.status_code == 200, r.text
    request_id = r.json()["request_id"]
    assert envelope_id("seedance-2-0-mini").match(request_id)
    video = completed_video(sim, request_id)
    frames = decoded_frames(video)
    assert frames[0].size == (36, 64) and frames[0].tobytes() != frames[-1].tobytes()
    assert container_seconds(video) == pytest.approx(7.0)
    [record] = sim.submits
    assert (record.kind, record.model, record.text) == (
        "text",
        "seedance-2-0-mini",
        "A lighthouse at night",
    )
    assert record.body["duration"] == -1 and record.params["duration"] == 7
    assert record.fetched_urls == () and record.roles == () and record.video_seconds == 7.0


def test_reference_drop_visits_the_references_in_order(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """reference-to-video at seedance-2-5 (which also takes 1080p): three references,
    fetched in body order; the clip starts on the first, passes the second and ends
    on the third."""
    sim = sim_factory(fast_tasks(), **SMALL)
    pictures = [solid_png(RED), solid_png(GREEN), solid_png(BLUE)]
    urls = [put_image(p) for p in pictures]
    path = endpoint_2("reference", "seedance-2-5")
    r = post(sim, path, reference_body_2(urls, resolution="1080p", duration=6))
    assert r.status_code == 200, r.text
    request_id = r.json()["request_id"]
    assert envelope_id("seedance-2-5").match(request_id)
    video = completed_video(sim, request_id)
    frames = decoded_frames(video)
    assert len(frames) == 6 * 4
    assert close_to(mean_colour(frames[0]), RED, 12), mean_colour(frames[0])
    assert close_to(mean_colour(frames[len(frames) // 2]), GREEN, 40)
    assert close_to(mean_colour(frames[-1]), BLUE, 12), mean_colour(frames[-1])
    assert container_seconds(video) == pytest.approx(6.0)
    [record] = sim.submits
    assert record.kind == "reference" and record.model == "seedance-2-5"
    assert record.roles == ("reference_image",) * 3 and record.fetched_urls == tuple(urls)
    assert record.fetched_sha256s == tuple(sha256(p) for p in pictures)
    assert record.params["resolution"] == "1080p"


def test_video_seconds_overrides_the_requested_length(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """A non-None video_seconds wins over the duration asked (the tests' fast path);
    the record keeps both."""
    sim = sim_factory(fast_tasks(), video_seconds=0.5, **SMALL)
    r = post(sim, endpoint_2("image"), frames_body_2(put_image(solid_png(RED)), duration=12))
    video = completed_video(sim, r.json()["request_id"])
    assert container_seconds(video) == pytest.approx(0.5)
    [record] = sim.submits
    assert record.video_seconds == 0.5 and record.params["duration"] == 12


def test_seedance_1_clips_last_the_duration_command(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """Seedance 1.0: the --duration command sets the clip's length; none sent, 5 s."""
    sim = sim_factory(fast_tasks(), **SMALL)
    url = put_image(solid_png(RED))
    asked = post(sim, SUBMIT, body(url, text="Waves --duration 3")).json()["id"]
    default = post(sim, TEXT, {"model": MODEL, "text": "Waves"}).json()["id"]
    wait_for(lambda: sim.tasks_by_status() == {"succeeded": 2})
    assert container_seconds(sim.video_bytes(asked)) == pytest.approx(3.0)
    assert container_seconds(sim.video_bytes(default)) == pytest.approx(5.0)
    assert [s.video_seconds for s in sim.submits] == [3.0, 5.0]


# --- webhooks, faults and knobs at the Seedance 2 endpoints ---------------------------------


def test_webhook_and_polling_origin_apply_to_seedance_2(
    sim_factory: SimFactory,
) -> None:
    """X-Webhook-URL gets the v2 answer when a Seedance 2 task ends; polling_origin is
    written into its polling_url."""
    sim = sim_factory(fast_tasks(), polling_origin="https://elsewhere.example:8443", **SMALL)
    with Receiver(status=204) as receiver:
        hook = f"{receiver.url}/webhooks/pixazo?token=t1"
        r = post(sim, endpoint_2("text"), body_2(duration=4), **{"X-Webhook-URL": hook})
        request_id = r.json()["request_id"]
        [record] = wait_for(lambda: sim.webhooks)
        [(path, _, data)] = receiver.calls
    assert r.json()["polling_url"] == f"https://elsewhere.example:8443{STATUS}{request_id}"
    assert path == "/webhooks/pixazo?token=t1" and record.status == 204
    assert data["request_id"] == request_id and data["status"] == "COMPLETED"
    assert sim.submits[0].webhook_url == hook


@pytest.mark.parametrize(
    ("knobs", "expected"),
    [
        ({"error_5xx_rate": 1.0}, {500, 503}),
        ({"rate_429": 1.0}, {429}),
        ({"credit_exhausted": True}, {402}),
        ({"access_denied": True}, {403}),
    ],
    ids=["5xx", "429", "402", "403"],
)
def test_faults_refuse_seedance_2_submits_before_a_task_exists(
    sim_factory: SimFactory, knobs: dict[str, Any], expected: set[int]
) -> None:
    """The fault knobs hit the Seedance 2 endpoints as they hit the others."""
    sim = sim_factory(fast_tasks(), **knobs)
    codes = {post(sim, endpoint_2("text"), body_2()).status_code for _ in range(6)}
    assert codes <= expected and codes
    assert sim.submits == [] and sim.submit_attempts == 6


@pytest.mark.parametrize("code", [502, 504])
def test_a_proxy_status_after_a_seedance_2_task_was_created(
    sim_factory: SimFactory, code: int
) -> None:
    """submit_status_rate: the 502/504 comes after the task exists; it runs to COMPLETED."""
    sim = sim_factory(fast_tasks(), submit_status_rate=1.0, submit_status_codes=(code,), **SMALL)
    r = post(sim, endpoint_2("text"), body_2(duration=4))
    assert r.status_code == code
    [record] = sim.submits
    assert record.answer_status == code and record.answer["request_id"] == record.task_id
    assert status_until_done(sim, record.task_id)[0]["status"] == "COMPLETED"


def test_failed_seedance_2_tasks_fail_in_the_v2_answer(sim_factory: SimFactory) -> None:
    """fail_task_rate=1: the Seedance 2 task ends FAILED or ERROR with an error object."""
    sim = sim_factory(fast_tasks(), fail_task_rate=1.0)
    request_id = post(sim, endpoint_2("text"), body_2()).json()["request_id"]
    answer, _ = status_until_done(sim, request_id)
    assert answer["status"] in ("FAILED", "ERROR") and answer["output"] is None
    assert answer["error"]["code"] == "InternalServiceError"


def test_an_unfetchable_image_is_400_naming_its_role(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """The images are really fetched: a last frame that is not an image is a 400 that
    names the role; nothing is created."""
    sim = sim_factory(fast_tasks())
    first, notes = put_image(solid_png(RED)), put_image(b"not an image")
    r = post(sim, endpoint_2("frames"), frames_body_2(first, notes))
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("last_frame could not be fetched")
    refs = [put_image(solid_png(RED)), notes]
    r = post(sim, endpoint_2("reference"), reference_body_2(refs))
    assert r.json()["error"]["message"].startswith("reference_image 2 could not be fetched")
    assert sim.submits == []


@pytest.mark.parametrize("value", [3, 16, 0, 6.0, True, "6"])
def test_auto_seconds_knob_is_an_integer_from_4_to_15(value: Any) -> None:
    """auto_seconds outside 4..15, or not an integer, is refused naming the knob."""
    with pytest.raises(ValueError, match="auto_seconds"):
        SimulatorConfig(auto_seconds=value)


@pytest.mark.parametrize("value", [0, -1.0])
def test_video_seconds_knob_is_positive_or_none(value: float) -> None:
    with pytest.raises(ValueError, match="video_seconds"):
        SimulatorConfig(video_seconds=value)


# --- peak concurrency -----------------------------------------------------------------------


def test_peak_unfinished_is_the_most_tasks_queued_or_running_at_once(
    sim_factory: SimFactory,
) -> None:
    """Three tasks at once: peak 3; once they ended, one more leaves the peak at 3;
    with max_concurrent=1 the waiting ones count too."""
    sim = sim_factory(fast_tasks(), running_seconds=0.3, video_seconds=0.5, **SMALL)
    assert sim.peak_unfinished == 0
    for _ in range(3):
        assert post(sim, endpoint_2("text"), body_2()).status_code == 200
    assert sim.peak_unfinished == 3
    wait_for(lambda: sim.tasks_by_status() == {"succeeded": 3})
    post(sim, endpoint_2("text"), body_2())
    assert sim.peak_unfinished == 3
    queued = sim_factory(fast_tasks(), max_concurrent=1, running_seconds=5.0, **SMALL)
    for _ in range(4):
        post(queued, endpoint_2("text"), body_2())
    assert queued.peak_unfinished == 4 and queued.tasks_by_status()["queued"] >= 3


def test_task_spans_say_when_each_task_was_accepted_and_finished(
    sim_factory: SimFactory,
) -> None:
    """Each task's span starts at its submit and ends when a client sees it finished
    (its video made): unfinished ones have no end yet, and no span ends before it
    starts."""
    sim = sim_factory(fast_tasks(), running_seconds=0.3, video_seconds=0.5, **SMALL)
    for _ in range(2):
        assert post(sim, endpoint_2("text"), body_2()).status_code == 200
    spans = sim.task_spans()
    assert len(spans) == 2 and all(end is None for _, end in spans)
    assert spans[0][0] <= spans[1][0]
    wait_for(lambda: sim.tasks_by_status() == {"succeeded": 2})
    ended = sim.task_spans()
    assert [start for start, _ in ended] == [start for start, _ in spans]
    assert all(end is not None and end >= start + 0.3 for start, end in ended)


# --- refusals: one rule each ----------------------------------------------------------------


def refused(sim: Simulator, path: str, payload: Any) -> dict[str, Any]:
    """The error of a submit that must be a 400 and create nothing."""
    before = len(sim.submits)
    r = post(sim, path, payload)
    assert r.status_code == 400, (payload, r.text)
    assert len(sim.submits) == before
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == "InvalidParameter"
    return error


def test_a_model_key_is_refused(strict_sim: Simulator) -> None:
    """The endpoint names the model: a body with "model" is a 400 naming the key and
    the endpoint's model."""
    error = refused(strict_sim, endpoint_2("text"), {**body_2(), "model": FAST_2})
    assert '"model"' in error["message"] and FAST_2 in error["message"]


@pytest.mark.parametrize("key", ["seed", "camerafixed", "prompt", "image_url"])
def test_a_top_level_key_the_family_does_not_take_is_refused(
    strict_sim: Simulator, key: str
) -> None:
    """Only content and the row's options are top-level keys: any other is named."""
    error = refused(strict_sim, endpoint_2("text"), {**body_2(), key: 1})
    assert error["message"].startswith(f"{key}: not a parameter of {FAST_2}")


@pytest.mark.parametrize("payload", [{}, {"content": "A kite"}, ["A kite"]], ids=str)
def test_content_must_be_a_list(strict_sim: Simulator, payload: Any) -> None:
    error = refused(strict_sim, endpoint_2("text"), payload)
    assert "content" in error["message"]


@pytest.mark.parametrize(
    ("content", "word"),
    [
        ([], "exactly one text item"),
        ([{"type": "text", "text": "A"}, {"type": "text", "text": "B"}], "exactly one text item"),
        ([{"type": "text", "text": "  "}], "content[0].text"),
        ([{"type": "text", "text": 5}], "content[0].text"),
        ([{"type": "text"}], "content[0].text is required"),
        ([{"type": "text", "text": "A", "role": "x"}], "content[0].role"),
        ([{"type": "video_url", "text": "A"}], "content[0].type"),
        (["A kite"], "content[0]"),
    ],
    ids=["none", "two", "blank", "number", "missing", "extra-key", "type", "string"],
)
def test_exactly_one_well_formed_text_item(
    strict_sim: Simulator, content: list[Any], word: str
) -> None:
    error = refused(strict_sim, endpoint_2("text"), {"content": content})
    assert word in error["message"]


@pytest.mark.parametrize("text", ["A kite --duration 5", "--ratio 16:9 A kite", "A kite--seed 3"])
def test_a_text_command_in_the_prompt_is_refused(strict_sim: Simulator, text: str) -> None:
    """Two dashes then a letter: Seedance 2 takes no text commands; the 400 names it."""
    command = re.search(r"--[a-z]+", text)
    assert command is not None
    error = refused(strict_sim, endpoint_2("text"), body_2(text))
    assert f"'{command.group()}'" in error["message"]


def test_a_prompt_with_a_lone_double_dash_is_fine(strict_sim: Simulator) -> None:
    """Dashes not followed by a letter are prose, not a command."""
    r = post(strict_sim, endpoint_2("text"), body_2("Wait -- then 3--4 waves"))
    assert r.status_code == 200, r.text


def test_an_image_url_as_a_plain_string_is_refused(strict_sim: Simulator) -> None:
    """The Seedance 1.0 shape (a string) is a 400 naming image_url."""
    payload = body_2()
    payload["content"].append({"type": "image_url", "image_url": NOWHERE, "role": "first_frame"})
    error = refused(strict_sim, endpoint_2("image"), payload)
    assert "content[1].image_url must be an object" in error["message"]


@pytest.mark.parametrize(
    ("item", "word"),
    [
        ({"type": "image_url", "image_url": {"url": NOWHERE}}, "content[1].role is required"),
        ({**image_item(NOWHERE, "first_frame"), "detail": "high"}, "content[1].detail"),
        (image_item("ftp://host/x.png", "first_frame"), "content[1].image_url.url"),
        ({**image_item(NOWHERE, "first_frame"), "image_url": {}}, "content[1].image_url"),
        ({**image_item(NOWHERE, "first_frame"), "role": 1}, "content[1].role"),
    ],
    ids=["no-role", "extra-key", "not-http", "no-url", "role-number"],
)
def test_an_image_item_is_exactly_type_image_url_and_role(
    strict_sim: Simulator, item: dict[str, Any], word: str
) -> None:
    payload = body_2()
    payload["content"].append(item)
    error = refused(strict_sim, endpoint_2("image"), payload)
    assert word in error["message"]


@pytest.mark.parametrize(
    "roles",
    [
        (),
        ("last_frame",),
        ("last_frame", "first_frame"),
        ("first_frame", "first_frame"),
        ("first_frame", "last_frame", "last_frame"),
        ("reference_image",),
    ],
    ids=str,
)
def test_first_last_frame_takes_a_first_frame_then_optionally_a_last(
    strict_sim: Simulator, roles: tuple[str, ...]
) -> None:
    payload = body_2(images=[(role, NOWHERE) for role in roles])
    error = refused(strict_sim, endpoint_2("frames"), payload)
    assert "[first_frame] or [first_frame, last_frame]" in error["message"]


@pytest.mark.parametrize("role", ["first_frame", "reference_image"])
def test_text_to_video_takes_no_image(strict_sim: Simulator, role: str) -> None:
    error = refused(strict_sim, endpoint_2("text"), body_2(images=[(role, NOWHERE)]))
    assert "takes no image" in error["message"] and role in error["message"]


@pytest.mark.parametrize(
    "roles",
    [(), ("reference_image",) * 10, ("reference_image", "first_frame")],
    ids=["none", "ten", "first_frame"],
)
def test_reference_to_video_takes_1_to_9_reference_images(
    strict_sim: Simulator, roles: tuple[str, ...]
) -> None:
    payload = body_2(images=[(role, NOWHERE) for role in roles])
    error = refused(strict_sim, endpoint_2("reference"), payload)
    assert "1 to 9 images of role reference_image" in error["message"]


@pytest.mark.parametrize(
    ("model", "key", "value"),
    [
        (FAST_2, "duration", "5"),
        (FAST_2, "duration", 3),
        (FAST_2, "duration", 16),
        (FAST_2, "duration", -2),
        (FAST_2, "duration", True),
        (FAST_2, "duration", 5.0),
        (FAST_2, "duration", "auto"),
        ("seedance-2-0", "resolution", "1080p"),
        (FAST_2, "resolution", "4k"),
        (FAST_2, "ratio", "2:1"),
        (FAST_2, "generate_audio", "true"),
        (FAST_2, "watermark", 1),
    ],
    ids=str,
)
def test_an_option_value_the_model_does_not_take_is_refused(
    strict_sim: Simulator, model: str, key: str, value: Any
) -> None:
    """Checked against the row's option specs; the 400 names the key, the model and
    the value."""
    payload = body_2(**{key: value})
    error = refused(strict_sim, endpoint_2("text", model), payload)
    assert error["message"].startswith(f"{key}: {model} does not take {json.dumps(value)} ")


def test_every_option_at_its_edge_is_taken(strict_sim: Simulator) -> None:
    """What the refusals leave: 4, 15 and -1 seconds, each ratio, 480p/720p, booleans."""
    bodies = [
        body_2(duration=4, resolution="480p", ratio="21:9", generate_audio=True, watermark=True),
        body_2(duration=15, resolution="720p", ratio="adaptive", generate_audio=False),
        body_2(duration=-1, watermark=False),
    ]
    for payload in bodies:
        assert post(strict_sim, endpoint_2("text"), payload).status_code == 200


def test_a_retired_seedance_2_model_is_not_available(sim_factory: SimFactory) -> None:
    """A Seedance 2 row retired (endpoints kept) answers 400 ModelNotAvailable there."""
    retired = dataclasses.replace(
        MODELS["seedance-2-0"], retired_on=dt.date(2027, 3, 1), replacement=FAST_2
    )
    table = ModelTable(tuple(retired if r.model == "seedance-2-0" else r for r in MODELS.values()))
    sim = sim_factory(fast_tasks(), models=table)
    r = post(sim, endpoint_2("text", "seedance-2-0"), body_2())
    assert r.status_code == 400 and r.json()["error"] == {
        "code": "ModelNotAvailable",
        "message": "The model seedance-2-0 is not available: it was switched off on 2027-03-01.",
    }
    assert post(sim, endpoint_2("text"), body_2()).status_code == 200


def test_every_live_seedance_2_endpoint_is_served(strict_sim: Simulator) -> None:
    """Each live family-2 row's text endpoint answers the envelope, prefixed with the
    endpoint's first path segment."""
    for row in MODELS.live():
        if row.family != "2":
            continue
        path = row.endpoints["text"]
        r = post(strict_sim, path, body_2())
        assert r.status_code == 200, (path, r.text)
        assert envelope_id(path.strip("/").split("/")[0]).match(r.json()["request_id"])
        assert status(strict_sim, r.json()["request_id"])["request_id"]


# --- the command line -----------------------------------------------------------------------


def test_cli_help_shows_the_default_api_key() -> None:
    """`seedance-watch simulator --help` shows the key the simulator accepts by default."""
    out = subprocess.run(
        [sys.executable, "-m", "seedance_watch", "simulator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"(default: {SimulatorConfig().api_key})" in " ".join(out.split())
    assert "--auto-seconds" in out
