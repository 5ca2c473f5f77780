"""End-of-job hooks with real little scripts: environment, timeout, stderr, the pool
(docs/design.md, "Hooks and notifications")."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from seedance_watch.config import HooksConfig, PathsConfig, load_config
from seedance_watch.core.jobs import Job, State
from seedance_watch.errors import ConfigError
from seedance_watch.pipeline.endings import job_end
from seedance_watch.pipeline.ports import JobEnd
from seedance_watch.providers.pixazo import PROVIDER
from seedance_watch.service.hooks import STDERR_TAIL_BYTES, HookRunner

from .helpers import wait_for

pytestmark = pytest.mark.timeout(60)

KEY = "pxz-live-0123456789abcdef"
TOKEN = "health-token-0123456789"
PY = sys.executable


def base_environ() -> dict[str, str]:
    """A daemon environment holding every secret a hook must not see."""
    return {
        "LC_CTYPE": "C.UTF-8",  # so the child Python adds nothing of its own
        "HOME": "/home/someone",
        "AWS_SECRET_ACCESS_KEY": "s3-secret-is-passed-on",
        "PIXAZO_API_KEY": KEY,
        "PIXAZO_API_KEY_FILE": "/run/secrets/pixazo-api-key",
        "CREDENTIALS_DIRECTORY": "/run/credentials/seedance-watch.service",
        "SEEDANCE_WATCH_HEALTH__TOKEN": TOKEN,
        "SEEDANCE_WATCH_STORAGE__BUCKET": "videos",
        "SOMETHING_WITH_THE_KEY": f"Bearer {KEY}",
        "SOMETHING_WITH_THE_TOKEN": f"x{TOKEN}x",
        "SEEDANCE_WATCH_CODE": "inherited-and-stale",
        "SEEDANCE_WATCH_OUTPUT": "/stale.mp4",
    }


def script(code: str, *args: str) -> list[str]:
    return [PY, "-c", code, *args]


DUMP_ENV = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"


def done_end(tmp_path: Path) -> JobEnd:
    out = tmp_path / "outbox" / "sub" / "beach.mp4"
    return JobEnd("done", "job-done-1", "sub/beach.jpg", out.with_suffix(".json"), output=out)


def failed_end(tmp_path: Path) -> JobEnd:
    return JobEnd(
        "failed",
        "job-failed-1",
        "sub/cat.png",
        tmp_path / "failed" / "sub" / "cat.error.json",
        code="task_failed",
        message="The model refused the task",
        hint="Adjust the prompt.",
    )


def runner(
    tmp_path: Path, *, timeout: float = 20.0, max_running: int = 4, **argv: Any
) -> HookRunner:
    return HookRunner(
        HooksConfig(timeout=timeout, **argv),
        base_environ(),
        [KEY, TOKEN, ""],
        scrub=PROVIDER.keys.variables,
        max_running=max_running,
    )


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


# --- environment ---------------------------------------------------------------------------


def test_done_hook_gets_exactly_the_spec_environment(tmp_path: Path) -> None:
    """on_done sees the daemon's environment without the key or token, plus the job's variables."""
    dump = tmp_path / "env.json"
    hooks = runner(tmp_path, on_done=script(DUMP_ENV, str(dump)))
    end = done_end(tmp_path)
    with capture_logs() as logs:
        asyncio.run(hooks.run(end))
    env = json.loads(dump.read_text())
    assert env == {
        "LC_CTYPE": "C.UTF-8",
        "HOME": "/home/someone",
        "AWS_SECRET_ACCESS_KEY": "s3-secret-is-passed-on",
        "SEEDANCE_WATCH_STORAGE__BUCKET": "videos",
        "SEEDANCE_WATCH_EVENT": "done",
        "SEEDANCE_WATCH_JOB_ID": "job-done-1",
        "SEEDANCE_WATCH_SOURCE": "sub/beach.jpg",
        "SEEDANCE_WATCH_OUTPUT": str(tmp_path / "outbox" / "sub" / "beach.mp4"),
        "SEEDANCE_WATCH_METADATA": str(tmp_path / "outbox" / "sub" / "beach.json"),
    }
    assert all(KEY not in v and TOKEN not in v for v in env.values())
    assert [e["event"] for e in logs] == ["hook.ran"]
    assert logs[0]["job_id"] == "job-done-1"


def test_failed_hook_gets_code_and_report_but_no_output(tmp_path: Path) -> None:
    """on_failed sees SEEDANCE_WATCH_CODE and the report; OUTPUT is absent, not empty."""
    dump = tmp_path / "env.json"
    done_dump = tmp_path / "done-env.json"
    hooks = runner(
        tmp_path,
        on_failed=script(DUMP_ENV, str(dump)),
        on_done=script(DUMP_ENV, str(done_dump)),
    )
    asyncio.run(hooks.run(failed_end(tmp_path)))
    env = json.loads(dump.read_text())
    job_vars = {k: v for k, v in env.items() if k.startswith("SEEDANCE_WATCH_") and "__" not in k}
    assert job_vars == {
        "SEEDANCE_WATCH_EVENT": "failed",
        "SEEDANCE_WATCH_JOB_ID": "job-failed-1",
        "SEEDANCE_WATCH_SOURCE": "sub/cat.png",
        "SEEDANCE_WATCH_METADATA": str(tmp_path / "failed" / "sub" / "cat.error.json"),
        "SEEDANCE_WATCH_CODE": "task_failed",
    }
    assert not done_dump.exists()  # one hook per event


def test_job_end_from_records_finds_the_files(tmp_path: Path) -> None:
    """A DONE record points at outbox/NAME.mp4 and NAME.json; a FAILED one at its report."""
    paths = PathsConfig.model_validate({}, context={"base_dir": tmp_path})
    common: dict[str, Any] = {"sidecar": "sub/a.yaml", "created_at": 1.0, "updated_at": 2.0}
    done = Job("j1", State.DONE, "sub/a.jpg", output="sub/a-2.mp4", **common)
    end = job_end(done, paths)
    assert end.output == tmp_path / "outbox" / "sub" / "a-2.mp4"
    assert end.metadata == tmp_path / "outbox" / "sub" / "a-2.json"
    failed = Job(
        "j2",
        State.FAILED,
        "sub/a.jpg",
        error={"code": "invalid_image", "message": "truncated", "hint": "Use a JPEG."},
        moved_to=(("sub/a.jpg", "failed/sub/a-3.jpg"), ("sub/a.yaml", "failed/sub/a-3.yaml")),
        **common,
    )
    end = job_end(failed, paths)
    assert (end.event, end.output, end.code, end.hint) == (
        "failed",
        None,
        "invalid_image",
        "Use a JPEG.",
    )
    assert end.metadata == tmp_path / "failed" / "sub" / "a-3.error.json"
    with pytest.raises(ValueError):
        job_end(Job("j3", State.SUBMITTED, "a.jpg", **common), paths)


def test_no_hook_configured_runs_nothing(tmp_path: Path) -> None:
    """Without on_done, a done job runs nothing and logs nothing."""
    hooks = runner(tmp_path, on_failed=script("raise SystemExit(1)"))
    with capture_logs() as logs:
        asyncio.run(hooks.run(done_end(tmp_path)))
    assert logs == []


# --- failures ------------------------------------------------------------------------------


def test_failing_hook_logs_status_and_redacted_stderr_tail(tmp_path: Path) -> None:
    """Exit 3 is hook.failed with status 3 and the end of stderr, the key masked."""
    code = (
        "import sys; sys.stderr.write('noise ' * 2000); "
        f"sys.stderr.write('the real error: upload refused for {KEY}\\n'); sys.exit(3)"
    )
    hooks = runner(tmp_path, on_done=script(code))
    with capture_logs() as logs:
        asyncio.run(hooks.run(done_end(tmp_path)))
    (event,) = logs
    assert event["event"] == "hook.failed" and event["log_level"] == "warning"
    assert event["status"] == 3 and event["job_id"] == "job-done-1"
    stderr = event["stderr"]
    assert stderr.endswith("the real error: upload refused for ***\n")
    assert KEY not in stderr
    assert len(stderr) <= STDERR_TAIL_BYTES


def test_hook_that_cannot_start_is_logged_not_raised(tmp_path: Path) -> None:
    """A missing program is hook.failed (not_started); run() returns normally."""
    hooks = runner(tmp_path, on_done=[str(tmp_path / "no-such-hook")])
    with capture_logs() as logs:
        asyncio.run(hooks.run(done_end(tmp_path)))
    (event,) = logs
    assert event["event"] == "hook.failed" and event["status"] == "not_started"
    assert "no-such-hook" in event["error"]


def test_hanging_hook_and_its_children_are_killed_at_the_timeout(tmp_path: Path) -> None:
    """A hook that outlives hooks.timeout is killed with its process group: status timeout."""
    pids = tmp_path / "pids"
    code = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        f"open({str(pids)!r}, 'w').write(f'{{child.pid}}'); "
        "sys.stderr.write('hanging now\\n'); sys.stderr.flush(); time.sleep(120)"
    )
    hooks = runner(tmp_path, timeout=1.0, on_done=script(code))
    started = time.monotonic()
    with capture_logs() as logs:
        asyncio.run(hooks.run(done_end(tmp_path)))
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 10
    (event,) = logs
    assert event["event"] == "hook.failed" and event["status"] == "timeout"
    assert "hanging now" in event["stderr"]
    wait_for(lambda: pids.exists(), timeout=15)
    grandchild = int(pids.read_text())
    wait_for(lambda: gone(grandchild), timeout=15)


def test_cancelled_run_kills_the_hook_and_propagates(tmp_path: Path) -> None:
    """At shutdown a running hook is killed and run() raises CancelledError (not run)."""
    pidfile = tmp_path / "pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    hooks = runner(tmp_path, on_done=script(code))

    async def main() -> int:
        task = asyncio.create_task(hooks.run(done_end(tmp_path)))
        deadline = time.monotonic() + 15
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return int(pidfile.read_text())

    pid = asyncio.run(main())
    wait_for(lambda: gone(pid), timeout=15)
    assert hooks.running == 0


def test_pool_bounds_how_many_hooks_run_at_once(tmp_path: Path) -> None:
    """With max_running 2, six hooks never overlap more than two at a time, and all run."""
    record = tmp_path / "spans"
    record.mkdir()
    code = (
        "import os, sys, time; start = time.time(); time.sleep(0.3); "
        f"open(os.path.join({str(record)!r}, os.environ['SEEDANCE_WATCH_JOB_ID']), 'w')"
        ".write(f'{start} {time.time()}')"
    )
    hooks = runner(tmp_path, max_running=2, on_done=script(code))
    ends = [
        JobEnd("done", f"job{i}", f"{i}.jpg", tmp_path / f"{i}.json", output=tmp_path / f"{i}.mp4")
        for i in range(6)
    ]

    async def main() -> None:
        await asyncio.gather(*(hooks.run(e) for e in ends))
        await asyncio.wait_for(hooks.wait_idle(), 5)

    asyncio.run(main())
    spans = [tuple(map(float, f.read_text().split())) for f in record.iterdir()]
    assert len(spans) == 6
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap <= 2


# --- config --------------------------------------------------------------------------------


def test_config_hook_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    """./hooks/done.sh is the one beside the config file; a bare name stays for $PATH."""
    path = tmp_path / "conf" / "seedance-watch.yaml"
    path.parent.mkdir()
    path.write_text(
        "storage: {bucket: b}\n"
        "hooks: {on_done: [./hooks/done.sh, --x], on_failed: [logger, -t, sw]}\n"
    )
    config = load_config(path, {})
    assert config.hooks.on_done == [str(tmp_path / "conf" / "hooks" / "done.sh"), "--x"]
    assert config.hooks.on_failed == ["logger", "-t", "sw"]


def test_config_refuses_a_hook_written_as_one_string(tmp_path: Path) -> None:
    """A shell-style string is refused with a message showing the list form."""
    path = tmp_path / "seedance-watch.yaml"
    path.write_text("storage: {bucket: b}\nhooks: {on_done: /usr/bin/publish --quiet}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.key == "hooks.on_done"
    assert "list of arguments" in info.value.message
