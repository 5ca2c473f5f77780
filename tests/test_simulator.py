"""The built-in Pixazo simulator speaks docs/design.md, "The gateway protocol" and injects the
faults of "The simulator and the demo"."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import av
import httpx
import pytest

from seedance_watch.simulator import Simulator
from seedance_watch.simulator.board import Task, TaskBoard, TokenBucket
from seedance_watch.simulator.commands import CommandError, parse_text
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import BUCKET, free_port, make_image_bytes, wait_for
from .simhelpers import MODEL, POLL, SUBMIT, SimFactory, _ready_line, body, fast_tasks, headers

#: The ``sim`` fixture: tasks of a fraction of a second, videos as the tasks ask.
pytestmark = pytest.mark.sim(fast_tasks())


@pytest.fixture
def image_url(s3_server: S3Emulator) -> str:
    """A presigned GET URL of a 640x480 JPEG in the S3 emulator."""
    client = s3_server.client()
    key = f"sim/{uuid.uuid4().hex}.jpg"
    client.put_object(Bucket=BUCKET, Key=key, Body=make_image_bytes(), ContentType="image/jpeg")
    url: str = client.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=600
    )
    return url


def submit(sim: Simulator, url: str, **kw: Any) -> httpx.Response:
    return httpx.post(sim.base_url + SUBMIT, headers=headers(), json=body(url, **kw), timeout=10)


def poll(sim: Simulator, task_id: str) -> dict[str, Any]:
    r = httpx.post(sim.base_url + POLL, headers=headers(), json={"task_id": task_id}, timeout=10)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def poll_until(sim: Simulator, task_id: str, done: set[str]) -> tuple[dict[str, Any], list[str]]:
    seen: list[str] = []

    def step() -> dict[str, Any] | None:
        task = poll(sim, task_id)
        if not seen or seen[-1] != task["status"]:
            seen.append(task["status"])
        return task if task["status"] in done else None

    return wait_for(step), seen


def test_happy_path_serves_a_decodable_h264_of_the_image(sim: Simulator, image_url: str) -> None:
    """submit → queued → running → succeeded → the mp4 decodes as H.264 at the scaled size."""
    r = submit(sim, image_url, text="Clouds drift --resolution 480p --duration 5")
    assert r.status_code == 200
    task_id = r.json()["id"]
    assert task_id.startswith("cgt-") and len(task_id) == len("cgt-20250910201045-sqz6f")
    task, seen = poll_until(sim, task_id, {"succeeded"})
    assert seen[0] in ("queued", "running") and seen[-1] == "succeeded"
    assert task["model"] == MODEL and task["usage"]["total_tokens"] > 0
    assert task["updated_at"] >= task["created_at"] > 1_700_000_000
    url = task["content"]["video_url"]
    assert url.startswith(sim.base_url + f"/videos/{task_id}.mp4?") and "X-Tos-Expires=" in url
    video = httpx.get(url, timeout=10)
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    assert int(video.headers["content-length"]) == len(video.content)
    assert video.content[4:8] == b"ftyp"
    assert video.content == sim.video_bytes(task_id)
    with av.open(io.BytesIO(video.content)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (256, 192)
        frames = [f.to_image().tobytes() for f in container.decode(video=0)]
    assert len(frames) >= 2 and frames[0] != frames[-1]
    [record] = sim.submits
    assert record.task_id == task_id and record.image_url == image_url
    assert record.headers["ocp-apim-subscription-key"] == "sim-key"
    assert record.body == body(image_url, text="Clouds drift --resolution 480p --duration 5")
    assert sim.task_params(task_id)["resolution"] == "480p"
    assert sim.tasks_by_status() == {"succeeded": 1}


@pytest.mark.parametrize(
    ("knobs", "key", "status"),
    [
        ({}, "wrong", 401),
        ({"credit_exhausted": True}, "sim-key", 402),
        ({"access_denied": True}, "sim-key", 403),
    ],
)
def test_credentials_refused(
    sim_factory: SimFactory, knobs: dict[str, Any], key: str, status: int
) -> None:
    """Wrong key → 401 (APIM wording); no credit → 402; no access → 403; on submit and poll."""
    sim = sim_factory(fast_tasks(), **knobs)
    for path, payload in ((SUBMIT, body("http://127.0.0.1:9/x.jpg")), (POLL, {"task_id": "x"})):
        r = httpx.post(sim.base_url + path, headers=headers(key), json=payload, timeout=10)
        assert r.status_code == status
        assert r.json()["error"]["message"]
    if status == 401:
        assert "invalid subscription key" in r.json()["error"]["message"]
    assert sim.submits == []


def test_key_can_change_at_run_time(sim: Simulator) -> None:
    """configure(api_key=...) takes effect on the next request."""
    sim.configure(api_key="rotated")
    r = httpx.post(sim.base_url + POLL, headers=headers(), json={"task_id": "x"}, timeout=10)
    assert r.status_code == 401
    r = httpx.post(
        sim.base_url + POLL, headers=headers("rotated"), json={"task_id": "x"}, timeout=10
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "NotFound"


def test_request_shape_errors(sim: Simulator, image_url: str) -> None:
    """Object image_url, missing text, unknown command, bad JSON type → 400; unknown model → 404."""
    url_object = body(image_url)
    url_object["content"][1]["image_url"] = {"url": image_url}
    no_text = {"model": MODEL, "content": [{"type": "image_url", "image_url": image_url}]}
    cases: list[tuple[Any, int, str]] = [
        (url_object, 400, "image_url"),
        (no_text, 400, "text"),
        (body(image_url, text="Sea --fps 24"), 400, "--fps"),
        ({**body(image_url), "extra": 1}, 400, "model"),
        (body(image_url, model="seedance-9"), 404, "seedance-9"),
    ]
    for payload, status, word in cases:
        r = httpx.post(sim.base_url + SUBMIT, headers=headers(), json=payload, timeout=10)
        assert r.status_code == status, payload
        assert word in r.json()["error"]["message"]
    r = httpx.post(
        sim.base_url + SUBMIT,
        headers={**headers(), "Content-Type": "text/plain"},
        content=json.dumps(body(image_url)),
        timeout=10,
    )
    assert r.status_code == 400
    assert sim.submits == [] and sim.submit_attempts == len(cases) + 1


def test_unfetchable_or_non_image_url_is_400(sim: Simulator, s3_server: S3Emulator) -> None:
    """The image is really fetched: a missing object, a closed port or a text file give 400."""
    client = s3_server.client()
    client.put_object(Bucket=BUCKET, Key="sim/notes.txt", Body=b"not an image")
    missing = client.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "sim/none.jpg"}
    )
    text = client.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "sim/notes.txt"}
    )
    closed = f"http://127.0.0.1:{free_port()}/x.jpg"  # nothing listens there
    for url in (missing, text, closed):
        r = submit(sim, url)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "InvalidParameter"
        assert r.json()["error"]["message"].startswith("image_url could not be fetched")
    assert sim.submits == []


def test_invalid_values_are_replaced_by_defaults(sim: Simulator, image_url: str) -> None:
    """Like the real gateway, bad command values silently become defaults."""
    r = submit(sim, image_url, text="Sea --resolution 4k --duration 99 --camerafixed true --seed 7")
    assert r.status_code == 200
    params = sim.task_params(r.json()["id"])
    assert params["resolution"] == "720p" and params["duration"] == 5
    assert params["camerafixed"] is True and params["seed"] == 7


def test_pixazo_status_style(sim_factory: SimFactory, image_url: str) -> None:
    """status_style=pixazo: upper-case statuses and the video at output.media_url."""
    sim = sim_factory(fast_tasks(), status_style="pixazo")
    task_id = submit(sim, image_url).json()["id"]
    task, seen = poll_until(sim, task_id, {"COMPLETED"})
    assert set(seen) <= {"QUEUED", "PROCESSING", "COMPLETED"}
    assert "content" not in task
    assert httpx.get(task["output"]["media_url"], timeout=10).status_code == 200


def test_rate_limit_answers_429_with_retry_after(sim_factory: SimFactory, image_url: str) -> None:
    """rate_limit_per_minute=2: the third submit in a burst gets 429 and a Retry-After."""
    sim = sim_factory(fast_tasks(), rate_limit_per_minute=2)
    statuses = [submit(sim, image_url).status_code for _ in range(2)]
    r = submit(sim, image_url)
    assert statuses == [200, 200] and r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 30
    assert len(sim.submits) == 2


def test_concurrency_limit_keeps_extra_tasks_queued(
    sim_factory: SimFactory, image_url: str
) -> None:
    """max_concurrent=1: the second task stays queued while the first runs, then runs."""
    sim = sim_factory(fast_tasks(), max_concurrent=1, queued_seconds=0.0, running_seconds=0.3)
    first = submit(sim, image_url).json()["id"]
    second = submit(sim, image_url).json()["id"]
    wait_for(lambda: poll(sim, first)["status"] == "running")
    assert poll(sim, second)["status"] == "queued"
    poll_until(sim, first, {"succeeded"})
    task, _ = poll_until(sim, second, {"succeeded"})
    assert task["status"] == "succeeded"


def test_concurrency_reject_mode(sim_factory: SimFactory, image_url: str) -> None:
    """concurrency_mode=reject: a submit beyond the unfinished limit gets 429, Retry-After: 1."""
    sim = sim_factory(
        fast_tasks(), max_concurrent=1, concurrency_mode="reject", running_seconds=5.0
    )
    assert submit(sim, image_url).status_code == 200
    r = submit(sim, image_url)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert len(sim.submits) == 1


def test_5xx_faults(sim_factory: SimFactory, image_url: str) -> None:
    """error_5xx_rate=1: every submit is a 500/502/503 and creates nothing."""
    sim = sim_factory(fast_tasks(), error_5xx_rate=1.0)
    codes = {submit(sim, image_url).status_code for _ in range(12)}
    assert codes <= {500, 502, 503} and len(codes) >= 2
    assert sim.submits == [] and sim.submit_attempts == 12


def test_faults_can_target_one_endpoint(sim_factory: SimFactory, image_url: str) -> None:
    """faults_on={"poll"}: submits are clean while every poll fails."""
    sim = sim_factory(fast_tasks(), error_5xx_rate=1.0, faults_on=frozenset({"poll"}))
    r = submit(sim, image_url)
    assert r.status_code == 200
    p = httpx.post(
        sim.base_url + POLL, headers=headers(), json={"task_id": r.json()["id"]}, timeout=10
    )
    assert p.status_code >= 500 and sim.polls == 1


def test_dropped_connection(sim_factory: SimFactory, image_url: str) -> None:
    """drop_connection_rate=1: the socket closes without an answer, and no task is created."""
    sim = sim_factory(fast_tasks(), drop_connection_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        submit(sim, image_url)
    assert sim.submits == []
    assert sim.requests[-1].status is None and sim.requests[-1].path == SUBMIT


def test_accept_then_drop_creates_a_billed_task(sim_factory: SimFactory, image_url: str) -> None:
    """submit_accept_then_drop_rate=1: no answer, yet the task exists and runs."""
    sim = sim_factory(fast_tasks(), submit_accept_then_drop_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        submit(sim, image_url)
    [record] = sim.submits
    assert poll_until(sim, record.task_id, {"succeeded"})[0]["id"] == record.task_id


def test_slow_reply(sim_factory: SimFactory) -> None:
    """slow_reply_rate=1: the answer comes after slow_reply_seconds."""
    sim = sim_factory(fast_tasks(), slow_reply_rate=1.0, slow_reply_seconds=0.3)
    start = time.monotonic()
    r = httpx.post(sim.base_url + POLL, headers=headers(), json={"task_id": "x"}, timeout=10)
    assert r.status_code == 404 and time.monotonic() - start >= 0.3


def test_random_429(sim_factory: SimFactory) -> None:
    """rate_429=1: a 429 with Retry-After."""
    sim = sim_factory(fast_tasks(), rate_429=1.0)
    r = httpx.post(sim.base_url + POLL, headers=headers(), json={"task_id": "x"}, timeout=10)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"


def test_truncated_video(sim_factory: SimFactory, image_url: str) -> None:
    """truncate_video_rate=1: the full Content-Length is announced, half the body arrives."""
    sim = sim_factory(fast_tasks(), truncate_video_rate=1.0)
    task, _ = poll_until(sim, submit(sim, image_url).json()["id"], {"succeeded"})
    url = httpx.URL(task["content"]["video_url"])
    with socket.create_connection((url.host, url.port), timeout=10) as s:
        s.sendall(f"GET {url.raw_path.decode()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head, _, received = raw.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
    )
    assert length == len(sim.video_bytes(task["id"]))
    assert 0 < len(received) < length
    sim.configure(truncate_video_rate=0.0)
    assert httpx.get(str(url), timeout=10).content == sim.video_bytes(task["id"])


@pytest.mark.parametrize(
    ("knob", "status"), [("fail_task_rate", "failed"), ("expire_task_rate", "expired")]
)
def test_failed_and_expired_tasks(
    sim_factory: SimFactory, image_url: str, knob: str, status: str
) -> None:
    """fail/expire rates end tasks failed (with an error) or expired; there is no video."""
    sim = sim_factory(fast_tasks(), **{knob: 1.0})
    task, _ = poll_until(
        sim, submit(sim, image_url).json()["id"], {"succeeded", "failed", "expired"}
    )
    assert task["status"] == status and "content" not in task
    assert task["error"]["code"] and task["error"]["message"]
    assert httpx.get(f"{sim.base_url}/videos/{task['id']}.mp4", timeout=10).status_code == 404


def test_video_expires_after_ttl(sim_factory: SimFactory, image_url: str) -> None:
    """After video_ttl_seconds the video URL answers 403."""
    sim = sim_factory(fast_tasks(), video_ttl_seconds=0.0)
    task, _ = poll_until(sim, submit(sim, image_url).json()["id"], {"succeeded"})
    assert httpx.get(task["content"]["video_url"], timeout=10).status_code == 403


def test_keep_alive_serves_many_polls_on_one_connection(sim: Simulator) -> None:
    """One client connection carries many requests (keep-alive works)."""
    with httpx.Client(base_url=sim.base_url, headers=headers(), timeout=10) as client:
        for _ in range(50):
            assert client.post(POLL, json={"task_id": "nope"}).status_code == 404
    assert sim.polls == 50


def test_cli_serves_until_sigterm(tmp_path: Any) -> None:
    """`python -m seedance_watch.simulator --port 0` prints its URL, serves, exits 0 on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "seedance_watch.simulator", "--port", "0", "--api-key", "k"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert proc.stdout is not None
        line = wait_for(lambda: _ready_line(proc))
        assert line.startswith("Pixazo simulator listening on http://127.0.0.1:")
        base = line.split(" on ")[1].split()[0]
        r = httpx.post(base + POLL, headers=headers("k"), json={"task_id": "x"}, timeout=10)
        assert r.status_code == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


# --- the pure parts -------------------------------------------------------------------------


def test_parse_text() -> None:
    """Commands at the end are read, invalid values replaced, unknown commands refused."""
    parsed = parse_text("A cat --ratio 16:9 --duration 1 --watermark true")
    assert parsed.prompt == "A cat"
    assert parsed.params["ratio"] == "16:9" and parsed.params["watermark"] is True
    assert parsed.params["duration"] == 5 and parsed.replaced == ("duration",)
    assert parse_text("A well-known -- dash").prompt == "A well-known -- dash"
    with pytest.raises(CommandError, match="--fps"):
        parse_text("A cat --fps 24")


def _task(n: int, eligible: float = 0.1) -> Task:
    return Task(f"t{n}", MODEL, "", {}, "sha", 0.0, eligible, "succeeded", 1.0)


def test_board_hands_out_slots_in_order_without_sleeping() -> None:
    """With 2 slots, the third task starts exactly when the first slot frees."""
    board = TaskBoard()
    tasks = [_task(n) for n in range(3)]
    for task in tasks:
        board.add(task)
    assert board.advance(0.05, 2) == []
    assert board.advance(0.5, 2) == tasks[:2] and board.unfinished() == 3
    assert board.advance(1.05, 2) == [] and tasks[2].status(1.05) == "queued"
    assert board.advance(1.2, 2) == [tasks[2]] and tasks[2].started == pytest.approx(1.1)
    assert board.unfinished() == 1
    assert tasks[0].status(1.2) == "running"  # ended, but its video is not encoded yet
    tasks[0].video = b"mp4"
    assert tasks[0].status(1.2) == "succeeded"


def test_token_bucket() -> None:
    """A bucket of 60/min gives 60 at once, then one per second."""
    bucket = TokenBucket(60, now=0.0)
    assert all(bucket.take(0.0) == 0.0 for _ in range(60))
    assert bucket.take(0.0) == pytest.approx(1.0)
    assert bucket.take(1.0) == 0.0
