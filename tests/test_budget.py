"""The daily budget: cents, days in a time zone, the tally and its holds, and the gate
that lets submits through without two of them sharing the day's last slot."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from structlog.testing import capture_logs

from seedance_watch.config import BudgetConfig, load_config
from seedance_watch.core.budget import (
    BudgetPrices,
    BudgetTally,
    daily_costs,
    day_of,
    day_start,
    from_cents,
    next_day_start,
    submit_time,
    to_cents,
)
from seedance_watch.core.jobs import Job, Stage, State, SubmitIntent, Submitted, TaskSucceeded
from seedance_watch.errors import ConfigError
from seedance_watch.providers.base import GenerationRequest, Media, TaskRef
from seedance_watch.providers.download import VideoDownloader
from seedance_watch.simulator.video import make_video
from seedance_watch.testing.provider import FakeProvider

from .fakes import make_engine
from .helpers import until

pytestmark = pytest.mark.timeout(60)

#: A model priced 0.10 per generation by the test's budget.prices.
DIME = "dime-model"
#: A model priced 0.62 per generation by the test's budget.prices.
PRO = "pro-model"
#: The built-in default of image and text drops (0.20 per generation).
PRO_FAST = "seedance-1-0-pro-fast-251015"
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "America/Santiago",  # DST changes at midnight
    "America/Havana",  # likewise
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Asia/Kolkata",  # a half-hour offset, no DST
    "Pacific/Apia",  # skipped 2011-12-30 altogether
    "Pacific/Kiritimati",  # UTC+14
]


def local(zone: str, *args: int) -> float:
    return dt.datetime(*args, tzinfo=zoneinfo.ZoneInfo(zone)).timestamp()  # type: ignore[misc]


def prices(
    *,
    cap: float | None = None,
    submits: int | None = None,
    timezone: str = "UTC",
) -> BudgetPrices:
    return BudgetPrices.from_config(
        BudgetConfig.model_validate(
            {
                "max_cost_per_day": cap,
                "max_submits_per_day": submits,
                "timezone": timezone,
                "prices": {DIME: 0.10, PRO: 0.62},
            }
        )
    )


def reserves(p: BudgetPrices, model: str | None) -> int:
    """What one submit with ``model`` reserves (no options: the gateway's defaults)."""
    return p.reserve(model, None).cents


def job(
    job_id: str, *, state: State = State.DONE, model: str | None = DIME, **fields: object
) -> Job:
    return Job(
        job_id=job_id,
        state=state,
        source=f"{job_id}.jpg",
        sidecar=f"{job_id}.yaml",
        created_at=0.0,
        updated_at=0.0,
        model=model,
        **fields,  # type: ignore[arg-type]
    )


# --- cents ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "cents"),
    [(0, 0), (0.1, 10), (0.3, 30), (1, 100), (0.18, 18), (0.285, 29), (2.675, 268), (0.004, 0)],
)
def test_to_cents_rounds_the_written_decimal_half_up(amount: float, cents: int) -> None:
    """Amounts become the cents their decimal form says, half up (2.675 is 268, not 267)."""
    assert to_cents(amount) == cents


@pytest.mark.parametrize("amount", [-0.01, float("inf"), float("nan")])
def test_to_cents_refuses_what_is_not_money(amount: float) -> None:
    """Negative, infinite and NaN amounts are errors, never a cap of nonsense."""
    with pytest.raises(ValueError):
        to_cents(amount)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=10**9))
def test_cents_round_trip_exactly(cents: int) -> None:
    """Every whole-cent amount written as a float comes back as the same cents."""
    assert to_cents(from_cents(cents)) == cents


def test_three_dimes_reach_a_cap_of_thirty_cents_exactly() -> None:
    """3 × 0.10 against a cap of 0.30: the third submit is allowed, the fourth held.

    In floats 0.1 + 0.1 + 0.1 > 0.3, which would hold the third one.
    """
    assert 0.1 + 0.1 + 0.1 > 0.3
    tally = BudgetTally(prices(cap=0.3))
    now = local("UTC", 2026, 12, 1, 9)
    for i in range(3):
        assert tally.check(now + i, 10) is None
        tally.intent(now + i, 10)
    hold = tally.check(now + 3, 10)
    assert hold is not None
    assert (hold.cap, hold.spent, hold.limit, hold.price) == ("max_cost_per_day", 30, 30, 10)
    assert tally.today(now + 3) == {
        "spent": 0.3,
        "cap": 0.3,
        "remaining": 0.0,
        "currency": "USD",
        "submits": 3,
        "max_submits": None,
    }


# --- days ----------------------------------------------------------------------------------


@settings(derandomize=True, max_examples=400, deadline=None)
@given(
    ts=st.floats(min_value=946684800, max_value=2208988800, allow_nan=False),
    zone_name=st.sampled_from(ZONES),
)
def test_every_instant_lies_in_one_day_that_begins_and_ends_around_it(
    ts: float, zone_name: str
) -> None:
    """The day of an instant begins at or before it and the next one begins after it."""
    zone = zoneinfo.ZoneInfo(zone_name)
    day = day_of(ts, zone)
    start, end = day_start(day, zone), next_day_start(ts, zone)
    assert start <= ts < end
    assert day_of(start, zone) == day
    assert day_of(end - 0.001, zone) == day
    assert day_of(end, zone) > day


@pytest.mark.parametrize(
    ("date", "hours"),
    [((2026, 3, 29), 23), ((2026, 10, 25), 25), ((2026, 6, 1), 24)],
)
def test_dst_days_in_paris_are_23_and_25_hours_long(date: tuple[int, int, int], hours: int) -> None:
    """The spring day is 23 hours, the autumn day 25: days follow the local clock."""
    day = dt.date(*date)
    start = day_start(day, PARIS)
    assert next_day_start(start, PARIS) - start == hours * 3600


def test_santiago_day_begins_when_the_clocks_skip_midnight() -> None:
    """In Chile, 2026-09-06 00:00 does not exist (00:00 → 01:00): that day begins at 01:00."""
    zone = zoneinfo.ZoneInfo("America/Santiago")
    start = day_start(dt.date(2026, 9, 6), zone)
    assert dt.datetime.fromtimestamp(start, zone).strftime("%H:%M") == "01:00"
    assert day_of(start - 1, zone) == dt.date(2026, 9, 5)
    assert next_day_start(start - 1, zone) == start


def test_apia_skipped_a_day() -> None:
    """Samoa went from 2011-12-29 straight to 2011-12-31: the day after the 29th is the 31st."""
    zone = zoneinfo.ZoneInfo("Pacific/Apia")
    evening = local("Pacific/Apia", 2011, 12, 29, 20)
    after = next_day_start(evening, zone)
    assert day_of(after, zone) == dt.date(2011, 12, 31)
    assert after - evening == 4 * 3600


def test_a_submit_counts_on_its_local_day_across_midnight() -> None:
    """23:59:59 local counts on that day; at midnight the new day starts with nothing spent."""
    tally = BudgetTally(prices(cap=0.2, timezone="Europe/Paris"))
    before = local("Europe/Paris", 2026, 10, 25, 23, 59, 59)
    tally.intent(before - 5, 10)
    tally.intent(before, 10)
    hold = tally.check(before + 0.5, 10)
    assert hold is not None
    midnight = local("Europe/Paris", 2026, 10, 26)
    assert hold.lifts_at == midnight
    assert hold.day == dt.date(2026, 10, 25)
    assert "2026-10-26 00:00 Europe/Paris" in hold.message
    assert tally.check(midnight, 10) is None
    assert tally.spent(midnight) == (0, 0)
    assert tally.spent(midnight - 0.001) == (20, 2)


def test_days_are_local_not_utc() -> None:
    """At 23:30 in Paris on a UTC+1 day it is still the same day, though UTC says 22:30."""
    tally = BudgetTally(prices(submits=1, timezone="Europe/Paris"))
    late = local("Europe/Paris", 2026, 12, 1, 23, 30)
    early_next = local("Europe/Paris", 2026, 12, 2, 0, 30)  # still Dec 1 in UTC
    tally.intent(late, 10)
    assert tally.check(late + 60, 10) is not None
    assert tally.check(early_next, 10) is None


# --- caps ----------------------------------------------------------------------------------


def test_submit_cap_reached_exactly_then_held() -> None:
    """max_submits_per_day: 2 lets two submits through and holds the third."""
    tally = BudgetTally(prices(submits=2))
    now = local("UTC", 2026, 12, 1, 9)
    tally.intent(now, 10)
    assert tally.check(now, 10) is None
    tally.intent(now, 10)
    hold = tally.check(now, 10)
    assert hold is not None
    assert (hold.cap, hold.spent, hold.limit) == ("max_submits_per_day", 2, 2)
    assert hold.lifts_at == local("UTC", 2026, 12, 2)
    assert "max_submits_per_day 2" in hold.message


def test_the_next_submit_s_own_price_decides() -> None:
    """With 0.10 left, a 0.10 model goes and a 0.62 one waits."""
    p = prices(cap=1.0)
    tally = BudgetTally(p)
    now = local("UTC", 2026, 12, 1, 9)
    for _ in range(9):
        tally.intent(now, reserves(p, DIME))
    assert tally.check(now, reserves(p, DIME)) is None
    hold = tally.check(now, reserves(p, PRO))
    assert hold is not None and hold.price == 62 and hold.spent == 90
    assert "0.90 USD" in hold.why and "1.00" in hold.why
    assert hold.message.startswith(hold.why)
    assert "Submits resume at 2026-12-02 00:00 UTC" in hold.message


def test_no_caps_never_hold() -> None:
    """Without caps nothing is ever held, and today() says so with nulls."""
    tally = BudgetTally(prices())
    now = local("UTC", 2026, 12, 1)
    for _ in range(1000):
        tally.intent(now, 62)
    assert tally.check(now, 62) is None
    today = tally.today(now)
    assert today["cap"] is None and today["remaining"] is None and today["submits"] == 1000
    assert today["spent"] == 620.0


def test_price_falls_back_to_default_price() -> None:
    """A model in neither table (or none; or a retired one, which has no price) costs
    budget.default_price per generation; a table model its built-in price."""
    p = BudgetPrices.from_config(BudgetConfig(default_price=0.5, max_cost_per_day=1.0))
    assert reserves(p, "someone-elses-model") == 50
    assert reserves(p, None) == 50
    assert reserves(p, "seedance-1-0-lite-i2v-250428") == 50
    assert reserves(p, PRO_FAST) == 20
    assert p.reserve("someone-elses-model", {"duration": 12}).per == "generation"


# --- the tally from the ledger's jobs --------------------------------------------------------


def test_tally_from_jobs_counts_intents_not_refusals_or_copies() -> None:
    """Intents count (ambiguous ones too); refused submits and duplicates do not."""
    at = local("UTC", 2026, 12, 1, 10)
    jobs = [
        job("done1", intent_at=at, submitted_at=at + 1, task_id="t1"),
        job("ambiguous", state=State.FAILED, intent_at=at + 2, error={"code": "submit_ambiguous"}),
        job("in-flight", state=State.SUBMITTING, intent_at=at + 3),
        job("refused", state=State.UPLOADED),  # the refusal cleared intent_at
        job("copy", duplicate_of="done1", submitted_at=at + 1, task_id="t1"),
        job("v1", submitted_at=at + 4, task_id="t9"),  # written before intents were kept
        job("yesterday", intent_at=at - 86400),
    ]
    tally = BudgetTally.from_jobs(prices(), jobs)
    assert tally.spent(at) == (40, 4)
    assert tally.spent(at - 86400) == (10, 1)
    assert [submit_time(j) is None for j in jobs] == [False] * 3 + [True, True] + [False] * 2


def test_refusal_gives_the_submit_back() -> None:
    """A provable refusal takes the submit off the day it was counted on."""
    tally = BudgetTally(prices(cap=0.2))
    at = local("UTC", 2026, 12, 1, 23, 59)
    tally.intent(at, 10)
    tally.intent(at, 10)
    assert tally.check(at + 120, 10) is None  # a new day
    assert tally.check(at, 10) is not None
    assert tally.refused(at, 10)
    assert tally.check(at, 10) is None
    assert tally.spent(at) == (10, 1)
    assert not tally.refused(at + 86400, 10)  # nothing counted that day: no change
    assert tally.spent(at + 86400) == (0, 0)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=1_790_000_000, max_value=1_790_000_000 + 5 * 86400),
            st.sampled_from([DIME, PRO, None, "other", PRO_FAST]),
            st.booleans(),
        ),
        max_size=40,
    ),
    st.sampled_from(ZONES),
)
def test_incremental_tally_matches_a_rebuild_from_the_ledger(
    submits: list[tuple[float, str | None, bool]], zone: str
) -> None:
    """Intents then refusals, applied one by one, give what a restart rebuilds."""
    p = prices(cap=5.0, submits=10, timezone=zone)
    live = BudgetTally(p)
    for at, model, _ in submits:
        live.intent(at, reserves(p, model))
    for at, model, refused in submits:
        if refused:
            live.refused(at, reserves(p, model))
    kept = [
        job(f"j{i}", model=model, intent_at=at)
        for i, (at, model, refused) in enumerate(submits)
        if not refused
    ]
    rebuilt = BudgetTally.from_jobs(p, kept)
    for at, model, _ in submits:
        assert live.spent(at) == rebuilt.spent(at)
        assert live.check(at, reserves(p, model)) == rebuilt.check(at, reserves(p, model))
        total = sum(
            reserves(p, k.model)
            for k in kept
            if day_of(k.intent_at or 0, p.zone) == day_of(at, p.zone)
        )
        assert live.spent(at)[0] == total


def test_daily_costs_per_day_and_model_newest_first() -> None:
    """The report groups submits by local day and model, with what became of them."""
    p = prices(timezone="Europe/Paris")
    d1 = local("Europe/Paris", 2026, 12, 1, 12)
    d2 = local("Europe/Paris", 2026, 12, 2, 0, 10)  # Dec 1 in UTC
    jobs = [
        job("a", intent_at=d1),
        job("b", state=State.FAILED, model=PRO, intent_at=d1),
        job("c", state=State.SUBMITTED, intent_at=d2),
        job("d", state=State.UPLOADED),
    ]
    days = daily_costs(p, jobs)
    assert [d.to_dict() for d in days] == [
        {
            "date": "2026-12-02",
            "submits": 1,
            "done": 0,
            "failed": 0,
            "cost": 0.1,
            "models": {DIME: {"submits": 1, "cost": 0.1}},
        },
        {
            "date": "2026-12-01",
            "submits": 2,
            "done": 1,
            "failed": 1,
            "cost": 0.72,
            "models": {DIME: {"submits": 1, "cost": 0.1}, PRO: {"submits": 1, "cost": 0.62}},
        },
    ]
    assert [d.date for d in daily_costs(p, jobs, since=dt.date(2026, 12, 2))] == [
        dt.date(2026, 12, 2)
    ]


# --- the config ----------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "seedance-watch.yaml"
    path.write_text("storage: {bucket: b}\n" + text)
    return path


#: Every kind's default model priced 0.18 per generation: one default job of any kind
#: reserves 0.18.
FLAT = "prices: {seedance-1-0-pro-fast-251015: 0.18, seedance-2-0-fast: 0.18}"


def test_config_cap_equal_to_one_price_is_allowed(tmp_path: Path) -> None:
    """A cap of exactly what one default job reserves is valid; a cent less is a config
    error naming budget.max_cost_per_day."""
    ok = load_config(write(tmp_path, f"budget: {{max_cost_per_day: 0.18, {FLAT}}}\n"), {})
    assert ok.budget.max_cost_per_day == 0.18
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"budget: {{max_cost_per_day: 0.17, {FLAT}}}\n"), {})
    assert info.value.key == "budget.max_cost_per_day"


def test_config_cap_below_one_default_image_or_text_job(tmp_path: Path) -> None:
    """A cap below what one image or text drop reserves with its default model (0.20 per
    generation) is a config error naming the kind, the model key and the amount; frames
    and reference drops (Seedance 2, per second) are judged per drop at intake, so a cap
    below a default 5 s clip of theirs still loads."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "budget: {max_cost_per_day: 0.19}\n"), {})
    assert info.value.key == "budget.max_cost_per_day"
    message = str(info.value)
    assert "image" in message and "gateway.model" in message and "0.20" in message
    assert load_config(write(tmp_path, "budget: {max_cost_per_day: 0.20}\n"), {})
    assert load_config(write(tmp_path, "budget: {max_cost_per_day: 1.0}\n"), {})  # frames: 1.20
    text = "gateway: {model: seedance-2-0-fast}\nbudget: {max_cost_per_day: 1.19}\n"
    with pytest.raises(ConfigError) as info:  # 5 s × 0.24 = 1.20 for every image drop
        load_config(write(tmp_path, text), {})
    assert "5 s at 0.24 per second" in str(info.value) and "1.20" in str(info.value)


def test_config_prices_add_to_the_defaults_and_ints_are_money(tmp_path: Path) -> None:
    """budget.prices adds models to the built-in table; whole numbers are amounts too."""
    config = load_config(
        write(tmp_path, "budget: {max_cost_per_day: 5, prices: {mine: 1}}\n"),
        {"SEEDANCE_WATCH_BUDGET__DEFAULT_PRICE": "0.3"},
    )
    p = BudgetPrices.from_config(config.budget)
    assert reserves(p, "mine") == 100 and reserves(p, PRO_FAST) == 20 and reserves(p, "x") == 30
    assert p.max_cost_per_day == 500


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("budget: {max_cost_per_day: .inf}\n", "budget.max_cost_per_day"),
        ("budget: {max_cost_per_day: -1}\n", "budget.max_cost_per_day"),
        ("budget: {max_submits_per_day: 0}\n", "budget.max_submits_per_day"),
        ("budget: {timezone: Mars/Olympus}\n", "budget.timezone"),
        ("budget: {prices: {x: .nan}}\n", "budget.prices"),
    ],
)
def test_config_refuses_budget_nonsense(tmp_path: Path, text: str, key: str) -> None:
    """Infinite, negative or NaN money, a zero submit cap and unknown zones name their key."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), {})
    assert info.value.key == key


# --- the gate: per-job amounts, the last slot, settlements ---------------------------------------

#: A per-second model for the engine tests: 0.24/s, 1.20 for 5 s at 720p.
PER_SECOND = {"prices": {"m": {"per_second": 0.24}}}
FIVE = {"resolution": "720p", "duration": 5}


def uploaded(job_id: str, *, model: str = "m", options: Mapping[str, Any] = FIVE) -> Job:
    """A job ready to submit, with its effective options."""
    return Job(
        job_id=job_id,
        state=State.UPLOADED,
        source=f"{job_id}.jpg",
        sidecar=f"{job_id}.yaml",
        created_at=1.0,
        updated_at=1.0,
        model=model,
        prompt="p",
        text="p",
        options=dict(options),
        uploads=(("image", f"k/{job_id}"),),
    )


class HeldProvider(FakeProvider):
    """Each submit waits until the test lets it answer: they are all in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()

    async def create_task(
        self,
        request: GenerationRequest,
        media: Media,
        *,
        webhook_url: str | None = None,
    ) -> TaskRef:
        ref = await super().create_task(request, media, webhook_url=webhook_url)
        await self.answer.wait()
        return ref


def test_the_gate_counts_each_let_through_submit_at_its_own_amount(tmp_path: Path) -> None:
    """Two per-second submits let through before either intent is written take the
    day's 2.40: a third (1.20) is held though no intent is recorded yet; one that ends
    without an intent gives its slot back."""
    engine, store, _, _ = make_engine(tmp_path, budget={**PER_SECOND, "max_cost_per_day": 2.40})
    jobs = [uploaded(f"j{i}") for i in range(3)]
    for j in jobs:
        store.put(j)
    gate = engine.budget
    assert gate.wait(jobs[0]) == 0 and gate.wait(jobs[1]) == 0
    assert gate.wait(jobs[2]) > 0
    assert gate.hold is not None and (gate.hold.spent, gate.hold.price) == (240, 120)
    gate.release("j1")
    assert gate.wait(jobs[2]) == 0 and gate.today()["spent"] == 2.4


def test_what_is_left_lets_a_cheaper_job_through_and_holds_a_dearer_one(tmp_path: Path) -> None:
    """With 0.50 left of 1.50, a 480p job (0.10/s × 5 = 0.50) reaches the cap exactly
    and goes; a 720p one (1.00) waits: each job is checked at what it reserves."""
    rates = {"m": {"per_second": {"480p": 0.10, "720p": 0.20, "1080p": 0.50}}}
    engine, store, _, _ = make_engine(tmp_path, budget={"prices": rates, "max_cost_per_day": 1.50})
    spent = uploaded("j0")
    store.put(spent)
    engine.put(spent, SubmitIntent(cost=engine.budget.prices.reserve("m", FIVE).to_dict()))
    assert engine.budget.today()["spent"] == 1.0
    dear, cheap = uploaded("dear"), uploaded("cheap", options={"resolution": "480p"})
    assert engine.budget.wait(dear) > 0
    assert engine.budget.wait(cheap) == 0
    assert engine.budget.today()["spent"] == 1.5


@pytest.mark.anyio
async def test_the_last_slot_under_a_per_second_cap_is_never_shared(tmp_path: Path) -> None:
    """Three per-second drops (1.20 each) under a cap of 2.40, every submit held in
    flight: two reach the gateway, the third never does and stays uploaded, and the
    recorded reservations are what the day counts."""
    provider = HeldProvider()
    engine, store, _, _ = make_engine(
        tmp_path, budget={**PER_SECOND, "max_cost_per_day": 2.40}, provider=provider
    )
    for i in range(3):
        store.put(uploaded(f"j{i}"))
    try:
        await engine.recover()  # the three uploaded jobs line up for the submitter
        engine.start_workers()
        await until(lambda: engine.budget.hold is not None and len(provider.created) == 2)
        assert store.get("j2").state is State.UPLOADED  # type: ignore[union-attr]
        assert {store.get(f"j{i}").state for i in range(2)} == {State.SUBMITTING}  # type: ignore[union-attr]
        provider.answer.set()
        await until(lambda: store.get("j1").state is State.SUBMITTED)  # type: ignore[union-attr]
        await until(lambda: store.get("j0").state is State.SUBMITTED)  # type: ignore[union-attr]
        assert len(provider.created) == 2
        assert store.get("j2").state is State.UPLOADED  # type: ignore[union-attr]
        for i in range(2):
            assert store.get(f"j{i}").cost == {  # type: ignore[union-attr]
                "cents": 120,
                "per": "second",
                "rate": "0.24",
                "seconds": 5,
                "settled": True,
            }
        assert engine.budget.today()["spent"] == 2.4 and engine.budget.today()["submits"] == 2
    finally:
        await engine.shutdown(1.0)


@pytest.fixture(scope="module")
def clip_6_2_seconds() -> bytes:
    """A real H.264 mp4 asked for 6.2 s (its header says 6.25 s)."""
    picture = io.BytesIO()
    Image.new("RGB", (64, 48), "navy").save(picture, "PNG")
    return make_video(picture.getvalue(), seconds=6.2)


def downloaded(tmp_path: Path, video: bytes, *, options: Mapping[str, Any]) -> tuple[Any, Any]:
    """An engine with one 2.0 Fast job whose task succeeded (its intent counted), and
    a downloader that serves ``video``."""
    downloader = VideoDownloader(
        transport=httpx.MockTransport(lambda _request: httpx.Response(200, content=video))
    )
    engine, store, _, _ = make_engine(tmp_path, downloader=downloader)
    for name in ("clip.jpg", "clip.yaml"):
        (tmp_path / "inbox" / name).write_bytes(b"x")
    job = uploaded("clip", model="seedance-2-0-fast", options=options)
    store.put(job)
    cost = engine.budget.prices.reserve(job.model, job.options)
    job = engine.put(job, SubmitIntent(cost=cost.to_dict()))
    job = engine.put(job, Submitted(task_id="t-1"))
    engine.put(job, TaskSucceeded(video_url="https://videos.example/clip.mp4"))
    return engine, store


@pytest.mark.anyio
async def test_auto_reserves_15_seconds_and_settles_at_the_mp4_s_length(
    tmp_path: Path, clip_6_2_seconds: bytes
) -> None:
    """duration: auto reserves 15 s (3.60) at the intent; the downloaded mp4's header
    says 6.25 s, so the job settles at 7 s (1.68) in its Placing record, before the
    output JSON shows it, and the day's spend drops by the difference."""
    engine, store = downloaded(tmp_path, clip_6_2_seconds, options={"duration": "auto"})
    assert engine.budget.today()["spent"] == 3.6
    assert store.get("clip").cost["seconds"] == 15 and not store.get("clip").cost["settled"]
    await engine.step(Stage.DOWNLOAD, "clip")
    job = store.get("clip")
    assert job.state is State.DONE
    settled = {"cents": 168, "per": "second", "rate": "0.24", "seconds": 7, "settled": True}
    assert job.cost == settled
    placing = next(j for j in store.puts if j.state is State.PLACING)
    assert placing.cost == settled  # durable with the plan, before any output file
    meta = json.loads((tmp_path / "outbox" / "clip.json").read_text())
    assert meta["cost"] == {"amount": 1.68, "currency": "USD", "per": "second", "seconds": 7}
    assert engine.budget.today()["spent"] == 1.68 and engine.budget.today()["submits"] == 1
    rebuilt = BudgetTally.from_jobs(engine.budget.prices, store.jobs().values())
    assert rebuilt.spent(engine.clock()) == (168, 1)  # a restart agrees


@pytest.mark.anyio
async def test_a_set_duration_is_never_settled_and_an_unreadable_length_keeps_the_reservation(
    tmp_path: Path, clip_6_2_seconds: bytes
) -> None:
    """A set duration costs what was asked (5 s: 1.20) whatever the video's length; an
    auto job whose video has no readable length keeps its 15 s reservation."""
    engine, store = downloaded(tmp_path, clip_6_2_seconds, options=FIVE)
    await engine.step(Stage.DOWNLOAD, "clip")
    assert store.get("clip").cost["cents"] == 120 and engine.budget.today()["spent"] == 1.2
    junk = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 2048
    other = tmp_path / "other"
    other.mkdir()
    engine, store = downloaded(other, junk, options={"duration": "auto"})
    with capture_logs() as logs:
        await engine.step(Stage.DOWNLOAD, "clip")
    assert store.get("clip").state is State.DONE
    assert store.get("clip").cost == {
        "cents": 360,
        "per": "second",
        "rate": "0.24",
        "seconds": 15,
        "settled": False,
    }
    assert engine.budget.today()["spent"] == 3.6
    assert any(e["event"] == "budget.length_unknown" for e in logs)
    meta = json.loads((other / "outbox" / "clip.json").read_text())
    assert meta["cost"]["seconds"] == 15 and meta["cost"]["amount"] == 3.6
