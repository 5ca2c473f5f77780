"""The status page in a real browser: Debian's chromium driven by Playwright, against the
real daemon (a subprocess) on the simulator and the S3 emulator.

Set ``UPDATE_SCREENSHOT=1`` to copy the screenshot it takes to docs/status-page.png
(the README's picture).  In CI (``CI`` set) a missing chromium or Playwright is a
failure, never a skip.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import zoneinfo
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
#: The browser's zone and locale: the page shows times there, not in UTC.
ZONE = "Pacific/Auckland"
#: A name that is not UTF-8 (Latin-1's é): the file system's bytes, kept as they are.
LATIN1_STEM = os.fsdecode(b"r\xe9cif")
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
    the page lists each job with its state in words (names shown as written, a name
    that is not UTF-8 as its bytes), its thumbnails load (a text drop and a refused
    image have no image element at all), cards show the prompt, model, options and
    priority, times show in the browser's zone, a video plays from an mp4, a new drop
    appears without a reload; a failed drop whose sidecar is unchanged offers no Retry
    but what to fix, and once fixed in failed/ its Retry appears, brings it back until
    it is done, and the failed job's row then points at its rerun."""
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
        beach = (
            'prompt: "Waves roll onto a quiet beach"\nresolution: 720p\nduration: 5\npriority: 3\n'
        )
        drop(inbox, "beach", (30, 110, 190), sidecar=beach)
        drop(inbox / "<b>x<", "b>", (200, 90, 40))  # the drop <b>x</b>.jpg (a folder, a file)
        drop(inbox, "dune", (190, 150, 60), sidecar="prompt: [not yaml\n")
        drop(inbox, LATIN1_STEM, (120, 60, 160), sidecar='prompt: "A recife at noon"\n')
        (inbox / "lighthouse.yaml").write_text(
            'mode: text\nprompt: "A lighthouse at night, its beam sweeping the fog"\n'
        )
        (inbox / "broken.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
        (inbox / "broken.yaml").write_text('prompt: "Never a video"\n')
        latin1 = f"{LATIN1_STEM}.jpg"
        expected = {
            "beach.jpg": State.DONE,
            "<b>x</b>.jpg": State.DONE,
            "dune.jpg": State.FAILED,
            latin1: State.DONE,
            "lighthouse.yaml": State.DONE,
            "broken.jpg": State.FAILED,
        }
        jobs = wait_for(
            lambda: (
                (found := {source: js[0] for source, js in jobs_by_source(state).items()})
                and len(found) == len(expected)
                and all(j.terminal for j in found.values())
                and found
            ),
            timeout=60,
        )
        assert {s: j.state for s, j in jobs.items()} == expected
        done_id = jobs["beach.jpg"].job_id

        # Without the token nothing but /healthz answers.
        for path in ("/", "/api/jobs", "/api/view", f"/jobs/{done_id}/video", "/metrics"):
            assert httpx.get(base + path, timeout=10).status_code == 401, path
        assert httpx.get(base + "/healthz", timeout=10).status_code == 200

        context = browser.new_context(
            viewport={"width": 1100, "height": 900}, timezone_id=ZONE, locale="en-GB"
        )
        page = context.new_page()
        refused = page.goto(base + "/")
        assert refused is not None and refused.status == 401
        page.goto(base + "/?token=" + TOKEN)
        assert page.url == base + "/"  # the token left the address bar
        # Predicates as functions, never bare expressions: Playwright evaluates an
        # expression with eval(), which the page's CSP (no 'unsafe-eval') refuses.
        page.wait_for_function("() => document.documentElement.dataset.live === 'on'")

        words = {
            "beach.jpg": "Done",
            "<b>x</b>.jpg": "Done",
            latin1: "Done",
            "lighthouse.yaml": "Done",
            "dune.jpg": "Failed: the sidecar is not valid",
            "broken.jpg": "Failed: the image could not be read",
        }
        for source, job in jobs.items():
            row = page.locator(f"tbody[data-list=recent] tr[data-key='{job.job_id}']")
            shown = "r\\xe9cif.jpg" if source == latin1 else source
            assert row.locator("th").inner_text() == shown
            assert row.locator(".state").inner_text() == words[source]
            assert row.locator(".state").get_attribute("data-state") == job.state.value
        assert page.locator("tbody b").count() == 0  # <b>x</b>.jpg was not markup
        failed_card = page.locator(f"[data-list=failed] li[data-key='{jobs['dune.jpg'].job_id}']")
        assert failed_card.locator("code[data-bind=code]").inner_text() == "invalid_sidecar"
        # Unchanged since it failed: no Retry, but what to fix.
        assert failed_card.get_by_role("button").count() == 0
        assert "fix the sidecar in failed/" in failed_card.locator(".fix").inner_text()
        broken_card = page.locator(f"[data-list=failed] li[data-key='{jobs['broken.jpg'].job_id}']")
        assert (
            broken_card.locator("img").count() == 0
            and broken_card.get_by_role("button").count() == 0
        )
        text_card = page.locator(
            f"[data-list=done] li[data-key='{jobs['lighthouse.yaml'].job_id}']"
        )
        assert text_card.locator("img").count() == 0
        assert text_card.locator(".prompt").inner_text().startswith("A lighthouse at night")
        beach_card = page.locator(f"[data-list=done] li[data-key='{jobs['beach.jpg'].job_id}']")
        assert beach_card.locator(".prompt").inner_text() == "Waves roll onto a quiet beach"
        request = beach_card.locator(".request").inner_text()
        assert "720p" in request and "5 s" in request and "priority 3" in request
        assert jobs["beach.jpg"].model and jobs["beach.jpg"].model in request

        # Times in the browser's zone: the server wrote UTC, the script rewrote it.
        updated = page.locator("#live time")
        iso = updated.get_attribute("datetime")
        assert iso is not None
        local = dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(
            zoneinfo.ZoneInfo(ZONE)
        )
        assert f"{local:%H:%M:%S}" in updated.inner_text() and "UTC" not in updated.inner_text()

        # Thumbnails really load, and a video plays from an mp4.
        thumbs = page.locator("[data-list=done] img.thumb")
        assert thumbs.count() == 3
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
            """() => document.querySelectorAll('[data-list=done] li').length === 5""",
            timeout=BROWSER_WAIT_MS,
        )
        assert page.evaluate("window.__sameDocument") is True
        assert page.locator("main i, main b").count() == 0
        page.wait_for_function(
            """() => [...document.querySelectorAll('[data-list=done] img.thumb')]
                 .every((img) => img.complete && img.naturalWidth > 0)""",
            timeout=BROWSER_WAIT_MS,
        )

        # Fix the failed drop's sidecar where it waits: its Retry appears (no reload);
        # press it.
        (tmp_path / "failed" / "dune.yaml").write_text('prompt: "A dune at dusk"\n')
        with page.expect_navigation():
            page.get_by_role("button", name="Retry dune.jpg").click(timeout=BROWSER_WAIT_MS)
        assert page.url == base + "/"
        retried = wait_for(lambda: len(jobs_by_source(state).get("dune.jpg", [])) == 2, timeout=30)
        assert retried
        first, again = jobs_by_source(state)["dune.jpg"]
        page.wait_for_function(
            f"""() => {{
                 const row = document.querySelector("tbody tr[data-key='{again.job_id}']");
                 return row !== null && row.querySelector('.state').dataset.state === 'done';
               }}""",
            timeout=BROWSER_WAIT_MS,
        )
        assert page.get_by_role("button", name="Retry dune.jpg").count() == 0
        # The failed job's row points at its rerun's card, and the link lands there.
        pointer = page.locator(f"tr[data-key='{first.job_id}'] a", has_text="retried as job")
        page.wait_for_function(
            f"""() => {{
                 const a = document.querySelector("tr[data-key='{first.job_id}'] a[href]");
                 return a !== null && a.getAttribute('href') === '#job-{again.job_id}';
               }}""",
            timeout=BROWSER_WAIT_MS,
        )
        pointer.click()
        assert page.url.endswith(f"#job-{again.job_id}")
        rerun = page.locator(f"#job-{again.job_id}")
        assert f"retry of job {first.job_id}" in rerun.inner_text()
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
