"""The health.listen routes over loopback: the page, its API, files by job id, retry,
access (token, cookie, same-origin, loopback Host) and the webhook."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from seedance_watch.commands.requeue import requeue
from seedance_watch.commands.status import read_daemon_status, status_report
from seedance_watch.config import Config, load_config
from seedance_watch.core.jobs import InputFile, Job, State
from seedance_watch.ledger.daemonfile import DaemonStatusFile
from seedance_watch.ledger.jsonl import JsonlReader, Ledger
from seedance_watch.service.http import MAX_WEBHOOK_BYTES, HealthServer, PageSources
from seedance_watch.service.metrics import Metrics
from seedance_watch.service.web.access import COOKIE_NAME

from .helpers import make_image_bytes

pytestmark = pytest.mark.timeout(60)

TOKEN = "page-test-token-0123456789"
NOW = time.time()
VIDEO = bytes(range(256)) * 40  # 10,240 bytes; its content is what Range tests check

DONE_ID = "d0d0d0d0d0d0d0d0"
FAILED_ID = "f0f0f0f0f0f0f0f0"
FLIGHT_ID = "a0a0a0a0a0a0a0a0"
LINKED_ID = "1111111111111111"
ESCAPED_ID = "2222222222222222"


def checked(image: bytes) -> dict[str, Any]:
    """The fields intake records for an image that passed every check: its hash, and the
    request's content key (recorded only then)."""
    sha = hashlib.sha256(image).hexdigest()
    return {"image_sha256": sha, "content_key": hashlib.sha256(sha.encode()).hexdigest()}


BEACH = make_image_bytes(1280, 960)


def _job(job_id: str, state: State, source: str, **fields: Any) -> Job:
    stem = source.rsplit(".", 1)[0]
    base = Job(
        job_id=job_id,
        state=state,
        source=source,
        sidecar=f"{stem}.yaml",
        created_at=fields.pop("created_at", NOW - 60),
        updated_at=NOW - 5,
    )
    return replace(base, **fields)


@dataclass
class World:
    """Folders, a ledger and real files for five jobs; a server is started per test."""

    root: Path
    config: Config
    ledger: Ledger
    webhooks: list[str] = field(default_factory=list)
    servers: list[HealthServer] = field(default_factory=list)
    clients: list[httpx.Client] = field(default_factory=list)

    def serve(
        self,
        *,
        token: str | None = TOKEN,
        task_eta: Callable[[], float | None] = lambda: None,
        budget_view: Callable[[], Mapping[str, Any] | None] = lambda: None,
        webhooks: bool = True,
        secure_cookie: bool = False,
    ) -> httpx.Client:
        health: dict[str, Any] = {"listen": "127.0.0.1:0", "token": token}
        if secure_cookie:
            health["secure_cookie"] = True
        config = self.config.model_copy(
            update={"health": self.config.health.model_validate(health)}
        )

        def on_webhook(value: str) -> bool:
            self.webhooks.append(value)
            return value == "known-token"

        paths = config.paths

        def retry(job_id: str, include_ambiguous: bool) -> tuple[list[str] | None, str]:
            result = requeue(config, [job_id], include_ambiguous=include_ambiguous)
            return result.moved.get(job_id), result.problems.get(job_id, "")

        sources = PageSources(
            check=lambda: (True, {"loop_alive": True}),
            metrics=Metrics(job_counts=self.ledger.counts).render,
            jobs=self.ledger.snapshot,
            report=lambda: status_report(JsonlReader(paths.state)),
            daemon=lambda: read_daemon_status(JsonlReader(paths.state)),
            retry=retry,
            task_eta=task_eta,
            budget=budget_view,
            poke=on_webhook if webhooks else None,
        )
        server = HealthServer(config, sources, webhook_path="/webhooks/pixazo", clock=lambda: NOW)
        server.start()
        self.servers.append(server)
        host, port = server.address
        client = httpx.Client(base_url=f"http://{host}:{port}", timeout=10)
        self.clients.append(client)
        return client


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    for name in ("inbox", "outbox", "done", "failed", "state"):
        (tmp_path / name).mkdir()
    config_path = tmp_path / "seedance-watch.yaml"
    config_path.write_text(
        "paths: {inbox: ./inbox, outbox: ./outbox, done: ./done, failed: ./failed, "
        "state: ./state}\nstorage: {bucket: b}\n",
        encoding="utf-8",
    )
    config = load_config(config_path, {})
    (tmp_path / "done" / "beach.jpg").write_bytes(BEACH)
    (tmp_path / "done" / "beach.yaml").write_text("prompt: a beach\n")
    (tmp_path / "outbox" / "beach.mp4").write_bytes(VIDEO)
    (tmp_path / "failed" / "dune.jpg").write_bytes(make_image_bytes(200, 100))
    (tmp_path / "failed" / "dune.yaml").write_text("prompt: [oops\n")
    (tmp_path / "failed" / "dune.error.json").write_text('{"code": "invalid_sidecar"}\n')
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"not yours")
    (tmp_path / "outbox" / "linked.mp4").symlink_to(outside)
    ledger = Ledger.open(config.paths.state)
    ledger.put(
        _job(
            DONE_ID,
            State.DONE,
            "beach.jpg",
            output="beach.mp4",
            task_id="task-beach",
            completed_at=NOW - 10,
            **checked(BEACH),
            moved_to=(("beach.jpg", "done/beach.jpg"), ("beach.yaml", "done/beach.yaml")),
        )
    )
    ledger.put(
        _job(
            FAILED_ID,
            State.FAILED,
            "dune.jpg",
            created_at=NOW - 50,
            error={
                "code": "invalid_sidecar",
                "message": "dune.yaml: <script>alert(1)</script> is not YAML",
                "hint": "Fix the sidecar & drop again",
                "stage": "intake",
            },
            moved_to=(("dune.jpg", "failed/dune.jpg"), ("dune.yaml", "failed/dune.yaml")),
        )
    )
    ledger.put(
        _job(
            FLIGHT_ID,
            State.SUBMITTED,
            "sky.jpg",
            created_at=NOW - 40,
            task_id="task-sky",
            submitted_at=NOW - 30,
        )
    )
    ledger.put(_job(LINKED_ID, State.DONE, "linked.jpg", created_at=NOW - 30, output="linked.mp4"))
    ledger.put(
        _job(
            ESCAPED_ID,
            State.DONE,
            "<b>x</b>.jpg",
            created_at=NOW - 20,
            output="../secret.mp4",
            moved_to=(("<b>x</b>.jpg", "done/../secret.mp4"),),
        )
    )
    w = World(tmp_path, config, ledger)
    try:
        yield w
    finally:
        for client in w.clients:
            client.close()
        for server in w.servers:
            server.close()
        ledger.close()


def raw_get(client: httpx.Client, path: str, headers: Mapping[str, str] = {}) -> int:
    """GET ``path`` exactly as written (httpx would normalise ``..`` away)."""
    url = client.base_url
    conn = http.client.HTTPConnection(url.host, url.port, timeout=10)
    try:
        conn.request("GET", path, headers=dict(headers))
        return conn.getresponse().status
    finally:
        conn.close()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- access -----------------------------------------------------------------------------

PROTECTED = [
    "/",
    "/api/jobs",
    "/api/view",
    "/metrics",
    "/static/page.js",
    f"/jobs/{DONE_ID}/thumbnail",
    f"/jobs/{DONE_ID}/video",
]


def test_with_a_token_every_route_but_healthz_and_the_webhook_needs_it(world: World) -> None:
    """No token or a wrong one is 401 everywhere but /healthz and the webhook; the right
    Bearer token opens every route."""
    client = world.serve()
    assert client.get("/healthz").status_code == 200
    assert client.post("/webhooks/pixazo?token=known-token").status_code == 204
    for path in PROTECTED:
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert client.get(path, headers=bearer("x" * len(TOKEN))).status_code == 401, path
        assert client.get(path, headers={"Authorization": TOKEN}).status_code == 401, path
        assert client.get(path, headers=bearer()).status_code == 200, path
    assert client.get("/nope", headers=bearer()).status_code == 404


def test_the_page_trades_token_in_the_url_for_a_cookie_and_drops_it(world: World) -> None:
    """``/?token=`` sets an HttpOnly SameSite=Strict cookie (not the token itself) and
    redirects to the URL without the token; the cookie then opens the page and files;
    a wrong ``?token=`` gets nothing."""
    client = world.serve()
    wrong = client.get("/?token=wrong-token-wrong-token")
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    answer = client.get("/?token=" + TOKEN + "&view=all")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/?view=all"
    assert answer.headers.get_list("referrer-policy") == ["no-referrer"]
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(COOKIE_NAME + "=")
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
    assert TOKEN not in cookie
    assert client.cookies.get(COOKIE_NAME)  # httpx kept it, as a browser does
    assert client.get("/").status_code == 200
    assert client.get(f"/jobs/{DONE_ID}/video").status_code == 200
    assert client.get("/api/view").status_code == 200
    client.cookies.set(COOKIE_NAME, "0" * 64)
    assert client.get("/").status_code == 401
    # Opened from another site: the cookie comes with a same-origin hop, not a redirect
    # (a SameSite=Strict cookie would not ride on a cross-site redirect chain).
    hop = client.get("/?token=" + TOKEN, headers={"Sec-Fetch-Site": "cross-site"})
    assert hop.status_code == 200 and COOKIE_NAME in hop.headers["set-cookie"]
    assert 'http-equiv="refresh"' in hop.text and TOKEN not in hop.text


def test_behind_a_tls_proxy_secure_cookie_marks_the_cookie_secure(world: World) -> None:
    """The daemon itself speaks plain HTTP, so its cookie is not ``Secure`` (a browser
    would not send it back over http); behind a TLS reverse proxy
    ``health.secure_cookie: true`` makes it ``Secure`` (item 13 of the third
    hardening round), and it still opens the page."""

    def cookie_flags(client: httpx.Client) -> list[str]:
        answer = client.get("/?token=" + TOKEN)
        assert answer.status_code == 303
        return [part.strip().lower() for part in answer.headers["set-cookie"].split(";")]

    assert "secure" not in cookie_flags(world.serve())
    behind_proxy = world.serve(secure_cookie=True)
    flags = cookie_flags(behind_proxy)
    assert "secure" in flags and "httponly" in flags and "samesite=strict" in flags
    # httpx, like a browser, would keep a Secure cookie for https only: send it by hand.
    value = behind_proxy.cookies.get(COOKIE_NAME)
    assert value is not None
    page = behind_proxy.get("/", headers={"Cookie": f"{COOKIE_NAME}={value}"})
    assert page.status_code == 200


def test_without_a_token_only_a_loopback_host_is_served(world: World) -> None:
    """With no token (loopback listen) a request naming another host (DNS rebinding)
    is refused, except /healthz and the webhook."""
    client = world.serve(token=None)
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"Host": "localhost"}).status_code == 200
    evil = {"Host": "rebound.example:8080"}
    for path in PROTECTED:
        assert client.get(path, headers=evil).status_code == 403, path
    assert client.get("/healthz", headers=evil).status_code == 200
    assert client.post("/webhooks/pixazo?token=known-token", headers=evil).status_code == 204


def test_healthz_tells_its_details_only_to_who_may_read_the_page(world: World) -> None:
    """/healthz answers everyone with the same status code, but its counts and pause
    reasons (file names, bucket, endpoint) only to a caller the page itself would
    serve: without a token a loopback Host, with a token its bearer or cookie.  Anyone
    else gets ``{"status": "ok"}`` (item 9 of the third hardening round)."""
    open_client = world.serve(token=None)
    evil = {"Host": "rebound.example:8080"}
    outside = open_client.get("/healthz", headers=evil)
    assert outside.status_code == 200 and outside.json() == {"status": "ok"}
    assert outside.headers["cache-control"] == "no-store"
    local = open_client.get("/healthz")
    assert local.status_code == 200 and local.json() == {"status": "ok", "loop_alive": True}

    client = world.serve()
    for headers in ({}, {"Host": "localhost"}, bearer("x" * len(TOKEN))):
        anonymous = client.get("/healthz", headers=headers)
        assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}, headers
    trusted = client.get("/healthz", headers=bearer())
    assert trusted.json() == {"status": "ok", "loop_alive": True}
    client.get("/?token=" + TOKEN)  # the page's cookie counts as the token
    assert client.get("/healthz").json() == {"status": "ok", "loop_alive": True}


# --- the JSON ---------------------------------------------------------------------------


def test_api_jobs_is_exactly_status_json(world: World) -> None:
    """/api/jobs returns what ``seedance-watch status --json`` prints, pauses included."""
    status_file = DaemonStatusFile(world.config.paths.state, key_source="PIXAZO_API_KEY")
    status_file.pause("credentials", "the gateway refused the key (401)", http_status=401)
    client = world.serve()
    served = client.get("/api/jobs", headers=bearer())
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    cli = subprocess.run(
        [sys.executable, "-m", "seedance_watch", "status", "--json"],
        env={**os.environ, "SEEDANCE_WATCH_CONFIG": str(world.root / "seedance-watch.yaml")},
        capture_output=True,
        check=True,
        timeout=30,
    )
    printed = json.loads(cli.stdout)
    assert served.json() == printed
    assert {j["job_id"] for j in printed["jobs"]} == {
        DONE_ID,
        FAILED_ID,
        FLIGHT_ID,
        LINKED_ID,
        ESCAPED_ID,
    }
    assert printed["daemon"]["paused"]["credentials"]["http_status"] == 401


def test_the_view_has_counts_eta_budget_pauses_and_newest_first(world: World) -> None:
    """/api/view: counts by state, recent jobs newest first with kind/stage/age/task id,
    the job at the gateway with its ETA against the learned task time, the day's spend,
    the pauses, and retry offered only where the inputs wait in failed/."""
    DaemonStatusFile(world.config.paths.state, key_source="file").pause(
        "storage", "the bucket b does not exist"
    )
    budget = {"spent": 1.2, "cap": 5.0, "remaining": 3.8, "currency": "USD"}
    client = world.serve(task_eta=lambda: 100.0, budget_view=lambda: budget)
    view = client.get("/api/view", headers=bearer()).json()
    assert {c["state"]: c["count"] for c in view["counts"]} == {
        "submitted": 1,
        "done": 3,
        "failed": 1,
    }
    assert [r["job_id"] for r in view["recent"]] == [
        DONE_ID,
        FAILED_ID,
        FLIGHT_ID,
        LINKED_ID,
        ESCAPED_ID,
    ][::-1]
    flight = next(r for r in view["recent"] if r["job_id"] == FLIGHT_ID)
    assert flight["kind"] == "image" and flight["stage"] == "poll"
    assert flight["task_id"] == "task-sky" and flight["age"] == "40 s"
    (at_gateway,) = view["in_flight"]
    assert at_gateway["job_id"] == FLIGHT_ID and at_gateway["elapsed"] == "30 s"
    assert at_gateway["eta"] == "about 70 s left"
    assert view["budget"]["text"] == "USD 1.20 of 5.00 spent today, 3.80 left"
    assert [p["reason"] for p in view["pauses"]] == ["storage"]
    failed = {r["job_id"]: r for r in view["failed"]}[FAILED_ID]
    assert failed["code"] == "invalid_sidecar" and failed["stage"] == "intake"
    assert failed["retry_url"] == f"/jobs/{FAILED_ID}/retry"
    page = client.get("/", headers=bearer()).text
    assert "about 70 s left" in page and "USD 1.20 of 5.00 spent today" in page
    assert "the bucket b does not exist" in page
    # Without an estimate or a budget, the page says so / leaves the budget out.
    plain = world.serve().get("/api/view", headers=bearer()).json()
    assert plain["in_flight"][0]["eta"] == "no estimate yet" and plain["budget"] is None


def test_every_name_and_message_is_escaped(world: World) -> None:
    """A file called ``<b>x</b>.jpg`` and a message with a script tag show as written:
    escaped in the HTML, verbatim in the JSON."""
    client = world.serve()
    page = client.get("/", headers=bearer())
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<b>x</b>" not in page.text and "&lt;b&gt;x&lt;/b&gt;.jpg" in page.text
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "Fix the sidecar &amp; drop again" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    view = client.get("/api/view", headers=bearer()).json()
    assert "<b>x</b>.jpg" in {r["source"] for r in view["recent"]}


# --- files by job id --------------------------------------------------------------------


def test_files_are_served_by_job_id_only(world: World) -> None:
    """Unknown ids, ids that try to climb (``..``, encoded slashes), an output that is a
    symbolic link and a recorded path that climbs out of done/ all get 404."""
    client = world.serve(token=None)
    assert client.get(f"/jobs/{DONE_ID}/video").status_code == 200
    for path in [
        "/jobs/ffffffffffffffff/video",
        "/jobs/ffffffffffffffff/thumbnail",
        "/jobs/../x/video",
        "/jobs/..%2Fx/video",
        "/jobs/..%2F..%2Fsecret.mp4/video",
        "/jobs/%2e%2e/video",
        f"/jobs/{DONE_ID}%2F..%2F{LINKED_ID}/video",
        f"/jobs/{LINKED_ID}/video",  # outbox/linked.mp4 -> ../secret.mp4
        f"/jobs/{ESCAPED_ID}/video",  # output "../secret.mp4"
        f"/jobs/{ESCAPED_ID}/thumbnail",  # moved to "done/../secret.mp4"
        f"/jobs/{FLIGHT_ID}/video",  # not done yet
        f"/jobs/{FLIGHT_ID}/thumbnail",  # its image is still in the inbox
    ]:
        assert raw_get(client, path) == 404, path


def test_video_answers_range_requests(world: World) -> None:
    """The mp4 is served with Range support: first bytes, a suffix, an open end, and 416
    for a range past the end."""
    client = world.serve(token=None)
    url = f"/jobs/{DONE_ID}/video"
    size = len(VIDEO)
    full = client.get(url)
    assert full.status_code == 200 and full.content == VIDEO
    assert full.headers["content-type"] == "video/mp4"
    assert full.headers["accept-ranges"] == "bytes"
    first = client.get(url, headers={"Range": "bytes=0-99"})
    assert first.status_code == 206 and first.content == VIDEO[:100]
    assert first.headers["content-range"] == f"bytes 0-99/{size}"
    assert first.headers["content-length"] == "100"
    suffix = client.get(url, headers={"Range": "bytes=-100"})
    assert suffix.status_code == 206 and suffix.content == VIDEO[-100:]
    assert suffix.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
    rest = client.get(url, headers={"Range": "bytes=10000-"})
    assert rest.status_code == 206 and rest.content == VIDEO[10000:]
    assert rest.headers["content-range"] == f"bytes 10000-{size - 1}/{size}"
    beyond = client.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    head = client.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(size)


def test_thumbnail_is_small_cached_and_never_remade(world: World) -> None:
    """The thumbnail is a JPEG of at most 320 px made once into state/thumbs/; later
    requests serve that file, even after the source image is gone."""
    client = world.serve(token=None)
    url = f"/jobs/{DONE_ID}/thumbnail"
    answer = client.get(url)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(answer.content)) as image:
        assert image.format == "JPEG" and max(image.size) == 320 and image.size == (320, 240)
    cached = world.config.paths.state / "thumbs" / f"{DONE_ID}.jpg"
    assert cached.read_bytes() == answer.content
    made = cached.stat()
    (world.root / "done" / "beach.jpg").unlink()
    again = client.get(url)
    assert again.status_code == 200 and again.content == answer.content
    after = cached.stat()
    assert (after.st_ino, after.st_mtime_ns) == (made.st_ino, made.st_mtime_ns)
    # failed/ is served too, for an image that passed the checks (the gateway failed it).
    image = make_image_bytes(800, 600)
    (world.root / "failed" / "reef.jpg").write_bytes(image)
    world.ledger.put(
        _job(
            "f1f1f1f1f1f1f1f1",
            State.FAILED,
            "reef.jpg",
            error={"code": "task_failed", "message": "no", "stage": "submitted"},
            moved_to=(("reef.jpg", "failed/reef.jpg"),),
            **checked(image),
        )
    )
    failed = client.get("/jobs/f1f1f1f1f1f1f1f1/thumbnail")
    assert failed.status_code == 200 and failed.headers["content-type"] == "image/jpeg"


def _png_header_only(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` whose pixels are all zero: a few KB
    on disk, ``width * height`` pixels to decode (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte, then the row's bits
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(row * height, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_only_images_that_passed_the_checks_get_a_thumbnail(world: World) -> None:
    """A thumbnail is made only of an image whose drop passed the image checks, from
    the very bytes that were checked, with the checks' own decoders, and a
    decompression bomb is a 404, not a hang or a 500 (item 3 of the third hardening
    round): a TGA named .jpg that failed the checks (even with a thumbnail an older
    version cached), a checked image replaced in
    failed/ by other bytes, and records claiming a TGA or a bomb passed all get 404;
    the failed card offers no thumbnail for a drop whose image was never checked."""
    client = world.serve(token=None)
    failed = world.root / "failed"
    tga = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 30, 30)).save(tga, format="TGA")
    bomb = _png_header_only(10_000, 10_000)  # over Pillow's 89 MP limit, under twice it
    assert len(bomb) < 64 * 1024

    def failed_job(job_id: str, name: str, data: bytes, code: str, **fields: Any) -> str:
        (failed / name).write_bytes(data)
        world.ledger.put(
            _job(
                job_id,
                State.FAILED,
                name,
                error={"code": code, "message": "m", "stage": "new"},
                moved_to=((name, f"failed/{name}"),),
                **fields,
            )
        )
        return f"/jobs/{job_id}/thumbnail"

    never_checked = failed_job("3333333333333333", "tga.jpg", tga.getvalue(), "invalid_image")
    # As an older version left it: a thumbnail of that TGA, cached.
    thumbs = world.config.paths.state / "thumbs"
    thumbs.mkdir()
    (thumbs / "3333333333333333.jpg").write_bytes(make_image_bytes(320, 240))
    swapped = failed_job(
        "4444444444444444",
        "swap.jpg",
        make_image_bytes(700, 500),
        "task_failed",
        **checked(make_image_bytes(640, 480)),
    )
    forged_tga = failed_job(
        "5555555555555555", "forged.jpg", tga.getvalue(), "task_failed", **checked(tga.getvalue())
    )
    forged_bomb = failed_job("6666666666666666", "bomb.png", bomb, "task_failed", **checked(bomb))
    for url in (never_checked, swapped, forged_tga, forged_bomb, f"/jobs/{FAILED_ID}/thumbnail"):
        assert client.get(url).status_code == 404, url
    assert not (world.config.paths.state / "thumbs" / "6666666666666666.jpg").exists()
    cards = {card["job_id"]: card for card in client.get("/api/view").json()["failed"]}
    assert cards["3333333333333333"]["thumbnail_url"] == ""
    assert cards[FAILED_ID]["thumbnail_url"] == ""  # invalid_sidecar: the image never checked
    assert cards["4444444444444444"]["thumbnail_url"] == "/jobs/4444444444444444/thumbnail"


# --- retry ------------------------------------------------------------------------------


def test_retry_moves_the_inputs_back_same_origin_only(world: World) -> None:
    """POST /jobs/ID/retry does what ``retry ID`` does (inputs back to the inbox, report
    removed) when Origin or Referer names this server; cross-origin, originless or
    token-less requests are refused and move nothing."""
    client = world.serve()
    url = f"/jobs/{FAILED_ID}/retry"
    origin = str(client.base_url).rstrip("/")
    failed = world.root / "failed"
    for headers, status in [
        ({**bearer(), "Origin": "http://evil.example"}, 403),
        ({**bearer(), "Origin": "null"}, 403),
        ({**bearer(), "Referer": "http://evil.example/"}, 403),
        (bearer(), 403),  # neither Origin nor Referer
        ({"Origin": origin}, 401),  # no token
        ({"Origin": origin, **bearer("y" * len(TOKEN))}, 401),
    ]:
        assert client.post(url, headers=headers).status_code == status, headers
        assert (failed / "dune.jpg").exists() and (failed / "dune.error.json").exists()
    assert (
        client.post(
            "/jobs/ffffffffffffffff/retry", headers={**bearer(), "Origin": origin}
        ).status_code
        == 404
    )
    done = client.post(url, headers={**bearer(), "Origin": origin})
    assert done.status_code == 303 and done.headers["location"] == "/"
    assert sorted(p.name for p in (world.root / "inbox").iterdir()) == ["dune.jpg", "dune.yaml"]
    assert not (failed / "dune.jpg").exists() and not (failed / "dune.error.json").exists()
    again = client.post(
        url, headers={**bearer(), "Referer": origin + "/", "Accept": "application/json"}
    )
    assert again.status_code == 409 and "already retried" in again.json()["error"]
    view = client.get("/api/view", headers=bearer()).json()
    assert view["failed"][0]["retry_url"] == ""  # nothing left to retry


def test_retry_answers_json_and_refuses_a_job_that_is_not_failed(world: World) -> None:
    """With ``Accept: application/json`` the retry answers with the inbox paths; a done
    job is not retried (409)."""
    client = world.serve(token=None)
    origin = str(client.base_url).rstrip("/")
    headers = {"Origin": origin, "Accept": "application/json"}
    moved = client.post(f"/jobs/{FAILED_ID}/retry", headers=headers)
    assert moved.status_code == 200
    assert moved.json() == {"job_id": FAILED_ID, "moved": ["dune.jpg", "dune.yaml"]}
    refused = client.post(f"/jobs/{DONE_ID}/retry", headers=headers)
    assert refused.status_code == 409 and "not failed" in refused.json()["error"]
    assert client.post(f"/jobs/{FAILED_ID}/retry").status_code == 403  # no Origin


# --- the webhook ------------------------------------------------------------------------


def test_webhook_pokes_by_token_and_refuses_big_bodies(world: World) -> None:
    """A known token is 204, an unknown or missing one 404, no callable 404; a body over
    64 KiB is 413 whether its Content-Length says so or it streams, and pokes nothing."""
    client = world.serve()  # no token needed even though one is set
    assert client.post("/webhooks/pixazo?token=known-token", json={"x": 1}).status_code == 204
    assert client.post("/webhooks/pixazo?token=other", json={}).status_code == 404
    assert client.post("/webhooks/pixazo", json={}).status_code == 404
    assert world.webhooks == ["known-token", "other"]
    big = client.post("/webhooks/pixazo?token=known-token", content=b"x" * (MAX_WEBHOOK_BYTES + 1))
    assert big.status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"y" * 4096  # 80 KiB, no Content-Length

    streamed = client.post("/webhooks/pixazo?token=known-token", content=chunks())
    assert streamed.status_code == 413
    exact = client.post("/webhooks/pixazo?token=known-token", content=b"z" * MAX_WEBHOOK_BYTES)
    assert exact.status_code == 204
    assert world.webhooks == ["known-token", "other", "known-token"]
    unwired = world.serve(webhooks=False)
    assert unwired.post("/webhooks/pixazo?token=known-token").status_code == 404


def test_the_page_files_are_declared_package_data() -> None:
    """Every template and static file matches pyproject's package-data globs, so the
    wheel (and the Docker image built from it) carries the page."""
    import fnmatch
    import tomllib

    import seedance_watch.service.web as web

    root = Path(__file__).resolve().parent.parent
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["seedance_watch.service.web"]
    package = Path(web.__file__).parent
    files = [
        str(p.relative_to(package))
        for folder in ("templates", "static")
        for p in (package / folder).rglob("*")
        if p.is_file()
    ]
    assert {"templates/page.html", "static/page.js", "static/page.css"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(name, g) for g in globs), name


# --- the daily routine: lineage, confirmations, what to fix, words, times ---------------


def _failed_files(
    world: World, job_id: str, code: str, names: dict[str, bytes], **fields: Any
) -> Job:
    """A failed job whose files wait in failed/, each recorded as intake examined it."""
    inputs = []
    for name, data in names.items():
        path = world.root / "failed" / name
        path.write_bytes(data)
        st = path.stat()
        role = "sidecar" if name.endswith(".yaml") else "image"
        sha = hashlib.sha256(data).hexdigest()
        inputs.append(InputFile(role, name, sha, st.st_size, st.st_dev, st.st_ino, st.st_mtime_ns))
    job = _job(
        job_id,
        State.FAILED,
        next(iter(names)),
        error={"code": code, "message": "it failed", "hint": "", "stage": "new"},
        inputs=tuple(inputs),
        moved_to=tuple((name, f"failed/{name}") for name in names),
        **fields,
    )
    world.ledger.put(job)
    return job


def _card(page: str, job_id: str) -> str:
    """The server-rendered markup of one job's card (its <li> in a list)."""
    start = page.index(f'<li data-key="{job_id}" class="card')
    return page[start : page.index("</li>", start)]


def test_a_retried_job_points_at_its_rerun_and_the_rerun_back(world: World) -> None:
    """A ``retried`` job's row links to its rerun's card ("retried as job ..."), and the
    rerun's card and row say "retry of job ...", linking back to the retried job's row."""
    old, new = "7777777777777777", "8888888888888888"
    world.ledger.put(
        _job(
            old,
            State.RETRIED,
            "tide.jpg",
            created_at=NOW - 45,
            retried_as=new,
            error={"code": "task_failed", "message": "no", "stage": "poll"},
        )
    )
    world.ledger.put(
        _job(new, State.DONE, "tide.jpg", created_at=NOW - 15, retry_of=old, output="tide.mp4")
    )
    client = world.serve()
    view = client.get("/api/view", headers=bearer()).json()
    rows = {r["job_id"]: r for r in view["recent"]}
    assert rows[old]["state_text"] == "Retried" and rows[old]["state"] == "retried"
    assert rows[old]["retried_as_text"] == f"retried as job {new}"
    assert rows[old]["retried_as_url"] == f"#job-{new}"  # the rerun's done card
    done = {c["job_id"]: c for c in view["done"]}[new]
    assert done["card_id"] == f"job-{new}"
    assert done["retry_of_text"] == f"retry of job {old}"
    assert done["retry_of_url"] == f"#row-{old}"  # a retried job has no card: its row
    page = client.get("/", headers=bearer()).text
    assert f'id="job-{new}"' in page and f'id="row-{old}"' in page
    assert f'href="#job-{new}">retried as job {new}</a>' in page
    assert f'href="#row-{old}">retry of job {old}</a>' in _card(page, new)


@pytest.mark.parametrize("code", ["submit_ambiguous", "task_timeout"])
def test_retrying_a_task_that_may_be_billed_needs_a_confirmation(world: World, code: str) -> None:
    """The card of a job whose task may exist and be billed has no plain Retry but a
    second step ("Retry anyway -- may be billed twice", a form with ``confirm=yes``,
    inside <details>: no JavaScript needed); the server refuses a retry without the
    field (409, nothing moved, the answer is that second step) and does it with it."""
    job_id = "9999999999999999"
    _failed_files(
        world,
        job_id,
        code,
        {"reef.jpg": b"jpeg?", "reef.yaml": b"prompt: reef\n"},
        task_id="task-reef",
    )
    client = world.serve()
    card = {c["job_id"]: c for c in client.get("/api/view", headers=bearer()).json()["failed"]}[
        job_id
    ]
    assert card["retry_url"] == "" and card["confirm_url"] == f"/jobs/{job_id}/retry"
    assert "task-reef" in card["confirm_text"] and "billed" in card["confirm_text"]
    page = client.get("/", headers=bearer()).text
    html_card = _card(page, job_id)
    assert '<input type="hidden" name="confirm" value="yes">' in html_card
    assert "Retry anyway — may be billed twice" in html_card and "<details" in html_card
    origin = str(client.base_url).rstrip("/")
    url = f"/jobs/{job_id}/retry"
    failed = world.root / "failed"
    refused = client.post(url, headers={**bearer(), "Origin": origin})
    assert refused.status_code == 409
    assert "may exist at the gateway and be billed" in refused.text
    assert 'name="confirm" value="yes"' in refused.text  # the second step, without JS
    as_json = client.post(
        url,
        headers={**bearer(), "Origin": origin, "Accept": "application/json"},
        data={"confirm": "no"},
    )
    assert as_json.status_code == 409 and "confirm=yes" in as_json.json()["error"]
    assert (failed / "reef.jpg").exists() and not (world.root / "inbox" / "reef.jpg").exists()
    done = client.post(url, headers={**bearer(), "Origin": origin}, data={"confirm": "yes"})
    assert done.status_code == 303
    assert sorted(p.name for p in (world.root / "inbox").iterdir()) == ["reef.jpg", "reef.yaml"]


@pytest.mark.parametrize(
    ("code", "changed", "fix"),
    [
        ("invalid_image", "dusk.jpg", "replace the image in failed/"),
        ("invalid_sidecar", "dusk.yaml", "fix the sidecar in failed/"),
    ],
)
def test_no_retry_for_a_failure_that_would_repeat_until_its_file_changes(
    world: World, code: str, changed: str, fix: str
) -> None:
    """An ``invalid_image`` or ``invalid_sidecar`` job whose files in failed/ are as
    intake recorded them gets no Retry but what to fix; the server refuses its retry
    with the same words (409, nothing moved).  Once the file changed, Retry is there
    and works.  Another failure (``task_failed``) keeps its Retry unchanged."""
    job_id = "abababababababab"
    _failed_files(world, job_id, code, {"dusk.jpg": b"not an image", "dusk.yaml": b"prompt: [\n"})
    other = _failed_files(world, "cdcdcdcdcdcdcdcd", "task_failed", {"moon.jpg": b"x"})
    client = world.serve()
    origin = str(client.base_url).rstrip("/")

    def card() -> dict[str, Any]:
        cards = client.get("/api/view", headers=bearer()).json()["failed"]
        return {c["job_id"]: c for c in cards}

    first = card()
    assert first[job_id]["retry_url"] == "" and first[job_id]["confirm_url"] == ""
    assert fix in first[job_id]["fix"] and "then Retry" in first[job_id]["fix"]
    assert first[other.job_id]["retry_url"] and first[other.job_id]["fix"] == ""
    page = client.get("/", headers=bearer()).text
    assert fix in _card(page, job_id)
    assert f'action="/jobs/{job_id}/retry"' not in page
    refused = client.post(
        f"/jobs/{job_id}/retry",
        headers={**bearer(), "Origin": origin, "Accept": "application/json"},
    )
    assert refused.status_code == 409 and fix in refused.json()["error"]
    assert (world.root / "failed" / "dusk.jpg").exists()
    assert list((world.root / "inbox").iterdir()) == []

    (world.root / "failed" / changed).write_bytes(b"fixed, at last\n")
    after = card()[job_id]
    assert after["retry_url"] == f"/jobs/{job_id}/retry" and after["fix"] == ""
    moved = client.post(f"/jobs/{job_id}/retry", headers={**bearer(), "Origin": origin})
    assert moved.status_code == 303
    assert sorted(p.name for p in (world.root / "inbox").iterdir()) == ["dusk.jpg", "dusk.yaml"]


def test_no_image_element_without_an_image(world: World) -> None:
    """A text drop's card and a drop refused as ``invalid_image`` have no <img> at all
    (not a broken one), and no video poster; a checked image keeps its thumbnail."""
    text_id, bad_id = "1212121212121212", "3434343434343434"
    world.ledger.put(
        replace(
            _job(text_id, State.DONE, "poem.yaml", output="poem.mp4", prompt="A poem"),
            kind="text",
            sidecar="poem.yaml",
        )
    )
    _failed_files(world, bad_id, "invalid_image", {"bad.jpg": b"GIF89a?"})
    client = world.serve()
    page = client.get("/", headers=bearer()).text
    for job_id in (text_id, bad_id):
        assert "<img" not in _card(page, job_id), job_id
        assert "poster=" not in _card(page, job_id)
    assert '<img class="thumb"' in _card(page, DONE_ID)
    view = client.get("/api/view", headers=bearer()).json()
    cards = {c["job_id"]: c for c in view["done"] + view["failed"]}
    assert cards[text_id]["thumbnail_url"] == "" and cards[bad_id]["thumbnail_url"] == ""


def test_cards_show_the_prompt_model_options_and_priority(world: World) -> None:
    """A card shows the prompt (escaped, on one line, cut with an ellipsis and whole in
    its title when long), the model, the main options in words and a priority that is
    not 0; a job with priority 0 shows none."""
    long_id, short_id = "5656565656565656", "7878787878787878"
    prompt = "A calm <sea>\nat dusk, " + "waves " * 60
    world.ledger.put(
        _job(
            long_id,
            State.DONE,
            "sea.jpg",
            output="sea.mp4",
            prompt=prompt,
            model="seedance-1-5-pro",
            options={
                "ratio": "9:16",
                "resolution": "1080p",
                "duration": 10,
                "generate_audio": True,
            },
            priority=5,
        )
    )
    world.ledger.put(
        _job(
            short_id,
            State.SUBMITTED,
            "hill.jpg",
            prompt="A hill",
            model="seedance-1-0-lite-i2v",
            options={"duration": "auto", "camerafixed": True, "seed": 7},
            task_id="task-hill",
            submitted_at=NOW - 5,
        )
    )
    client = world.serve()
    view = client.get("/api/view", headers=bearer()).json()
    card = {c["job_id"]: c for c in view["done"]}[long_id]
    assert card["prompt"].startswith("A calm <sea> at dusk, waves") and card["prompt"].endswith("…")
    assert len(card["prompt"]) <= 160 and card["prompt_title"].startswith("A calm <sea> at dusk")
    assert card["model"] == "seedance-1-5-pro"
    assert card["options_text"] == "9:16 · 1080p · 10 s · with audio"
    assert card["priority_text"] == "priority 5"
    flight = {c["job_id"]: c for c in view["in_flight"]}[short_id]
    assert flight["options_text"] == "length chosen by the model · fixed camera · seed 7"
    assert flight["priority_text"] == "" and flight["prompt"] == "A hill"
    page = client.get("/", headers=bearer()).text
    html_card = _card(page, long_id)
    assert "A calm &lt;sea&gt; at dusk" in html_card and "<sea>" not in page
    assert "9:16 · 1080p · 10 s · with audio" in html_card and "priority 5" in html_card
    recent = {r["job_id"]: r for r in view["recent"]}
    assert recent[long_id]["priority_text"] == "priority 5"


def test_states_and_failures_are_in_words_with_the_code_at_hand(world: World) -> None:
    """Counts, rows and cards say what a state means ("Being made at the gateway",
    "Failed: the sidecar is not valid"), with the state and code in a title or a detail
    line, never "invalid_sidecar in intake" as the headline."""
    world.ledger.put(_job("9090909090909090", State.UPLOADED, "wait.jpg"))
    client = world.serve()
    view = client.get("/api/view", headers=bearer()).json()
    counts = {c["state"]: c["state_text"] for c in view["counts"]}
    assert counts["uploaded"] == "Waiting for a slot"
    assert counts["submitted"] == "Being made at the gateway"
    rows = {r["job_id"]: r for r in view["recent"]}
    assert rows[FAILED_ID]["state_text"] == "Failed: the sidecar is not valid"
    assert rows[FAILED_ID]["state_title"] == "state failed, code invalid_sidecar"
    assert rows["9090909090909090"]["state_text"] == "Waiting for a slot"
    failed = {c["job_id"]: c for c in view["failed"]}[FAILED_ID]
    assert failed["failure_text"] == "Failed: the sidecar is not valid"
    assert failed["code"] == "invalid_sidecar"
    page = client.get("/", headers=bearer()).text
    card = _card(page, FAILED_ID)
    assert "Failed: the sidecar is not valid" in card
    assert 'code <code data-bind="code">invalid_sidecar</code>' in card
    assert "invalid_sidecar</code> in" not in page
    assert 'title="state failed, code invalid_sidecar"' in page


def test_times_are_time_elements_in_utc_for_the_script_to_localise(world: World) -> None:
    """Every absolute time is a <time datetime="...Z"> whose text the server writes in
    UTC (the page works without JavaScript); relative ages carry the UTC time as a
    title; the script converts both to the viewer's zone (the browser test checks)."""
    DaemonStatusFile(world.config.paths.state, key_source="file").pause(
        "storage", "the bucket b does not exist", since=NOW - 100, next_probe_at=NOW + 60
    )
    client = world.serve()
    page = client.get("/", headers=bearer()).text
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(NOW))
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW))
    assert f'datetime="{iso}">{stamp}</time>' in page  # "updated ..."
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 100))
    assert f'data-attr="datetime:since" datetime="{since}">' in page
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(NOW - 60))
    assert f'title="{created}">60 s</time>' in page
    assert page.count("data-local") >= 3
    script = client.get("/static/page.js", headers=bearer()).text
    assert "toLocaleString" in script and "data-local" in page


def test_a_name_that_is_not_utf8_shows_its_bytes_everywhere(world: World) -> None:
    """A job whose source is ``b\\udce9ach.jpg`` (the byte 0xE9 of a name that is not
    UTF-8) renders as ``b\\xe9ach.jpg`` on the page and in /api/view, /api/jobs keeps
    the name as status --json does (an escape), and nothing answers 500."""
    name = "b\udce9ach.jpg"
    world.ledger.put(_job("4545454545454545", State.DONE, name, output="b\udce9ach.mp4"))
    world.ledger.put(
        _job(
            "6767676767676767",
            State.FAILED,
            "x\udcffy.jpg",
            error={"code": "invalid_image", "message": f"{name} \udcff is not an image"},
            moved_to=(("x\udcffy.jpg", "failed/x\udcffy.jpg"),),
        )
    )
    client = world.serve()
    page = client.get("/", headers=bearer())
    assert page.status_code == 200 and "b\\xe9ach.jpg" in page.text
    assert "b\\xe9ach.jpg \\xff is not an image" in page.text and "x\\xffy.jpg" in page.text
    view = client.get("/api/view", headers=bearer())
    assert view.status_code == 200
    assert "b\\xe9ach.jpg" in {r["source"] for r in view.json()["recent"]}
    jobs = client.get("/api/jobs", headers=bearer())
    assert jobs.status_code == 200 and b"\\udce9" in jobs.content
    assert name in {j["source"] for j in jobs.json()["jobs"]}
    origin = str(client.base_url).rstrip("/")
    refused = client.post("/jobs/6767676767676767/retry", headers={**bearer(), "Origin": origin})
    assert refused.status_code == 409  # its file is not in failed/: refused, not a 500


def test_every_pause_shows_with_its_message_whatever_its_reason(world: World) -> None:
    """A database pause (and any reason the page has no words for) shows with its
    message and since when, as the known ones do; the budget's says when it lifts."""
    status = DaemonStatusFile(world.config.paths.state, key_source="file")
    status.pause("database", "the database db.example.net is out of reach", since=NOW - 30)
    status.pause("budget", "USD 5.00 of 5.00 spent today", next_probe_at=NOW + 3600)
    status.pause("tape", "the tape <drive> is full")
    client = world.serve()
    pauses = {p["reason"]: p for p in client.get("/api/view", headers=bearer()).json()["pauses"]}
    assert pauses["database"]["reason_text"] == "The database cannot be reached"
    assert pauses["database"]["message"] == "the database db.example.net is out of reach"
    assert pauses["budget"]["next_label"] == "lifts"
    assert pauses["tape"]["reason_text"] == "Paused: tape"
    page = client.get("/", headers=bearer()).text
    assert "The database cannot be reached" in page
    assert "the database db.example.net is out of reach" in page
    assert "the tape &lt;drive&gt; is full" in page
