"""The daily budget: what submits cost, per day, and whether the next one may go (SPEC §13).

Pure: no I/O and no clock.  Times are Unix seconds passed in by the caller; days
are calendar days in ``budget.timezone`` (midnight to midnight, whatever DST does
to their length).  Money is integer cents from the moment it leaves the config, so
``3 × 0.10`` is exactly ``0.30`` and a cap of ``0.30`` admits the third submit.

A submit counts from the moment its intent is recorded (``Job.intent_at``): it may
be billed even when its outcome is unknown.  A submit the gateway provably refused
has its ``intent_at`` cleared by the job record, so it no longer counts.

:class:`BudgetTally` is built once from the ledger's jobs (a restart does not reset
the day) and then kept current in O(1) per submit intent and per refusal;
:func:`daily_costs` is the per-day, per-model report of ``seedance-watch costs``.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal, Protocol, TypedDict

from seedance_watch.core.jobs import Job, State

__all__ = [
    "UNKNOWN_MODEL",
    "BudgetHold",
    "BudgetPrices",
    "BudgetTally",
    "DayCost",
    "ModelCost",
    "TodaySpend",
    "daily_costs",
    "day_of",
    "day_start",
    "from_cents",
    "next_day_start",
    "submit_time",
    "to_cents",
]

_CENT = Decimal("0.01")


def to_cents(amount: float) -> int:
    """``amount`` (a config float such as ``0.285``) in whole cents, half rounded up.

    The float goes through its shortest decimal form (what the user wrote), so
    ``0.285`` is 29 cents, not the 28 that ``round(0.285 * 100)`` gives.
    """
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"an amount of money must be finite and >= 0, not {amount!r}")
    return int((Decimal(repr(float(amount))) / _CENT).quantize(Decimal(1), ROUND_HALF_UP))


def from_cents(cents: int) -> float:
    """Cents as the float amount shown in JSON and tables (``75`` → ``0.75``)."""
    return cents / 100


def day_of(ts: float, tz: dt.tzinfo) -> dt.date:
    """The calendar day in ``tz`` that the instant ``ts`` falls on.

    Whole seconds (floored): ``fromtimestamp`` rounds to the nearest microsecond, which
    would put 23:59:59.9999995 on the next day, before that day begins.
    """
    return dt.datetime.fromtimestamp(math.floor(ts), tz).date()


def day_start(day: dt.date, tz: dt.tzinfo) -> float:
    """The instant ``day`` begins in ``tz``: its local midnight.

    When DST (or a zone change) skips that midnight, the day begins when the clocks
    jump; when midnight happens twice, at the first one.  (``fold=0`` reads a
    skipped local time with the offset from before the jump: the instant of the
    jump itself.)
    """
    return dt.datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()


def next_day_start(ts: float, tz: dt.tzinfo) -> float:
    """The instant the day after ``ts``'s day begins in ``tz``.

    A day a zone dropped altogether (Pacific/Apia skipped 2011-12-30) is passed
    over: the next day that exists begins then.
    """
    return day_start(day_of(ts, tz) + dt.timedelta(days=1), tz)


def submit_time(job: Job) -> float | None:
    """When ``job``'s submit started counting against the budget, or None if it never did.

    The recorded intent; for records written before intents were kept (schema v1),
    the accepted submit.  A duplicate copied an earlier job's video: never billed.
    """
    if job.intent_at is not None:
        return job.intent_at
    if job.submitted_at is not None and job.duplicate_of is None:
        return job.submitted_at
    return None


# --- prices and caps ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetPrices:
    """The budget config in cents: prices by model, the default price and the caps.

    Built with :meth:`from_config` from a ``BudgetConfig`` (duck-typed, so this
    module does not import the config layer).
    """

    prices: dict[str, int]
    default_price: int
    max_cost_per_day: int | None
    max_submits_per_day: int | None
    timezone: str = "UTC"
    currency: str = "USD"
    zone: dt.tzinfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", zoneinfo.ZoneInfo(self.timezone))

    @classmethod
    def from_config(cls, budget: _BudgetSettings) -> BudgetPrices:
        cap = budget.max_cost_per_day
        return cls(
            prices={model: to_cents(price) for model, price in budget.prices.items()},
            default_price=to_cents(budget.default_price),
            max_cost_per_day=None if cap is None else to_cents(cap),
            max_submits_per_day=budget.max_submits_per_day,
            timezone=budget.timezone,
            currency=budget.currency,
        )

    def price(self, model: str | None) -> int:
        """One generation with ``model``, in cents (unknown or missing: the default price)."""
        if model is None:
            return self.default_price
        return self.prices.get(model, self.default_price)

    def exceeds_cap(self, model: str | None) -> bool:
        """True when one generation with ``model`` costs more than a whole day's cap.

        Such a job could never be submitted; the config check refuses this for the
        configured models, but a sidecar may name another one.
        """
        cap = self.max_cost_per_day
        return cap is not None and self.price(model) > cap


class _BudgetSettings(Protocol):
    """What :meth:`BudgetPrices.from_config` reads (``config.BudgetConfig`` has it)."""

    @property
    def prices(self) -> Mapping[str, float]: ...
    @property
    def default_price(self) -> float: ...
    @property
    def max_cost_per_day(self) -> float | None: ...
    @property
    def max_submits_per_day(self) -> int | None: ...
    @property
    def timezone(self) -> str: ...
    @property
    def currency(self) -> str: ...


# --- the live tally ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetHold:
    """The next submit would go over a daily cap: nothing is submitted until ``lifts_at``.

    ``cap`` names the config key; ``spent`` and ``limit`` are cents for
    ``max_cost_per_day`` and submits for ``max_submits_per_day``; ``price`` is what
    the next submit would have cost, in cents.
    """

    cap: Literal["max_cost_per_day", "max_submits_per_day"]
    spent: int
    limit: int
    price: int
    day: dt.date
    lifts_at: float
    currency: str
    timezone: str

    @property
    def why(self) -> str:
        """Which cap and where the day stands, for a person (without when it lifts)."""
        if self.cap == "max_cost_per_day":
            return (
                f"Today's spend is {_money(self.spent)} {self.currency} of the "
                f"budget.max_cost_per_day {_money(self.limit)}; the next submit "
                f"({_money(self.price)}) would go over it."
            )
        return f"{self.spent} submits today reached budget.max_submits_per_day {self.limit}."

    @property
    def message(self) -> str:
        """:attr:`why`, and when submits resume (local time): for logs and ``status``."""
        lifts = dt.datetime.fromtimestamp(self.lifts_at, zoneinfo.ZoneInfo(self.timezone))
        return f"{self.why} Submits resume at {lifts:%Y-%m-%d %H:%M} {self.timezone}."


class TodaySpend(TypedDict):
    """Today's standing for ``status``, ``/metrics`` and the page (amounts as floats)."""

    spent: float
    cap: float | None
    remaining: float | None
    currency: str
    submits: int
    max_submits: int | None


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


class BudgetTally:
    """Spend and submits per day, kept current as submit intents are recorded and refused.

    Build it once with :meth:`from_jobs` (every job whose submit counts, on the day
    of its intent, at its model's price), then call :meth:`intent` when a submit
    intent is made durable and :meth:`refused` when the gateway provably refused
    it, each O(1).  :meth:`check` says whether the next submit may go.  Prices are
    those of the config it was built with: rebuild it after a config reload.
    """

    __slots__ = ("_cents", "_day", "_day_end", "_day_start", "_submits", "prices")

    def __init__(self, prices: BudgetPrices) -> None:
        self.prices = prices
        self._cents: dict[dt.date, int] = {}
        self._submits: dict[dt.date, int] = {}
        # The day of the last lookup and its bounds: most calls fall in it.
        self._day: dt.date | None = None
        self._day_start = math.inf
        self._day_end = -math.inf

    @classmethod
    def from_jobs(cls, prices: BudgetPrices, jobs: Iterable[Job]) -> BudgetTally:
        tally = cls(prices)
        for job in jobs:
            at = submit_time(job)
            if at is not None:
                tally.intent(at, job.model)
        return tally

    def _day_for(self, ts: float) -> dt.date:
        if self._day is not None and self._day_start <= ts < self._day_end:
            return self._day
        zone = self.prices.zone
        day = day_of(ts, zone)
        self._day, self._day_start, self._day_end = (
            day,
            day_start(day, zone),
            next_day_start(ts, zone),
        )
        return day

    def intent(self, at: float, model: str | None) -> None:
        """A submit intent was recorded at ``at`` (the job's ``intent_at``) for ``model``."""
        day = self._day_for(at)
        self._cents[day] = self._cents.get(day, 0) + self.prices.price(model)
        self._submits[day] = self._submits.get(day, 0) + 1

    def refused(self, intent_at: float, model: str | None) -> bool:
        """The submit whose intent was recorded at ``intent_at`` was provably refused.

        Pass the ``intent_at`` of the job record *before* the refusal cleared it.
        Returns False (and changes nothing) when that day holds no such submit: a
        caller's bug, which must not take the day's tally below zero.
        """
        day = self._day_for(intent_at)
        cents = self._cents.get(day, 0) - self.prices.price(model)
        submits = self._submits.get(day, 0) - 1
        if submits < 0 or cents < 0:
            return False
        self._cents[day], self._submits[day] = cents, submits
        return True

    def spent(self, now: float) -> tuple[int, int]:
        """``(cents, submits)`` counted on ``now``'s day."""
        day = self._day_for(now)
        return self._cents.get(day, 0), self._submits.get(day, 0)

    def check(self, now: float, model: str | None) -> BudgetHold | None:
        """None when one more submit with ``model`` at ``now`` stays within the caps.

        Reaching a cap exactly is allowed; going over it is not.  The cost cap is
        checked first: it is the one that costs money.
        """
        p = self.prices
        day = self._day_for(now)
        cents, submits = self._cents.get(day, 0), self._submits.get(day, 0)
        price = p.price(model)
        cap: Literal["max_cost_per_day", "max_submits_per_day"]
        if p.max_cost_per_day is not None and cents + price > p.max_cost_per_day:
            cap, spent, limit = "max_cost_per_day", cents, p.max_cost_per_day
        elif p.max_submits_per_day is not None and submits + 1 > p.max_submits_per_day:
            cap, spent, limit = "max_submits_per_day", submits, p.max_submits_per_day
        else:
            return None
        return BudgetHold(
            cap=cap,
            spent=spent,
            limit=limit,
            price=price,
            day=day,
            lifts_at=self._day_end,
            currency=p.currency,
            timezone=p.timezone,
        )

    def today(self, now: float) -> TodaySpend:
        """Today's spend against the caps (``cap``/``remaining`` None without a cost cap)."""
        cents, submits = self.spent(now)
        cap = self.prices.max_cost_per_day
        return {
            "spent": from_cents(cents),
            "cap": None if cap is None else from_cents(cap),
            "remaining": None if cap is None else from_cents(max(0, cap - cents)),
            "currency": self.prices.currency,
            "submits": submits,
            "max_submits": self.prices.max_submits_per_day,
        }


# --- the report of `costs` ---------------------------------------------------------------


@dataclass(slots=True)
class ModelCost:
    """One model's submits and their cost (cents) on one day."""

    submits: int = 0
    cost: int = 0


@dataclass(slots=True)
class DayCost:
    """One day's submits: how many, what became of them, what they cost (cents), by model."""

    date: dt.date
    submits: int = 0
    done: int = 0
    failed: int = 0
    cost: int = 0
    models: dict[str, ModelCost] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """The JSON of one entry of ``costs --json`` ``days`` (SPEC §13)."""
        return {
            "date": self.date.isoformat(),
            "submits": self.submits,
            "done": self.done,
            "failed": self.failed,
            "cost": from_cents(self.cost),
            "models": {
                name: {"submits": m.submits, "cost": from_cents(m.cost)}
                for name, m in sorted(self.models.items())
            },
        }


#: The model name shown for records that name none.
UNKNOWN_MODEL = "unknown"


def daily_costs(
    prices: BudgetPrices,
    jobs: Iterable[Job],
    *,
    since: dt.date | None = None,
) -> list[DayCost]:
    """Every day with submits (on or after ``since``), newest first.

    A job counts on the day its submit started counting (:func:`submit_time`) at
    its model's current price; ``done`` and ``failed`` are what became of that
    day's submits so far.
    """
    days: dict[dt.date, DayCost] = {}
    zone = prices.zone
    for job in jobs:
        at = submit_time(job)
        if at is None:
            continue
        day = day_of(at, zone)
        if since is not None and day < since:
            continue
        entry = days.get(day)
        if entry is None:
            entry = days[day] = DayCost(day)
        price = prices.price(job.model)
        entry.submits += 1
        entry.cost += price
        entry.done += int(job.state is State.DONE)
        entry.failed += int(job.state is State.FAILED)
        model = entry.models.setdefault(job.model or UNKNOWN_MODEL, ModelCost())
        model.submits += 1
        model.cost += price
    return [days[d] for d in sorted(days, reverse=True)]
