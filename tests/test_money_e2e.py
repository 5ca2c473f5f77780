"""The daily budget, the cost report, hooks and notifications with the real daemon
(docs/design.md, "Money", "Hooks and notifications"): the simulator, moto, real files."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from seedance_watch.config import load_config
from seedance_watch.core.budget import next_day_start
from seedance_watch.core.jobs import Job, Stage, State, SubmitIntent, SubmitRefused
from seedance_watch.daemon import RunResult, run_service
from seedance_watch.ledger.jsonl import Ledger, read_jobs
from seedance_watch.providers.keys import load_api_key
from seedance_watch.providers.pixazo import PROVIDER
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import EMULATOR_CREDENTIALS, S3Emulator

from .fakes import make_engine, seed
from .helpers import Receiver, WritePair, files_under, until, wait_for, write_config

#: The default model of image drops: 0.20 per generation in the built-in table.
MODEL = "seedance-1-0-pro-fast-251015"
KEY = "sk-canary-must-never-leak-4242"
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.timeout(120),
    pytest.mark.sim(api_key=KEY, submit_answer="envelope"),
]
BUDGET = "budget: {max_cost_per_day: 0.60}\n"


def budget_config(tmp_path: Path, s3: S3Emulator, sim: Simulator, extra: str) -> Path:
    """A daemon config whose frames and reference drops default to Seedance 2.0 Mini
    (0.38 for 5 s at 720p): a cap below the 1.20 that one 2.0 Fast frames job
    reserves is then a valid config."""
    path = write_config(tmp_path, s3, sim, extra=extra)
    text = path.read_text()
    mini = "frames_model: seedance-2-0-mini, reference_model: seedance-2-0-mini, "
    path.write_text(text.replace("task_timeout: 60, ", "task_timeout: 60, " + mini, 1))
    return path


def run(config_path: Path, env: dict[str, str] | None = None) -> RunResult:
    """``run --once`` in-process with ``env`` as the environment overrides."""
    config = load_config(config_path, env or {})
    return asyncio.run(
        run_service(config, load_api_key({"PIXAZO_API_KEY": KEY}, PROVIDER.keys), once=True)
    )


def costs_json(config_path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "seedance_watch", "costs", "--config", str(config_path), "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def test_a_cap_of_three_generations_submits_three_of_five_and_exits_5(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """Five pairs, a cap worth three (0.60 at the built-in 0.20): exactly three submits,
    exit 5, two jobs wait intact; the same day again submits nothing (the tally is read
    from the ledger: a restart keeps it); a higher cap through the environment finishes
    the rest; `costs --json` matches what the simulator recorded; each job records its
    cost and each output JSON shows it."""
    config = budget_config(tmp_path, s3_server, sim, BUDGET)
    for i in range(5):
        write_pair(tmp_path / "inbox", f"p{i}")
    first = run(config)
    assert first.exit_code == 5 and len(sim.submits) == 3
    assert first.summary.budget_held and "max_cost_per_day" in first.summary.budget_held
    waiting = [j for j in read_jobs(tmp_path / "state").values() if not j.terminal]
    assert len(waiting) == 2 and {j.state for j in waiting} == {State.UPLOADED}
    assert len(files_under(tmp_path / "inbox")) == 4  # two pairs, untouched
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "seedance_watch", "status", "--config", str(config), "--json"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout
    )  # fmt: skip
    assert "budget" in json.dumps(status["daemon"])
    report = costs_json(config)
    today = report["days"][0]
    assert (today["submits"], today["cost"]) == (len(sim.submits), 0.6)
    assert report["today"] == {"spent": 0.6, "cap": 0.6, "remaining": 0.0}
    assert today["models"] == {MODEL: {"submits": 3, "cost": 0.6}}

    again = run(config)
    assert again.exit_code == 5 and len(sim.submits) == 3

    raised = run(config, {"SEEDANCE_WATCH_BUDGET__MAX_COST_PER_DAY": "2.0"})
    assert raised.exit_code == 0 and len(sim.submits) == 5
    assert len(list((tmp_path / "outbox").glob("*.mp4"))) == 5
    report = costs_json(config)
    assert report["days"][0]["submits"] == len(sim.submits) == 5
    assert report["days"][0]["done"] == 5 and report["days"][0]["cost"] == 1.0
    for job in read_jobs(tmp_path / "state").values():
        assert job.cost == {"cents": 20, "per": "generation", "rate": "0.20", "settled": True}
    for meta in (tmp_path / "outbox").glob("*.json"):
        cost = json.loads(meta.read_text())["cost"]
        assert cost == {"amount": 0.2, "currency": "USD", "per": "generation"}


async def test_ambiguous_submits_count_and_refused_ones_do_not(tmp_path: Path) -> None:
    engine, store, _, _ = make_engine(tmp_path)
    job = seed(store, State.UPLOADED)
    intent = engine.put(job, SubmitIntent())
    assert engine.budget.today()["submits"] == 1
    engine.put(intent, SubmitRefused())
    assert engine.budget.today()["submits"] == 0  # provably refused: not billed
    again = engine.put(store.get("j1"), SubmitIntent())  # type: ignore[arg-type]
    from seedance_watch import errors as E

    await engine.placement.fail(again, E.SubmitAmbiguous("lost answer"))
    assert store.get("j1").state is State.FAILED  # type: ignore[union-attr]
    assert engine.budget.today()["submits"] == 1  # may be billed: it counts


async def test_a_submit_the_gateway_rejected_is_not_counted(tmp_path: Path) -> None:
    """A 400/404 on submit created no task: the job fails, the day's tally drops it."""
    from seedance_watch import errors as E

    engine, store, provider, _ = make_engine(tmp_path)
    (tmp_path / "inbox" / "beach.jpg").write_bytes(b"x")
    (tmp_path / "inbox" / "beach.yaml").write_text("prompt: p\n")
    seed(store, State.UPLOADED, uploads=(("image", "k"),))
    provider.submits.append(E.GatewayRejected("no such model", http_status=404))
    assert engine.budget.wait(store.get("j1")) == 0  # type: ignore[arg-type]
    await engine.step(Stage.SUBMIT, "j1")
    failed = store.get("j1")
    assert failed is not None and failed.state is State.FAILED and failed.intent_at is None
    assert failed.error is not None and failed.error["stage"] == "submitting"
    assert engine.budget.today()["submits"] == 0


async def test_the_pause_lifts_when_the_fake_clock_crosses_midnight(tmp_path: Path) -> None:
    """Daemon mode: at the cap nothing is submitted and nothing fails; past midnight in
    budget.timezone the waiting job goes out by itself."""
    engine, store, provider, clock = make_engine(
        tmp_path, budget={"max_submits_per_day": 1, "timezone": "Europe/Paris"}
    )
    # Half a second before midnight in Paris: the submitter sleeps that long at the cap,
    # then looks at the clock again.
    clock.now = next_day_start(clock.now, ZoneInfo("Europe/Paris")) - 0.5
    spent = seed(store, State.FAILED, intent_at=clock.now)  # today's one submit
    waiting = Job.from_dict({**spent.to_dict(), "job_id": "j2", "state": "uploaded", "seq": 0})
    store.put(replace(waiting, intent_at=None, uploads=(("image", "k"),)))
    try:
        await engine.recover()  # j2 lines up for the submitter
        engine.start_workers()
        await until(lambda: engine.budget.hold is not None)
        assert provider.created == [] and store.get("j2").state is State.UPLOADED  # type: ignore[union-attr]
        clock.now = engine.budget.hold.lifts_at + 1  # type: ignore[union-attr]
        await until(lambda: len(provider.created) == 1)
        await until(lambda: store.get("j2").state is State.SUBMITTED)  # type: ignore[union-attr]
        assert engine.budget.hold is None
    finally:
        await engine.shutdown(1.0)


HOOK = """
import json, os, sys, time
env = {k: v for k, v in os.environ.items() if k.startswith("SEEDANCE_WATCH_") or "PIXAZO" in k}
env["_all"] = "\\n".join(f"{k}={v}" for k, v in os.environ.items())
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(env) + "\\n")
if os.environ["SEEDANCE_WATCH_JOB_ID"] and len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
"""


def hooks_config(tmp_path: Path, *, sleep: float | None = None, timeout: float = 20) -> str:
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    argv = [sys.executable, str(script), str(tmp_path / "hook.log")]
    if sleep is not None:
        argv.append(str(sleep))
    listed = json.dumps(argv)
    return f"hooks: {{on_done: {listed}, on_failed: {listed}, timeout: {timeout}}}\n"


def hook_runs(tmp_path: Path) -> list[dict[str, str]]:
    log = tmp_path / "hook.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_hooks_run_once_per_job_with_the_right_environment_and_never_the_key(
    tmp_path: Path,
    s3_server: S3Emulator,
    sim: Simulator,
    write_pair: WritePair,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIXAZO_API_KEY", KEY)
    for k, v in EMULATOR_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    config = write_config(tmp_path, s3_server, sim, extra=hooks_config(tmp_path))
    write_pair(tmp_path / "inbox", "good")
    write_pair(tmp_path / "inbox", "bad", sidecar="prompt: ''\n")
    result = run(config)
    assert result.exit_code == 4
    runs = {r["SEEDANCE_WATCH_EVENT"]: r for r in hook_runs(tmp_path)}
    assert len(hook_runs(tmp_path)) == 2 and set(runs) == {"done", "failed"}
    done, failed = runs["done"], runs["failed"]
    assert done["SEEDANCE_WATCH_SOURCE"] == "good.jpg"
    assert done["SEEDANCE_WATCH_OUTPUT"] == str(tmp_path / "outbox" / "good.mp4")
    assert done["SEEDANCE_WATCH_METADATA"] == str(tmp_path / "outbox" / "good.json")
    assert "SEEDANCE_WATCH_CODE" not in done
    assert (
        failed["SEEDANCE_WATCH_CODE"] == "invalid_sidecar" and "SEEDANCE_WATCH_OUTPUT" not in failed
    )
    assert failed["SEEDANCE_WATCH_METADATA"] == str(tmp_path / "failed" / "bad.error.json")
    for r in runs.values():
        assert KEY not in r["_all"] and "PIXAZO_API_KEY" not in r
        assert "AWS_ACCESS_KEY_ID" in r["_all"]  # the rest is passed on
    jobs = read_jobs(tmp_path / "state").values()
    assert all(j.hook_due and j.hook_done for j in jobs)
    run(config)  # nothing new to do: no hook runs again
    assert len(hook_runs(tmp_path)) == 2


def test_a_hanging_hook_is_killed_at_the_timeout_and_the_job_stays_done(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    config = write_config(
        tmp_path, s3_server, sim, extra=hooks_config(tmp_path, sleep=60, timeout=1)
    )
    write_pair(tmp_path / "inbox", "good")
    started = time.monotonic()
    result = run(config)
    assert result.exit_code == 0 and time.monotonic() - started < 30
    (job,) = read_jobs(tmp_path / "state").values()
    assert job.state is State.DONE and job.hook_done


def test_a_hook_a_crash_interrupted_runs_after_the_restart_and_a_finished_one_does_not(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """The ledger says a hook was due and not recorded as ran (a kill -9 between the
    job's end and its hook): the next start runs it once; a recorded one never again."""
    config = write_config(tmp_path, s3_server, sim, extra=hooks_config(tmp_path))
    write_pair(tmp_path / "inbox", "good")
    assert run(config).exit_code == 0
    assert len(hook_runs(tmp_path)) == 1
    (job,) = read_jobs(tmp_path / "state").values()
    with Ledger.open(tmp_path / "state") as ledger:  # as if killed before HookRan
        ledger.put(Job.from_dict({**job.to_dict(), "hook_done": False, "seq": job.seq + 1}))
    (tmp_path / "hook.log").unlink()
    assert run(config).exit_code == 0
    assert [r["SEEDANCE_WATCH_JOB_ID"] for r in hook_runs(tmp_path)] == [job.job_id]
    assert run(config).exit_code == 0
    assert len(hook_runs(tmp_path)) == 1


def test_notifications_one_per_ended_job_and_per_pause(
    tmp_path: Path, s3_server: S3Emulator, sim: Simulator, write_pair: WritePair
) -> None:
    """Through Apprise to a json:// receiver: one message per job that ends and one when
    the budget pause starts; a receiver that fails is retried and never affects jobs."""
    receiver = Receiver()
    receiver.plan = [500]  # the first delivery fails: retried
    try:
        extra = (
            f"notify: {{urls: ['{receiver.json_url}'], events: [done, failed, paused]}}\n"
            "budget: {max_cost_per_day: 0.38}\n"  # one 0.20 submit; two would be 0.40
        )
        config = budget_config(tmp_path, s3_server, sim, extra)
        write_pair(tmp_path / "inbox", "good")
        write_pair(tmp_path / "inbox", "bad", sidecar="prompt: ''\n")
        write_pair(tmp_path / "inbox", "later")
        result = run(config)
        assert result.exit_code == 4 and len(sim.submits) == 1
        wait_for(lambda: len(receiver.posts) >= 4, timeout=30)
        bodies = [p.get("title", "") + " " + p.get("message", "") for p in receiver.posts[1:]]
        assert len(bodies) == 3
        assert sum("bad" in b and "invalid_sidecar" in b for b in bodies) == 1
        assert sum("budget" in b.lower() for b in bodies) == 1
    finally:
        receiver.close()
