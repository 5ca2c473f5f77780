"""The simulator speaks today's gateway too: the envelope answer and its v2 status
endpoint, the Seedance 1.0 text endpoint, the models it refuses at the 1.0
endpoints, webhooks, and the proxy statuses that lose a submit's answer after the
task was created."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from seedance_watch.core.models import MODELS, ModelTable
from seedance_watch.simulator import Simulator, SimulatorConfig
from seedance_watch.simulator.video import text_picture
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import BUCKET, Receiver, free_port, make_image_bytes, sha256, wait_for
from .simhelpers import (
    FAST_2,
    MODEL,
    POLL,
    STATUS,
    SUBMIT,
    TEXT,
    SimFactory,
    _ready_line,
    body,
    container_seconds,
    decoded_frames,
    fast_tasks,
    headers,
    post,
    status,
    status_until_done,
)

FRAMES = "/byteplus/v1/generateFrame2VideoTask"
#: The text model of these tests: Seedance 1.0 Pro Fast takes image and text.
T2V = MODEL
PRO = "seedance-1-0-pro-250528"
LITE = "seedance-1-0-lite-i2v-250428"
LITE_T2V = "seedance-1-0-lite-t2v-250428"
ENVELOPE_ID = re.compile(
    r"^byteplus_[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def put_image(s3_server: S3Emulator) -> Callable[[bytes], str]:
    """``put_image(data)``: a presigned GET URL of ``data`` in the S3 emulator."""
    client = s3_server.client()

    def _put(data: bytes) -> str:
        key = f"sim/{uuid.uuid4().hex}.png"
        client.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType="image/png")
        url: str = client.generate_presigned_url(
            "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=600
        )
        return url

    return _put


def legacy_until_done(sim: Simulator, task_id: str) -> dict[str, Any]:
    def step() -> dict[str, Any] | None:
        r = post(sim, POLL, {"task_id": task_id})
        assert r.status_code == 200, r.text
        task: dict[str, Any] = r.json()
        return None if task["status"] in ("queued", "running") else task

    return wait_for(step)  # type: ignore[no-any-return]


# --- the envelope dialect -------------------------------------------------------------------


def test_envelope_answer_and_v2_status_serve_the_video(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """submit_answer=envelope: request_id/QUEUED/polling_url; GET polling_url walks to
    COMPLETED with output.media_url; the records say how it was answered."""
    sim = sim_factory(fast_tasks(), submit_answer="envelope")
    data = make_image_bytes()
    url = put_image(data)
    r = post(sim, SUBMIT, body(url, text="Waves --resolution 480p"))
    assert r.status_code == 200
    answer = r.json()
    assert set(answer) == {"request_id", "status", "polling_url"}
    request_id = answer["request_id"]
    assert ENVELOPE_ID.match(request_id) and answer["status"] == "QUEUED"
    assert answer["polling_url"] == f"{sim.base_url}{STATUS}{request_id}"
    task, seen = status_until_done(sim, request_id)
    assert set(seen) <= {"QUEUED", "PROCESSING", "COMPLETED"} and seen[-1] == "COMPLETED"
    assert task["request_id"] == request_id and task["error"] is None
    media_url = task["output"]["media_url"]
    assert isinstance(media_url, str) and f"/videos/{request_id}.mp4?" in media_url
    video = httpx.get(media_url, timeout=10)
    assert video.status_code == 200 and video.content == sim.video_bytes(request_id)
    assert sim.task_params(request_id)["resolution"] == "480p"
    [record] = sim.submits
    assert record.task_id == request_id and record.dialect == "envelope"
    assert record.polling_url == answer["polling_url"] and record.answer_status == 200
    assert record.endpoint == SUBMIT and record.kind == "image" and record.webhook_url is None
    assert record.fetched_urls == (url,) and record.image_url == url
    assert record.fetched_sha256s == (sha256(data),)
    assert record.image_sha256 == record.fetched_sha256s[0]


def test_id_dialect_records_its_dialect(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """The default dialect stays {"id"}; its record says so and names no polling URL."""
    sim = sim_factory(fast_tasks())
    r = post(sim, SUBMIT, body(put_image(make_image_bytes())))
    assert set(r.json()) == {"id"} and r.json()["id"].startswith("cgt-")
    [record] = sim.submits
    assert record.dialect == "id" and record.polling_url is None


def test_polling_origin_names_a_foreign_origin(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """polling_origin puts another origin into polling_url; the task is still polled here."""
    sim = sim_factory(
        fast_tasks(), submit_answer="envelope", polling_origin="https://elsewhere.example:8443"
    )
    answer = post(sim, SUBMIT, body(put_image(make_image_bytes()))).json()
    request_id = answer["request_id"]
    assert answer["polling_url"] == f"https://elsewhere.example:8443{STATUS}{request_id}"
    assert status(sim, request_id)["request_id"] == request_id


def test_each_poll_endpoint_knows_only_its_own_dialect(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """Envelope ids are 404 on getVideoResult, cgt- ids 404 on /v2; unknown ids 404;
    the v2 endpoint checks the key and allows only GET."""
    sim = sim_factory(fast_tasks())
    url = put_image(make_image_bytes())
    legacy_id = post(sim, SUBMIT, body(url)).json()["id"]
    sim.configure(submit_answer="envelope")
    request_id = post(sim, SUBMIT, body(url)).json()["request_id"]
    assert post(sim, POLL, {"task_id": legacy_id}).status_code == 200
    assert status(sim, request_id)["request_id"] == request_id
    r = post(sim, POLL, {"task_id": request_id})
    assert r.status_code == 404 and r.json()["error"]["code"] == "NotFound"
    for missing in (legacy_id, "byteplus_nope"):
        r = httpx.get(sim.base_url + STATUS + missing, headers=headers(), timeout=10)
        assert r.status_code == 404 and missing in r.json()["error"]["message"]
    r = httpx.get(sim.base_url + STATUS + request_id, headers=headers("wrong"), timeout=10)
    assert r.status_code == 401
    assert post(sim, STATUS + request_id, {}).status_code == 405
    assert sim.polls >= 6


def test_media_url_as_list_or_alternating(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """media_url_style=list gives ["<url>"]; alternate gives a string, then a list."""
    sim = sim_factory(fast_tasks(), submit_answer="envelope", media_url_style="list")
    url = put_image(make_image_bytes())
    first = post(sim, SUBMIT, body(url)).json()["request_id"]
    task, _ = status_until_done(sim, first)
    [media] = task["output"]["media_url"]
    assert httpx.get(media, timeout=10).content == sim.video_bytes(first)
    sim.configure(media_url_style="alternate")
    second = post(sim, SUBMIT, body(url)).json()["request_id"]
    shapes = {
        type(status_until_done(sim, rid)[0]["output"]["media_url"]) for rid in (first, second)
    }
    assert shapes == {str, list}


@pytest.mark.parametrize(
    ("knobs", "code"),
    [
        ({"fail_task_rate": 1.0}, "InternalServiceError"),
        ({"expire_task_rate": 1.0}, "TaskExpired"),
    ],
)
def test_v2_failures_carry_an_error_object(
    sim_factory: SimFactory,
    put_image: Callable[[bytes], str],
    knobs: dict[str, Any],
    code: str,
) -> None:
    """A failed or expired task is FAILED/ERROR (alternating) with {"code", "message"}."""
    sim = sim_factory(fast_tasks(), submit_answer="envelope", **knobs)
    url = put_image(make_image_bytes())
    ids = [post(sim, SUBMIT, body(url)).json()["request_id"] for _ in range(2)]
    answers = [status_until_done(sim, rid)[0] for rid in ids]
    assert {a["status"] for a in answers} == {"FAILED", "ERROR"}
    for answer in answers:
        assert answer["output"] is None
        assert answer["error"]["code"] == code and answer["error"]["message"]
    assert httpx.get(f"{sim.base_url}/videos/{ids[0]}.mp4", timeout=10).status_code == 404


def test_v2_error_as_string_or_alternating(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """error_style=string gives "TaskExpired: ..."; alternate mixes object and string."""
    sim = sim_factory(
        fast_tasks(), submit_answer="envelope", expire_task_rate=1.0, error_style="string"
    )
    url = put_image(make_image_bytes())
    first = post(sim, SUBMIT, body(url)).json()["request_id"]
    error = status_until_done(sim, first)[0]["error"]
    assert isinstance(error, str) and error.startswith("TaskExpired")
    sim.configure(error_style="alternate")
    second = post(sim, SUBMIT, body(url)).json()["request_id"]
    kinds = {type(status_until_done(sim, rid)[0]["error"]) for rid in (first, second)}
    assert kinds == {str, dict}


def test_cancelled_tasks(sim_factory: SimFactory, put_image: Callable[[bytes], str]) -> None:
    """cancel_task_rate=1: v2 says CANCELLED, the legacy poll "cancelled"; no video."""
    sim = sim_factory(fast_tasks(), submit_answer="envelope", cancel_task_rate=1.0)
    url = put_image(make_image_bytes())
    request_id = post(sim, SUBMIT, body(url)).json()["request_id"]
    answer, _ = status_until_done(sim, request_id)
    assert answer["status"] == "CANCELLED" and answer["output"] is None
    sim.configure(submit_answer="id")
    task = legacy_until_done(sim, post(sim, SUBMIT, body(url)).json()["id"])
    assert task["status"] == "cancelled" and "content" not in task
    assert sim.tasks_by_status() == {"cancelled": 2}


# --- the frames and text endpoints ----------------------------------------------------------


def test_text_video_decodes_in_the_ratio_asked(sim_factory: SimFactory) -> None:
    """generateVideoTask needs no image: the clip is drawn from the prompt, in --ratio,
    and lasts the --duration asked."""
    sim = sim_factory(fast_tasks(), submit_answer="envelope")
    r = post(sim, TEXT, {"model": T2V, "text": "A lighthouse at night --ratio 9:16 --duration 3"})
    assert r.status_code == 200, r.text
    request_id = r.json()["request_id"]
    answer, _ = status_until_done(sim, request_id)
    assert answer["status"] == "COMPLETED"
    video = httpx.get(answer["output"]["media_url"], timeout=10).content
    frames = decoded_frames(video)
    assert len(frames) == 3 * 8 and frames[0].size == (144, 256)
    assert frames[0].tobytes() != frames[-1].tobytes()
    assert container_seconds(video) == pytest.approx(3.0)
    [record] = sim.submits
    assert record.kind == "text" and record.endpoint == TEXT and record.model == T2V
    assert record.fetched_urls == () and record.fetched_sha256s == () and record.image_url == ""
    assert record.family == "1.0" and record.roles == () and record.video_seconds == 3.0
    assert record.params["ratio"] == "9:16" and record.answer["request_id"] == request_id


def test_text_picture_is_a_function_of_the_prompt() -> None:
    """One prompt, one picture; another prompt, another picture."""
    one = text_picture("A lighthouse", 64, 36).tobytes()
    assert one == text_picture("A lighthouse", 64, 36).tobytes()
    assert one != text_picture("A harbour", 64, 36).tobytes()


def test_text_bodies_are_checked_strictly(sim_factory: SimFactory) -> None:
    """Extra or missing keys, non-strings, empty text, unknown commands → 400; an
    unknown model → 404; nothing is created."""
    sim = sim_factory(fast_tasks())
    cases: list[tuple[Any, int, str]] = [
        ({"model": T2V, "text": "Sea", "content": []}, 400, "exactly"),
        ({"model": T2V}, 400, "text"),
        ({"model": T2V, "text": ["Sea"]}, 400, "text must be a string"),
        ({"model": T2V, "text": "  "}, 400, "empty"),
        ({"model": T2V, "text": "Sea --motion high"}, 400, "--motion"),
        ({"model": "seedance-9", "text": "Sea"}, 404, "seedance-9"),
        (["Sea"], 400, "exactly"),
    ]
    for payload, code, word in cases:
        r = post(sim, TEXT, payload)
        assert r.status_code == code, (payload, r.text)
        assert word in r.json()["error"]["message"], (payload, r.text)
    assert sim.submits == [] and sim.submit_attempts == len(cases)


def test_the_frames_endpoint_is_gone(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """generateFrame2VideoTask answers 404 with the body of any unknown path, before
    the key is even looked at; nothing is created or counted as a submit."""
    sim = sim_factory(fast_tasks())
    url = put_image(make_image_bytes())
    frames = {"model": MODEL, "text": "Dusk", "first_frame": url, "last_frame": url}
    gone = post(sim, FRAMES, frames)
    unknown = post(sim, "/byteplus/v1/noSuchTask", frames)
    assert gone.status_code == unknown.status_code == 404
    assert gone.json() == {
        "error": {"code": "NotFound", "message": f"Resource not found: {FRAMES}"}
    }
    assert unknown.json()["error"]["code"] == gone.json()["error"]["code"]
    assert httpx.post(sim.base_url + FRAMES, json=frames, timeout=10).status_code == 404
    assert sim.submits == [] and sim.submit_attempts == 0


@pytest.mark.parametrize(
    ("model", "date"),
    [
        (LITE, "2026-05-13"),
        (LITE_T2V, "2026-05-13"),
        ("seedance-1-5-pro-251215", "2026-11-11"),
    ],
)
def test_a_retired_model_is_not_available(
    sim_factory: SimFactory, put_image: Callable[[bytes], str], model: str, date: str
) -> None:
    """A model the table retired is a 400 ModelNotAvailable at both 1.0 endpoints, its
    message saying the model is not available and since when; nothing is created."""
    sim = sim_factory(fast_tasks())
    url = put_image(make_image_bytes())
    for path, payload in ((SUBMIT, body(url, model=model)), (TEXT, {"model": model, "text": "A"})):
        r = post(sim, path, payload)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == {
            "code": "ModelNotAvailable",
            "message": f"The model {model} is not available: it was switched off on {date}.",
        }
    assert sim.submits == []


def test_an_unknown_model_is_404(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """A model the table does not know is 404 ModelNotFound at both 1.0 endpoints."""
    sim = sim_factory(fast_tasks())
    url = put_image(make_image_bytes())
    for path, payload in (
        (SUBMIT, body(url, model="seedance-9")),
        (TEXT, {"model": "seedance-9", "text": "A"}),
    ):
        r = post(sim, path, payload)
        assert r.status_code == 404 and r.json()["error"]["code"] == "ModelNotFound"
        assert "seedance-9" in r.json()["error"]["message"]
    assert sim.submits == []


@pytest.mark.parametrize("model", [FAST_2, "seedance-2-5"])
def test_a_seedance_2_model_is_refused_at_the_1_0_endpoints(
    sim_factory: SimFactory, put_image: Callable[[bytes], str], model: str
) -> None:
    """A live Seedance 2 model in a 1.0 body is a 400 naming the model and the
    endpoints it has instead."""
    sim = sim_factory(fast_tasks())
    url = put_image(make_image_bytes())
    for path, payload in ((SUBMIT, body(url, model=model)), (TEXT, {"model": model, "text": "A"})):
        r = post(sim, path, payload)
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert model in message and path in message
        assert MODELS[model].endpoints["text"] in message
    assert sim.submits == []


def test_both_1_0_pro_models_make_image_and_text(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """Seedance 1.0 Pro and Pro Fast, the live 1.0 rows, take image and text."""
    sim = sim_factory(fast_tasks())
    url = put_image(make_image_bytes())
    for model in (MODEL, PRO):
        assert post(sim, SUBMIT, body(url, model=model)).status_code == 200
        assert post(sim, TEXT, {"model": model, "text": "A quiet street"}).status_code == 200
    assert [(s.model, s.kind) for s in sim.submits] == [
        (MODEL, "image"),
        (MODEL, "text"),
        (PRO, "image"),
        (PRO, "text"),
    ]


def test_a_model_must_offer_the_kind_asked_for(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """With a table whose Pro Fast makes images only, its text submit is a 400 naming
    the model and what it offers, while its image submit is accepted."""
    row = MODELS[MODEL]
    image_only = dataclasses.replace(
        row,
        kinds=frozenset({"image"}),
        endpoints={"image": row.endpoints["image"]},
    )
    table = ModelTable(tuple(image_only if r.model == MODEL else r for r in MODELS.values()))
    sim = sim_factory(fast_tasks(), models=table)
    r = post(sim, TEXT, {"model": MODEL, "text": "A quiet street"})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert MODEL in message and "does not support text to video" in message
    assert "image to video" in message
    assert post(sim, SUBMIT, body(put_image(make_image_bytes()))).status_code == 200
    assert [s.kind for s in sim.submits] == ["image"]


def test_a_model_retired_while_running_is_refused_from_then_on(
    sim_factory: SimFactory, put_image: Callable[[bytes], str]
) -> None:
    """configure(models=...) retires a model mid-run: the next submit is refused as not
    available, while the task submitted before still completes and serves its video."""
    sim = sim_factory(fast_tasks(), submit_answer="envelope")
    url = put_image(make_image_bytes())
    earlier = post(sim, SUBMIT, body(url)).json()["request_id"]
    retired = dataclasses.replace(
        MODELS[MODEL], retired_on=dt.date(2027, 1, 1), replacement=PRO, endpoints={}
    )
    sim.configure(
        models=ModelTable(tuple(retired if r.model == MODEL else r for r in MODELS.values()))
    )
    r = post(sim, SUBMIT, body(url))
    assert r.status_code == 400 and r.json()["error"]["code"] == "ModelNotAvailable"
    assert "2027-01-01" in r.json()["error"]["message"]
    answer, _ = status_until_done(sim, earlier)
    assert answer["status"] == "COMPLETED"
    assert len(sim.submits) == 1


# --- injected submit statuses ---------------------------------------------------------------


@pytest.mark.parametrize("code", [502, 504])
def test_proxy_status_loses_the_answer_of_a_created_task(
    sim_factory: SimFactory, code: int
) -> None:
    """A 502/504 on submit comes after the task was created: it runs, is recorded with
    the status the client saw, and can be found by its id."""
    sim = sim_factory(
        fast_tasks(), submit_status_rate=1.0, submit_status_codes=(code,), submit_answer="envelope"
    )
    r = post(sim, TEXT, {"model": T2V, "text": "A storm"})
    assert r.status_code == code and r.headers["content-type"] == "text/html"
    [record] = sim.submits
    assert record.answer_status == code and record.kind == "text"
    answer, _ = status_until_done(sim, record.task_id)
    assert answer["status"] == "COMPLETED"
    assert [rq.status for rq in sim.requests if rq.path == TEXT] == [code]


@pytest.mark.parametrize("code", [500, 503, 429, 400])
def test_other_injected_statuses_create_nothing(sim_factory: SimFactory, code: int) -> None:
    """Any other injected status is answered before a task exists (429 with Retry-After)."""
    sim = sim_factory(fast_tasks(), submit_status_rate=1.0, submit_status_codes=(code,))
    r = post(sim, TEXT, {"model": T2V, "text": "A storm"})
    assert r.status_code == code and r.json()["error"]["code"]
    if code == 429:
        assert r.headers["retry-after"] == "1"
    assert sim.submits == [] and sim.submit_attempts == 1


def test_dropped_answer_is_recorded_as_such(sim_factory: SimFactory) -> None:
    """submit_accept_then_drop: the record's answer_status is None."""
    sim = sim_factory(fast_tasks(), submit_accept_then_drop_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        post(sim, TEXT, {"model": T2V, "text": "A storm"})
    [record] = sim.submits
    assert record.answer_status is None


# --- webhooks -------------------------------------------------------------------------------


def test_webhook_is_posted_when_the_task_ends(sim_factory: SimFactory) -> None:
    """X-Webhook-URL gets one POST with the v2 answer when the task completes (no key
    sent along); the query survives; the delivery is recorded with its status."""
    sim = sim_factory(fast_tasks(), submit_answer="envelope")
    with Receiver(status=204) as receiver:
        hook = f"{receiver.url}/webhooks/pixazo?token=abc123"
        r = post(sim, TEXT, {"model": T2V, "text": "A kite"}, **{"X-Webhook-URL": hook})
        request_id = r.json()["request_id"]
        [record] = wait_for(lambda: sim.webhooks)
        [(path, heads, data)] = receiver.calls
    assert path == "/webhooks/pixazo?token=abc123"
    assert "ocp-apim-subscription-key" not in heads
    assert heads["content-type"] == "application/json"
    assert data["request_id"] == request_id and data["status"] == "COMPLETED"
    assert httpx.get(data["output"]["media_url"], timeout=10).content == sim.video_bytes(request_id)
    assert record.task_id == request_id and record.url == hook
    assert record.status == 204 and record.error is None and record.body == data
    [submit] = sim.submits
    assert submit.webhook_url == hook and submit.headers["x-webhook-url"] == hook


def test_webhook_for_a_failed_task_and_for_a_legacy_task(
    sim_factory: SimFactory,
) -> None:
    """A failed task's webhook says FAILED/ERROR with the error; a receiver's 500 is
    recorded; submits without the header send nothing."""
    sim = sim_factory(fast_tasks(), fail_task_rate=1.0)
    with Receiver(status=500) as receiver:
        post(sim, TEXT, {"model": T2V, "text": "A kite"}, **{"X-Webhook-URL": receiver.url})
        post(sim, TEXT, {"model": T2V, "text": "No hook"})
        [record] = wait_for(lambda: sim.webhooks)
        wait_for(lambda: sim.tasks_by_status() == {"failed": 2})
    assert record.status == 500 and record.error is None
    assert record.body["status"] in ("FAILED", "ERROR")
    assert record.body["error"]["code"] == "InternalServiceError"
    assert record.task_id.startswith("cgt-") and len(receiver.calls) == 1
    assert len(sim.webhooks) == 1


def test_undeliverable_webhook_is_recorded_and_harmless(
    sim_factory: SimFactory,
) -> None:
    """A webhook to a closed port fails: recorded with an error, the simulator serves on."""
    sim = sim_factory(fast_tasks(), submit_answer="envelope", webhook_timeout=2.0)
    hook = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    r = post(sim, TEXT, {"model": T2V, "text": "A kite"}, **{"X-Webhook-URL": hook})
    [record] = wait_for(lambda: sim.webhooks)
    assert record.status is None and record.error and "Connect" in record.error
    assert status(sim, r.json()["request_id"])["status"] == "COMPLETED"


def test_webhook_url_must_be_http(sim_factory: SimFactory) -> None:
    """An X-Webhook-URL that is not http(s) is a 400, and creates nothing."""
    sim = sim_factory(fast_tasks())
    r = post(sim, TEXT, {"model": T2V, "text": "A kite"}, **{"X-Webhook-URL": "file:///etc"})
    assert r.status_code == 400 and "X-Webhook-URL" in r.json()["error"]["message"]
    assert sim.submits == []


# --- knobs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "knobs",
    [
        {"submit_answer": "json"},
        {"media_url_style": "dict"},
        {"error_style": "int"},
        {"polling_origin": "https://host/path"},
        {"polling_origin": "host:80"},
        {"submit_status_codes": ()},
        {"submit_status_codes": (200,)},
        {"cancel_task_rate": 2.0},
        {"submit_status_rate": -0.1},
        {"webhook_timeout": 0.0},
    ],
)
def test_bad_knobs_are_refused(knobs: dict[str, Any]) -> None:
    """Every new knob is validated and the error names it."""
    with pytest.raises(ValueError, match=next(iter(knobs))):
        SimulatorConfig(**knobs)


def test_cli_speaks_the_envelope(tmp_path: Any) -> None:
    """`--submit-answer envelope` makes the CLI's simulator answer with the envelope."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seedance_watch.simulator",
            "--port",
            "0",
            "--submit-answer",
            "envelope",
            "--media-url-style",
            "list",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        line = wait_for(lambda: _ready_line(proc))
        base = line.split(" on ")[1].split()[0]
        r = httpx.post(
            base + TEXT, headers=headers(), json={"model": T2V, "text": "A kite"}, timeout=10
        )
        assert r.status_code == 200 and ENVELOPE_ID.match(r.json()["request_id"])
        assert r.json()["polling_url"].startswith(base + STATUS)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
