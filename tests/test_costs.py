"""``seedance-watch costs`` from a real ledger: days in the budget's zone, models, outcomes,
each job at its recorded cost (exact to the cent), older records at today's prices."""

from __future__ import annotations

import datetime as dt
import json
import zoneinfo
from pathlib import Path
from typing import Any

import pytest

from seedance_watch.cli import main
from seedance_watch.commands.costs import costs_report, format_costs
from seedance_watch.config import BudgetConfig
from seedance_watch.core.budget import BudgetPrices
from seedance_watch.core.jobs import (
    Event,
    Fail,
    Finished,
    Job,
    Placing,
    State,
    SubmitIntent,
    SubmitRefused,
    Submitted,
    TaskSucceeded,
    Uploaded,
    apply,
)
from seedance_watch.ledger.jsonl import JsonlReader, Ledger

pytestmark = pytest.mark.timeout(60)

#: Seedance 1.0 Pro Fast and Pro, at prices budget.prices sets over the table's 0.20.
FAST = "seedance-1-0-pro-fast-251015"
PRO = "seedance-1-0-pro-250528"
PRICES = {FAST: 0.25, PRO: 0.5}
MINI = "seedance-2-0-mini"
V25 = "seedance-2-5"


def paris(*args: int) -> float:
    return dt.datetime(*args, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")).timestamp()  # type: ignore[misc]


def history(job_id: str, model: str, steps: list[tuple[float, Event]]) -> list[Job]:
    """Every record of one job, as the engine would write them."""
    job = Job(
        job_id=job_id,
        state=State.NEW,
        source=f"{job_id}.jpg",
        sidecar=f"{job_id}.yaml",
        created_at=steps[0][0] - 10,
        updated_at=steps[0][0] - 10,
        model=model,
    )
    records = [job]
    for at, event in steps:
        job = apply(job, event, at)
        records.append(job)
    return records


UPLOAD = Uploaded(uploads=(("image", "k"),))


def done(job_id: str, model: str, at: float) -> list[Job]:
    return history(
        job_id,
        model,
        [
            (at - 5, UPLOAD),
            (at, SubmitIntent()),
            (at + 1, Submitted(task_id=f"t-{job_id}")),
            (at + 60, TaskSucceeded(video_url="https://video.example/v.mp4")),
            (
                at + 61,
                Placing(output=f"{job_id}.mp4", video_sha256="0" * 64, video_bytes=1, moved_to=()),
            ),
            (at + 62, Finished()),
        ],
    )


def failed_after(job_id: str, model: str, at: float, code: str, *, submitted: bool) -> list[Job]:
    steps: list[tuple[float, Event]] = [(at - 5, UPLOAD), (at, SubmitIntent())]
    if submitted:
        steps.append((at + 1, Submitted(task_id=f"t-{job_id}")))
    steps += [
        (at + 30, Fail(error={"code": code, "message": "m"}, moved_to=(("a", "failed/a"),))),
        (at + 31, Finished()),
    ]
    return history(job_id, model, steps)


def refused(job_id: str, model: str, at: float) -> list[Job]:
    """The gateway provably refused the submit (429): the job waits, uploaded, uncounted."""
    return history(
        job_id, model, [(at - 5, UPLOAD), (at, SubmitIntent()), (at + 1, SubmitRefused())]
    )


def write_ledger(state: Path, *jobs: list[Job]) -> None:
    with Ledger.open(state) as ledger:
        for records in jobs:
            for record in records:
                ledger.put(record)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A ledger across two Paris days, one submit at 00:30 Paris (23:30 UTC the day before)."""
    path = tmp_path / "state"
    write_ledger(
        path,
        done("a", FAST, paris(2026, 12, 1, 10)),
        failed_after("b", PRO, paris(2026, 12, 1, 11), "task_failed", submitted=True),
        refused("c", FAST, paris(2026, 12, 1, 12)),
        # Cut off mid-submit, found on restart: may have been billed, so it counts.
        failed_after("d", FAST, paris(2026, 12, 1, 13), "submit_ambiguous", submitted=False),
        done("e", FAST, paris(2026, 12, 2, 0, 30)),
        history(
            "f", FAST, [(paris(2026, 12, 2, 9), UPLOAD), (paris(2026, 12, 2, 9, 1), SubmitIntent())]
        ),
    )
    return path


def budget(**kw: Any) -> BudgetConfig:
    return BudgetConfig(prices=PRICES, **kw)


def test_costs_json_per_day_and_model(state: Path) -> None:
    """Refused submits are not counted, ambiguous ones are; days are Paris days, newest first."""
    now = paris(2026, 12, 2, 12)
    report = costs_report(
        JsonlReader(state), budget(timezone="Europe/Paris", max_cost_per_day=1.0), now=now
    )
    assert report == {
        "currency": "USD",
        "days": [
            {
                "date": "2026-12-02",
                "submits": 2,
                "done": 1,
                "failed": 0,
                "cost": 0.5,
                "models": {FAST: {"submits": 2, "cost": 0.5}},
            },
            {
                "date": "2026-12-01",
                "submits": 3,
                "done": 1,
                "failed": 2,
                "cost": 1.0,
                "models": {FAST: {"submits": 2, "cost": 0.5}, PRO: {"submits": 1, "cost": 0.5}},
            },
        ],
        "today": {"spent": 0.5, "cap": 1.0, "remaining": 0.5},
    }


def test_the_same_ledger_in_utc_moves_the_midnight_submit(state: Path) -> None:
    """In UTC, the 00:30 Paris submit belongs to December 1st."""
    report = costs_report(JsonlReader(state), budget(), now=paris(2026, 12, 2, 12))
    assert [(d["date"], d["submits"]) for d in report["days"]] == [
        ("2026-12-02", 1),
        ("2026-12-01", 4),
    ]
    assert report["today"] == {"spent": 0.25, "cap": None, "remaining": None}


def test_days_bounds_the_report_and_today_stays(state: Path) -> None:
    """--days 1 keeps today only; a later day with no submits shows an empty list."""
    b = budget(timezone="Europe/Paris")
    assert [
        d["date"]
        for d in costs_report(JsonlReader(state), b, now=paris(2026, 12, 2, 12), days=1)["days"]
    ] == ["2026-12-02"]
    later = costs_report(JsonlReader(state), b, now=paris(2026, 12, 20, 12), days=7)
    assert later["days"] == [] and later["today"]["spent"] == 0.0


def test_costs_reads_while_the_daemon_holds_the_ledger(state: Path) -> None:
    """The daemon's lock does not stop costs: the ledger is read without it."""
    with Ledger.open(state) as ledger:
        ledger.put(done("g", PRO, paris(2026, 12, 2, 10))[-1])
        report = costs_report(
            JsonlReader(state), budget(timezone="Europe/Paris"), now=paris(2026, 12, 2, 12)
        )
    assert report["days"][0]["models"][PRO] == {"submits": 1, "cost": 0.5}


def test_table_for_people(state: Path) -> None:
    """Without --json: today's standing, one line per day and per model, a total."""
    report = costs_report(
        JsonlReader(state),
        budget(timezone="Europe/Paris", max_cost_per_day=1.0),
        now=paris(2026, 12, 2, 12),
    )
    text = format_costs(report)
    lines = text.splitlines()
    assert lines[0] == "today: 0.50 USD spent of 1.00 (0.50 left)"
    assert any(
        line.startswith("2026-12-01") and line.split()[-4:] == ["3", "1", "2", "1.00"]
        for line in lines
    )
    assert any(PRO in line and line.endswith("0.50") for line in lines)
    assert lines[-2].startswith("total") and lines[-2].endswith("1.50")


def test_cli_costs_json_and_table(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`seedance-watch costs --json` prints the report; --days must be a positive number."""
    config = tmp_path / "seedance-watch.yaml"
    config.write_text(
        f"paths: {{state: {state}}}\nstorage: {{bucket: b}}\n"
        f"budget: {{timezone: Europe/Paris, prices: {{{FAST}: 0.25, {PRO}: 0.5}}}}\n"
    )
    assert main(["costs", "--config", str(config), "--json", "--days", "100000"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [d["date"] for d in report["days"]] == ["2026-12-02", "2026-12-01"]
    assert report["currency"] == "USD" and report["today"]["cap"] is None
    assert main(["costs", "--config", str(config), "--days", "999999999"]) == 0
    assert "2026-12-01" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["costs", "--config", str(config), "--days", "0"])
    assert exit_info.value.code == 2


def test_costs_json_is_exact_to_the_cent_with_per_second_costs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Per-second jobs count at their recorded costs, each rounded once: two Mini 5 s
    (0.378 → 0.38 each), a Mini auto settled at 7 s (0.5292 → 0.53) and a 2.5 at 5 s
    (1.155 → 1.16) make 2.45, where adding the exact products gives 2.44; the JSON
    shows cents, never float noise (3.00 - 2.45 is 0.55)."""
    prices = BudgetPrices.from_config(BudgetConfig())
    five = {"resolution": "720p", "duration": 5}
    at = paris(2026, 12, 2, 9)

    def billed(job_id: str, model: str, options: dict[str, Any], length: float | None) -> list[Job]:
        reserved = prices.reserve(model, options)
        settled = reserved if length is None else reserved.settle(length)
        records = history(
            job_id,
            model,
            [
                (at - 5, UPLOAD),
                (at, SubmitIntent(cost=reserved.to_dict())),
                (at + 1, Submitted(task_id=f"t-{job_id}")),
                (at + 60, TaskSucceeded(video_url="https://video.example/v.mp4")),
                (
                    at + 61,
                    Placing(
                        output=f"{job_id}.mp4",
                        video_sha256="0" * 64,
                        video_bytes=1,
                        moved_to=(),
                        cost=settled.to_dict(),
                    ),
                ),
                (at + 62, Finished()),
            ],
        )
        return records

    state = tmp_path / "state"
    write_ledger(
        state,
        billed("m1", MINI, five, None),
        billed("m2", MINI, five, None),
        billed("m3", MINI, {"duration": "auto"}, 6.25),
        billed("v", V25, five, None),
    )
    config = tmp_path / "seedance-watch.yaml"
    config.write_text(
        f"paths: {{state: {state}}}\nstorage: {{bucket: b}}\n"
        "budget: {timezone: Europe/Paris, max_cost_per_day: 3.0}\n"
    )
    report = costs_report(
        JsonlReader(state),
        BudgetConfig(timezone="Europe/Paris", max_cost_per_day=3.0),
        now=at + 100,
    )
    (day,) = report["days"]
    assert day["cost"] == 2.45 and day["submits"] == 4 and day["done"] == 4
    assert day["models"] == {
        MINI: {"submits": 3, "cost": 1.29},
        V25: {"submits": 1, "cost": 1.16},
    }
    assert report["today"] == {"spent": 2.45, "cap": 3.0, "remaining": 0.55}
    assert 0.378 + 0.378 + 0.5292 + 1.155 < 2.445  # what rounding only the sum would give
    assert "2.45" in format_costs(report).splitlines()[-2]
    capsys.readouterr()  # the ledger's own log lines
    assert main(["costs", "--config", str(config), "--json", "--days", "100000"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["days"][0]["cost"] == 2.45 and printed["days"][0]["date"] == "2026-12-02"


def test_a_settled_job_counts_at_its_settlement_and_an_older_record_at_today_s_price(
    tmp_path: Path,
) -> None:
    """The auto job reserved 15 s of Mini (1.13) and settled at 7 s (0.53): costs shows
    0.53; a record from before costs were kept is priced now (Pro Fast's 0.20)."""
    prices = BudgetPrices.from_config(BudgetConfig())
    at = paris(2026, 12, 2, 9)
    reserved = prices.reserve(MINI, {"duration": "auto"})
    assert reserved.cents == 113
    settled = reserved.settle(6.25)
    auto = history(
        "auto",
        MINI,
        [
            (at - 5, UPLOAD),
            (at, SubmitIntent(cost=reserved.to_dict())),
            (at + 1, Submitted(task_id="t-auto")),
            (at + 60, TaskSucceeded(video_url="https://video.example/v.mp4")),
            (
                at + 61,
                Placing(
                    output="auto.mp4",
                    video_sha256="0" * 64,
                    video_bytes=1,
                    moved_to=(),
                    cost=settled.to_dict(),
                ),
            ),
        ],
    )
    state = tmp_path / "state"
    write_ledger(state, auto, done("old", FAST, at + 5))
    report = costs_report(JsonlReader(state), BudgetConfig(), now=at + 100)
    assert report["days"][0]["models"] == {
        MINI: {"submits": 1, "cost": 0.53},
        FAST: {"submits": 1, "cost": 0.2},
    }
    assert report["today"]["spent"] == 0.73
