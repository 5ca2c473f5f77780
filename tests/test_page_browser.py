"""The status page in a real browser: Debian's chromium driven by Playwright, against the
real daemon (a subprocess) on the simulator and the S3 emulator.

Set ``UPDATE_SCREENSHOT=1`` to copy the screenshot it takes to docs/status-page.png
(the README's picture).  In CI (``CI`` set) a missing chromium or Playwright is a
failure, never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from seedance_watch.core.jobs import State
from seedance_watch.ledger.jsonl import read_jobs
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import DaemonProcess, make_image_bytes, wait_for, write_config

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.slow,
    pytest.mark.sim(running_seconds=0.3, video_seconds=1.0, seed=5),
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TOKEN = "browser-test-token-0123456789"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "status-page.png"
BROWSER_WAIT_MS = 30_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the browser test: .ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def drop(
    folder: Path, stem: str, color: tuple[int, int, int], *, sidecar: str | None = None
) -> None:
    """An image (of its own colour, for the screenshot) and then its sidecar."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.jpg").write_bytes(make_image_bytes(640, 360, color=color))
    (folder / f"{stem}.yaml").write_text(sidecar or f'prompt: "A calm scene: {stem}"\n')


def jobs_by_source(state: Path) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for job in sorted(read_jobs(state).values(), key=lambda j: j.created_at):
        out.setdefault(job.source, []).append(job)
    return out


def test_the_page_in_chromium_shows_plays_updates_and_retries(
    tmp_path: Path,
    s3_server: S3Emulator,
    sim: Simulator,
    browser: Any,
) -> None:
    """With good and bad drops: protected routes refuse a request without the token;
    the page lists each job with its state (names shown as written), its thumbnails
    load, a video plays from an mp4, a new drop appears without a reload, and a retry
    click brings a fixed failed job back until it is done."""
    extra = f"health: {{listen: '127.0.0.1:0', token: '{TOKEN}'}}\n"
    config = write_config(tmp_path, s3_server, sim, extra=extra)
    inbox, state = tmp_path / "inbox", tmp_path / "state"
    daemon = DaemonProcess(config)
    try:
        listening = wait_for(
            lambda: [e for e in daemon.events() if e.get("event") == "health.listening"],
            timeout=30,
        )
        base = f"http://127.0.0.1:{listening[0]['port']}"
        wait_for(lambda: daemon.has_event("daemon.ready"), timeout=30)
        drop(inbox, "beach", (30, 110, 190))
        drop(inbox / "<b>x<", "b>", (200, 90, 40))  # the drop <b>x</b>.jpg (a folder, a file)
        drop(inbox, "dune", (190, 150, 60), sidecar="prompt: [not yaml\n")
        jobs = wait_for(
            lambda: (
                (found := {source: js[0] for source, js in jobs_by_source(state).items()})
                and len(found) == 3
                and all(j.terminal for j in found.values())
                and found
            ),
            timeout=60,
        )
        assert {s: j.state for s, j in jobs.items()} == {
            "beach.jpg": State.DONE,
            "<b>x</b>.jpg": State.DONE,
            "dune.jpg": State.FAILED,
        }
        done_id = jobs["beach.jpg"].job_id

        # Without the token nothing but /healthz answers.
        for path in ("/", "/api/jobs", "/api/view", f"/jobs/{done_id}/video", "/metrics"):
            assert httpx.get(base + path, timeout=10).status_code == 401, path
        assert httpx.get(base + "/healthz", timeout=10).status_code == 200

        page = browser.new_page(viewport={"width": 1100, "height": 900})
        refused = page.goto(base + "/")
        assert refused is not None and refused.status == 401
        page.goto(base + "/?token=" + TOKEN)
        assert page.url == base + "/"  # the token left the address bar
        # Predicates as functions, never bare expressions: Playwright evaluates an
        # expression with eval(), which the page's CSP (no 'unsafe-eval') refuses.
        page.wait_for_function("() => document.documentElement.dataset.live === 'on'")

        for source, job in jobs.items():
            row = page.locator(f"tbody[data-list=recent] tr[data-key='{job.job_id}']")
            assert row.locator("th").inner_text() == source
            assert row.locator(".state").inner_text() == job.state.value
        assert page.locator("tbody b").count() == 0  # <b>x</b>.jpg was not markup
        failed_card = page.locator(f"[data-list=failed] li[data-key='{jobs['dune.jpg'].job_id}']")
        assert failed_card.locator("code[data-bind=code]").inner_text() == "invalid_sidecar"

        # Thumbnails really load, and a video plays from an mp4.
        thumbs = page.locator("[data-list=done] img.thumb")
        assert thumbs.count() == 2
        page.wait_for_function(
            """() => [...document.querySelectorAll('[data-list=done] img.thumb')]
                 .every((img) => img.complete && img.naturalWidth > 0)""",
            timeout=BROWSER_WAIT_MS,
        )
        video = page.locator(f"[data-list=done] li[data-key='{done_id}'] video")
        played = video.evaluate(
            """async (v) => {
                 v.muted = true;
                 await v.play();
                 const response = await fetch(v.currentSrc, {headers: {Range: 'bytes=0-'}});
                 return {src: v.currentSrc, type: response.headers.get('content-type'),
                         status: response.status, readyState: v.readyState};
               }"""
        )
        assert played["src"] == f"{base}/jobs/{done_id}/video"
        assert played["type"] == "video/mp4" and played["status"] in (200, 206)
        assert played["readyState"] >= 1
        page.wait_for_function(
            f"() => document.querySelector(\"li[data-key='{done_id}'] video\").currentTime > 0",
            timeout=BROWSER_WAIT_MS,
        )

        page.wait_for_function(
            """() => [...document.querySelectorAll('video')]
                 .every((v) => v.readyState >= 2 && v.networkState !== v.NETWORK_LOADING)""",
            timeout=BROWSER_WAIT_MS,
        )
        # Chromium shows a spinner on a video never started: start and stop each one.
        page.evaluate(
            """() => Promise.all([...document.querySelectorAll('video')].map(async (v) => {
                 v.muted = true;
                 await v.play();
                 v.pause();
               }))"""
        )
        shot = tmp_path / "status-page.png"
        page.screenshot(path=str(shot), full_page=True, animations="disabled")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("UPDATE_SCREENSHOT"):
            shutil.copyfile(shot, SCREENSHOT)

        # On a phone-sized screen nothing runs off the side (the table scrolls in its box).
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.set_viewport_size({"width": 1100, "height": 900})

        # A new drop shows up without a reload, its name (markup again) filled in as text.
        page.evaluate("window.__sameDocument = true")
        drop(inbox / "<i>tide<", "i>", (40, 150, 120))  # <i>tide</i>.jpg
        page.wait_for_function(
            """() => [...document.querySelectorAll('tbody[data-list=recent] th')]
                 .some((th) => th.textContent === '<i>tide</i>.jpg')""",
            timeout=BROWSER_WAIT_MS,
        )
        page.wait_for_function(
            """() => document.querySelectorAll('[data-list=done] li').length === 3""",
            timeout=BROWSER_WAIT_MS,
        )
        assert page.evaluate("window.__sameDocument") is True
        assert page.locator("main i, main b").count() == 0
        page.wait_for_function(
            """() => [...document.querySelectorAll('[data-list=done] img.thumb')]
                 .every((img) => img.complete && img.naturalWidth > 0)""",
            timeout=BROWSER_WAIT_MS,
        )

        # Fix the failed drop's sidecar where it waits, then press its retry button.
        (tmp_path / "failed" / "dune.yaml").write_text('prompt: "A dune at dusk"\n')
        with page.expect_navigation():
            page.get_by_role("button", name="Retry dune.jpg").click()
        assert page.url == base + "/"
        retried = wait_for(lambda: len(jobs_by_source(state).get("dune.jpg", [])) == 2, timeout=30)
        assert retried
        again = jobs_by_source(state)["dune.jpg"][1]
        page.wait_for_function(
            f"""() => {{
                 const row = document.querySelector("tbody tr[data-key='{again.job_id}']");
                 return row !== null && row.querySelector('.state').textContent === 'done';
               }}""",
            timeout=BROWSER_WAIT_MS,
        )
        assert page.get_by_role("button", name="Retry dune.jpg").count() == 0
        view = page.evaluate("fetch('/api/jobs').then((r) => r.json())")
        assert json.dumps(view)  # the cookie opens the API for the page's own requests
        assert {j["state"] for j in view["jobs"] if j["source"] == "dune.jpg"} == {
            "retried",
            "done",
        }
    finally:
        daemon.signal(signal.SIGTERM)
        daemon.wait(timeout=40)
        daemon.kill()
