"""The daily budget: cents, days in a time zone, the tally and its holds (SPEC §13)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from seedance_watch.core.jobs import Job, State
from seedance_watch.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

LITE = "seedance-1-0-lite-i2v-250428"
PRO = "seedance-1-0-pro-250528"
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
    lite: float = 0.10,
) -> BudgetPrices:
    return BudgetPrices.from_config(
        BudgetConfig(
            max_cost_per_day=cap,
            max_submits_per_day=submits,
            timezone=timezone,
            prices={LITE: lite},
        )
    )


def job(
    job_id: str, *, state: State = State.DONE, model: str | None = LITE, **fields: object
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
        assert tally.check(now + i, LITE) is None
        tally.intent(now + i, LITE)
    hold = tally.check(now + 3, LITE)
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
    tally.intent(before - 5, LITE)
    tally.intent(before, LITE)
    hold = tally.check(before + 0.5, LITE)
    assert hold is not None
    midnight = local("Europe/Paris", 2026, 10, 26)
    assert hold.lifts_at == midnight
    assert hold.day == dt.date(2026, 10, 25)
    assert "2026-10-26 00:00 Europe/Paris" in hold.message
    assert tally.check(midnight, LITE) is None
    assert tally.spent(midnight) == (0, 0)
    assert tally.spent(midnight - 0.001) == (20, 2)


def test_days_are_local_not_utc() -> None:
    """At 23:30 in Paris on a UTC+1 day it is still the same day, though UTC says 22:30."""
    tally = BudgetTally(prices(submits=1, timezone="Europe/Paris"))
    late = local("Europe/Paris", 2026, 12, 1, 23, 30)
    early_next = local("Europe/Paris", 2026, 12, 2, 0, 30)  # still Dec 1 in UTC
    tally.intent(late, LITE)
    assert tally.check(late + 60, LITE) is not None
    assert tally.check(early_next, LITE) is None


# --- caps ----------------------------------------------------------------------------------


def test_submit_cap_reached_exactly_then_held() -> None:
    """max_submits_per_day: 2 lets two submits through and holds the third."""
    tally = BudgetTally(prices(submits=2))
    now = local("UTC", 2026, 12, 1, 9)
    tally.intent(now, LITE)
    assert tally.check(now, LITE) is None
    tally.intent(now, LITE)
    hold = tally.check(now, LITE)
    assert hold is not None
    assert (hold.cap, hold.spent, hold.limit) == ("max_submits_per_day", 2, 2)
    assert hold.lifts_at == local("UTC", 2026, 12, 2)
    assert "max_submits_per_day 2" in hold.message


def test_the_next_submit_s_own_price_decides() -> None:
    """With 0.10 left, a 0.10 model goes and a 0.62 one waits."""
    tally = BudgetTally(prices(cap=1.0))
    now = local("UTC", 2026, 12, 1, 9)
    for _ in range(9):
        tally.intent(now, LITE)
    assert tally.check(now, LITE) is None
    hold = tally.check(now, PRO)
    assert hold is not None and hold.price == 62 and hold.spent == 90
    assert "0.90 USD" in hold.why and "1.00" in hold.why
    assert hold.message.startswith(hold.why)
    assert "Submits resume at 2026-12-02 00:00 UTC" in hold.message


def test_no_caps_never_hold() -> None:
    """Without caps nothing is ever held, and today() says so with nulls."""
    tally = BudgetTally(prices())
    now = local("UTC", 2026, 12, 1)
    for _ in range(1000):
        tally.intent(now, PRO)
    assert tally.check(now, PRO) is None
    today = tally.today(now)
    assert today["cap"] is None and today["remaining"] is None and today["submits"] == 1000
    assert today["spent"] == 620.0


def test_price_falls_back_to_default_price() -> None:
    """An unknown model (or none) costs budget.default_price."""
    p = BudgetPrices.from_config(BudgetConfig(default_price=0.5, max_cost_per_day=1.0))
    assert p.price("someone-elses-model") == 50
    assert p.price(None) == 50
    assert p.price(LITE) == to_cents(BudgetConfig().prices[LITE])
    assert not p.exceeds_cap(PRO)
    assert BudgetPrices.from_config(BudgetConfig(max_cost_per_day=0.5)).exceeds_cap(PRO)


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
    tally.intent(at, LITE)
    tally.intent(at, LITE)
    assert tally.check(at + 120, LITE) is None  # a new day
    assert tally.check(at, LITE) is not None
    assert tally.refused(at, LITE)
    assert tally.check(at, LITE) is None
    assert tally.spent(at) == (10, 1)
    assert not tally.refused(at + 86400, LITE)  # nothing counted that day: no change
    assert tally.spent(at + 86400) == (0, 0)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=1_790_000_000, max_value=1_790_000_000 + 5 * 86400),
            st.sampled_from([LITE, PRO, None, "other"]),
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
        live.intent(at, model)
    for at, model, refused in submits:
        if refused:
            live.refused(at, model)
    kept = [
        job(f"j{i}", model=model, intent_at=at)
        for i, (at, model, refused) in enumerate(submits)
        if not refused
    ]
    rebuilt = BudgetTally.from_jobs(p, kept)
    for at, model, _ in submits:
        assert live.spent(at) == rebuilt.spent(at)
        assert live.check(at, model) == rebuilt.check(at, model)
        cents = sum(
            p.price(k.model) for k in kept if day_of(k.intent_at or 0, p.zone) == day_of(at, p.zone)
        )
        assert live.spent(at)[0] == cents


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
            "models": {LITE: {"submits": 1, "cost": 0.1}},
        },
        {
            "date": "2026-12-01",
            "submits": 2,
            "done": 1,
            "failed": 1,
            "cost": 0.72,
            "models": {LITE: {"submits": 1, "cost": 0.1}, PRO: {"submits": 1, "cost": 0.62}},
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


def test_config_cap_equal_to_one_price_is_allowed(tmp_path: Path) -> None:
    """A cap of exactly one generation's price is valid; a cent less is a config error."""
    ok = load_config(
        write(tmp_path, f"budget: {{max_cost_per_day: 0.18, prices: {{{LITE}: 0.18}}}}\n"), {}
    )
    assert ok.budget.max_cost_per_day == 0.18
    with pytest.raises(ConfigError) as info:
        load_config(
            write(tmp_path, f"budget: {{max_cost_per_day: 0.17, prices: {{{LITE}: 0.18}}}}\n"), {}
        )
    assert info.value.key == "budget.max_cost_per_day"


def test_config_prices_add_to_the_defaults_and_ints_are_money(tmp_path: Path) -> None:
    """budget.prices adds models to the built-in table; whole numbers are amounts too."""
    config = load_config(
        write(tmp_path, "budget: {max_cost_per_day: 5, prices: {mine: 1}}\n"),
        {"SEEDANCE_WATCH_BUDGET__DEFAULT_PRICE": "0.3"},
    )
    p = BudgetPrices.from_config(config.budget)
    assert p.price("mine") == 100 and p.price(LITE) == 18 and p.price("x") == 30
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
