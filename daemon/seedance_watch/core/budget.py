"""The money rules: what a submit costs, per day, and whether the next one may go.

Everything the daemon decides about money lives here, pure: no I/O and no clock.
Times are Unix seconds passed in by the caller; days are calendar days in
``budget.timezone`` (midnight to midnight, whatever DST does to their length).

The rules:

* **A price** is per generation (one amount) or per second of video (one rate, or
  a rate per resolution).  The built-in prices are the model table's
  (:data:`~seedance_watch.core.models.MODELS`); ``budget.prices`` adds to and
  overrides them model by model; a model in neither costs ``budget.default_price``
  per generation.
* **A job's cost** is its price per generation, or its rate at its effective
  resolution times its seconds (the effective duration).  An option the job does
  not send costs what the gateway then uses (720p, 5 s).  The product is exact
  (``Decimal``) and rounded half up to the cent once, at the end: 0.0756 × 5 =
  0.378 is 38 cents, never 5 × 8.
* **Reserve, then settle.**  The cost is recorded on the job with its submit
  intent (:class:`JobCost` in ``Job.cost``).  With ``duration: auto`` the model
  picks the length, so the model's longest duration is reserved, and the job
  settles at the video's real length in whole seconds, rounded up, once it is
  downloaded.  The cap is checked against the reservation.
* **Counting.**  A submit counts from the moment its intent is recorded
  (``Job.intent_at``): it may be billed even when its outcome is unknown.  A submit
  the gateway provably refused has its ``intent_at`` cleared by the job record, so
  it no longer counts.  Records without a recorded cost (written before costs were
  kept) are priced at read time from the current prices.
* **Caps** are whole cents (a config's ``0.30`` is 30 cents, so ``3 × 0.10``
  reaches it exactly and the third submit goes); reaching a cap is allowed, going
  over it is not.

:class:`BudgetTally` is built once from the ledger's jobs (a restart does not reset
the day) and then kept current in O(1) per submit intent, refusal and settlement;
:func:`daily_costs` is the per-day, per-model report of ``seedance-watch costs``.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal, Protocol, TypedDict

from seedance_watch.core.jobs import Job, State
from seedance_watch.core.models import MODELS, Price
from seedance_watch.core.options import GATEWAY_DEFAULTS

__all__ = [
    "AUTO_RESERVE_SECONDS",
    "UNKNOWN_MODEL",
    "BudgetHold",
    "BudgetPrices",
    "BudgetTally",
    "DayCost",
    "JobCost",
    "ModelCost",
    "TodaySpend",
    "cents_of",
    "daily_costs",
    "day_of",
    "day_start",
    "from_cents",
    "money",
    "next_day_start",
    "price_of",
    "recorded_cents",
    "recorded_cost",
    "submit_time",
    "to_cents",
    "written_decimal",
]

_CENT = Decimal("0.01")

#: The seconds reserved for ``duration: auto`` with a model the table does not know:
#: the longest any model makes.
AUTO_RESERVE_SECONDS: int = max(
    d for d in (row.longest_duration() for row in MODELS.values()) if d is not None
)


def written_decimal(amount: float) -> Decimal:
    """``amount`` (a config float such as ``0.0756``) as the decimal the user wrote.

    The float goes through its shortest decimal form, so ``0.285`` is exactly
    ``Decimal("0.285")``, not the binary float's ``0.28499999...``.
    """
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"an amount of money must be finite and >= 0, not {amount!r}")
    return Decimal(repr(float(amount)))


def cents_of(amount: Decimal) -> int:
    """An exact amount in whole cents, half rounded up (``0.378`` → 38)."""
    return int((amount / _CENT).quantize(Decimal(1), ROUND_HALF_UP))


def to_cents(amount: float) -> int:
    """``amount`` (a config float such as ``0.285``) in whole cents, half rounded up.

    The float goes through its shortest decimal form (what the user wrote), so
    ``0.285`` is 29 cents, not the 28 that ``round(0.285 * 100)`` gives.
    """
    return cents_of(written_decimal(amount))


def from_cents(cents: int) -> float:
    """Cents as the float amount shown in JSON and tables (``75`` → ``0.75``)."""
    return cents / 100


def money(cents: int) -> str:
    """Cents as an amount for people: ``144`` → ``1.44``."""
    return f"{cents // 100}.{cents % 100:02d}"


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


# --- what one job costs ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobCost:
    """What one job's submit costs: recorded on the job (``Job.cost``) with its intent.

    ``cents`` is the amount, rounded half up to the cent once from the exact product
    ``rate × seconds`` (per second) or ``rate`` (per generation).  ``rate`` is USD
    per ``per`` (exact).  ``seconds`` is what is charged (per second only).
    ``settled`` is False while a ``duration: auto`` reservation (the model's
    longest duration) waits for the video's real length.
    """

    cents: int
    per: Literal["generation", "second"]
    rate: Decimal
    seconds: int | None = None
    settled: bool = True

    @classmethod
    def of(
        cls,
        per: Literal["generation", "second"],
        rate: Decimal,
        seconds: int | None = None,
        *,
        settled: bool = True,
    ) -> JobCost:
        """The cost at ``rate``: per generation, or per second for ``seconds``."""
        if per == "second":
            if seconds is None:
                raise ValueError("a cost per second needs its seconds")
            return cls(cents_of(rate * seconds), per, rate, seconds, settled)
        return cls(cents_of(rate), per, rate, None, settled)

    def settle(self, length: float) -> JobCost:
        """The cost once the video is known to last ``length`` seconds.

        Charged in whole seconds, rounded up (6.2 s is 7 s).  Only a reservation
        (``settled`` False) changes; a settled cost stays what it is.
        """
        if self.settled or self.per != "second":
            return self
        if not math.isfinite(length) or length <= 0:
            raise ValueError(f"a video length must be finite and > 0, not {length!r}")
        return JobCost.of("second", self.rate, math.ceil(length))

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``Job.cost`` (the rate as a decimal string: exact)."""
        out: dict[str, Any] = {"cents": self.cents, "per": self.per, "rate": str(self.rate)}
        if self.seconds is not None:
            out["seconds"] = self.seconds
        out["settled"] = self.settled
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobCost:
        """Inverse of :meth:`to_dict`.  Raises ``KeyError``/``ValueError``/``TypeError``."""
        per = data["per"]
        if per not in ("generation", "second"):
            raise ValueError(f"unknown cost unit {per!r}")
        cents, seconds = data["cents"], data.get("seconds")
        if type(cents) is not int or cents < 0:
            raise ValueError(f"cents must be a whole number >= 0, not {cents!r}")
        if seconds is not None and type(seconds) is not int:
            raise ValueError(f"seconds must be a whole number, not {seconds!r}")
        try:
            rate = Decimal(str(data["rate"]))
        except InvalidOperation as exc:
            raise ValueError(f"rate {data['rate']!r} is not a number") from exc
        return cls(cents, per, rate, seconds, bool(data.get("settled", True)))

    def to_output(self, currency: str) -> dict[str, Any]:
        """The output JSON's ``cost``: ``{"amount", "currency", "per"[, "seconds"]}``."""
        out: dict[str, Any] = {
            "amount": from_cents(self.cents),
            "currency": currency,
            "per": self.per,
        }
        if self.seconds is not None:
            out["seconds"] = self.seconds
        return out


def recorded_cents(job: Job) -> int | None:
    """The cents recorded on ``job`` with its intent (None: none that reads back, so
    the job is priced from its model at read time: :meth:`BudgetPrices.cents`)."""
    cost = job.cost
    if cost is not None:
        cents = cost.get("cents")
        if type(cents) is int and cents >= 0:
            return cents
    return None


def recorded_cost(job: Job) -> JobCost | None:
    """The cost recorded on ``job`` (None: none, or one that does not read back)."""
    if job.cost is None:
        return None
    try:
        return JobCost.from_dict(job.cost)
    except (KeyError, ValueError, TypeError):
        return None


# --- prices and caps ---------------------------------------------------------------------


def _rate_at(price: Price, resolution: str) -> Decimal:
    """``price``'s rate at ``resolution``; a resolution it does not list costs its
    dearest listed rate (a model the table does not know: never under-counted)."""
    rate = price.rate(resolution)
    if rate is not None:
        return rate
    if price.by_resolution:
        return max(price.by_resolution.values())
    raise ValueError("a price without an amount")


@dataclass(frozen=True, slots=True)
class BudgetPrices:
    """The budget config, exact: prices by model, the default price, the caps in cents.

    Built with :meth:`from_config` from a ``BudgetConfig`` (duck-typed, so this
    module does not import the config layer).
    """

    prices: Mapping[str, Price]
    default_price: Decimal
    max_cost_per_day: int | None
    max_submits_per_day: int | None
    timezone: str = "UTC"
    currency: str = "USD"
    zone: dt.tzinfo = field(init=False, repr=False, compare=False)
    #: What :meth:`reserve` found, by (model, resolution, duration): start-up prices
    #: every record written before costs were kept.
    _reserved: dict[tuple[str | None, object, object], JobCost] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", zoneinfo.ZoneInfo(self.timezone))

    @classmethod
    def from_config(cls, budget: _BudgetSettings) -> BudgetPrices:
        """The model table's prices, overridden and extended by ``budget.prices``."""
        cap = budget.max_cost_per_day
        prices = {row.model: row.price for row in MODELS.values() if row.price is not None}
        prices.update({model: price_of(spec) for model, spec in budget.prices.items()})
        return cls(
            prices=prices,
            default_price=written_decimal(budget.default_price),
            max_cost_per_day=None if cap is None else to_cents(cap),
            max_submits_per_day=budget.max_submits_per_day,
            timezone=budget.timezone,
            currency=budget.currency,
        )

    def price(self, model: str | None) -> Price:
        """``model``'s price (unknown or missing: ``default_price`` per generation)."""
        found = None if model is None else self.prices.get(model)
        return found if found is not None else Price("generation", self.default_price)

    def reserve(self, model: str | None, options: Mapping[str, Any] | None) -> JobCost:
        """What a submit with ``model`` and the effective ``options`` reserves.

        Per second: the rate at the resolution times the duration, each the
        gateway's default when not sent; ``duration: auto`` reserves the model's
        longest duration, to be settled at the video's real length.
        """
        sent = options or {}
        resolution = sent.get("resolution") or GATEWAY_DEFAULTS["resolution"]
        duration = sent.get("duration") or GATEWAY_DEFAULTS["duration"]
        key = (model, resolution, duration)
        found = self._reserved.get(key)
        if found is None:
            found = self._reserved[key] = self._reserve(model, str(resolution), duration)
        return found

    def _reserve(self, model: str | None, resolution: str, duration: object) -> JobCost:
        price = self.price(model)
        rate = _rate_at(price, resolution)
        if price.per == "generation":
            return JobCost.of("generation", rate)
        if duration == "auto":
            row = MODELS.get(model) if model is not None else None
            longest = row.longest_duration() if row is not None else None
            return JobCost.of("second", rate, longest or AUTO_RESERVE_SECONDS, settled=False)
        if type(duration) is not int:
            raise ValueError(f"a duration is whole seconds or auto, not {duration!r}")
        return JobCost.of("second", rate, duration)

    def cost_of(self, job: Job) -> JobCost:
        """``job``'s recorded cost; for records without one, priced now."""
        recorded = recorded_cost(job)
        if recorded is not None:
            return recorded
        return self.reserve(job.model, job.options)

    def cents(self, job: Job) -> int:
        """What ``job`` counts for, in cents: :meth:`cost_of`'s amount, read straight
        from the record when it has one (start-up counts every job of the ledger)."""
        cents = recorded_cents(job)
        return cents if cents is not None else self.cost_of(job).cents


def price_of(spec: float | _PerSecondSettings) -> Price:
    """One ``budget.prices`` entry as an exact :class:`Price`: a number is per
    generation; ``per_second`` is one rate or a rate per resolution."""
    if isinstance(spec, int | float):
        return Price("generation", written_decimal(spec))
    rates = spec.per_second
    if isinstance(rates, Mapping):
        return Price("second", by_resolution={k: written_decimal(v) for k, v in rates.items()})
    return Price("second", written_decimal(rates))


class _PerSecondSettings(Protocol):
    """A per-second ``budget.prices`` entry (``config.PerSecondPrice`` has it)."""

    @property
    def per_second(self) -> float | Mapping[Any, float]: ...


class _BudgetSettings(Protocol):
    """What :meth:`BudgetPrices.from_config` reads (``config.BudgetConfig`` has it)."""

    @property
    def prices(self) -> Mapping[str, float | _PerSecondSettings]: ...
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
                f"Today's spend is {money(self.spent)} {self.currency} of the "
                f"budget.max_cost_per_day {money(self.limit)}; the next submit "
                f"({money(self.price)}) would go over it."
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


class BudgetTally:
    """Spend (cents) and submits per day, kept current as submits are recorded.

    Build it once with :meth:`from_jobs` (every job whose submit counts, on the day
    of its intent, at its recorded cost), then call :meth:`intent` when a submit
    intent is made durable, :meth:`refused` when the gateway provably refused it and
    :meth:`settled` when a reservation settles, each O(1).  :meth:`check` says
    whether the next submit may go.  Amounts are the jobs' own (:class:`JobCost`);
    the caps are those of the prices it was built with: rebuild it after a config
    reload.
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
                tally.intent(at, prices.cents(job))
        return tally

    @classmethod
    def from_days(
        cls, prices: BudgetPrices, days: Mapping[dt.date, tuple[int, int]]
    ) -> BudgetTally:
        """A tally of ``(cents, submits)`` per day in ``prices.timezone``, summed elsewhere
        (a database's ``GROUP BY`` day): what :meth:`from_jobs` would count."""
        tally = cls(prices)
        for day, (cents, submits) in days.items():
            tally._cents[day] = tally._cents.get(day, 0) + cents
            tally._submits[day] = tally._submits.get(day, 0) + submits
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

    def intent(self, at: float, cents: int) -> None:
        """A submit intent costing ``cents`` was recorded at ``at`` (its ``intent_at``)."""
        day = self._day_for(at)
        self._cents[day] = self._cents.get(day, 0) + cents
        self._submits[day] = self._submits.get(day, 0) + 1

    def refused(self, intent_at: float, cents: int) -> bool:
        """The submit whose intent (costing ``cents``) was recorded at ``intent_at`` was
        provably refused.

        Pass the ``intent_at`` and cost of the job record *before* the refusal
        cleared them.  Returns False (and changes nothing) when that day holds no
        such submit: a caller's bug, which must not take the day's tally below zero.
        """
        day = self._day_for(intent_at)
        left = self._cents.get(day, 0) - cents
        submits = self._submits.get(day, 0) - 1
        if submits < 0 or left < 0:
            return False
        self._cents[day], self._submits[day] = left, submits
        return True

    def settled(self, intent_at: float, reserved: int, settled: int) -> bool:
        """The submit of ``intent_at`` settled: its day's spend moves from the
        ``reserved`` cents to the ``settled`` ones (by the difference).

        Returns False (and changes nothing) when the day does not hold the
        reservation: a caller's bug, which must not take the day below zero.
        """
        day = self._day_for(intent_at)
        before = self._cents.get(day, 0)
        if before < reserved:
            return False
        self._cents[day] = before - reserved + settled
        return True

    def spent(self, now: float) -> tuple[int, int]:
        """``(cents, submits)`` counted on ``now``'s day."""
        day = self._day_for(now)
        return self._cents.get(day, 0), self._submits.get(day, 0)

    def check(self, now: float, cents: int) -> BudgetHold | None:
        """None when one more submit reserving ``cents`` at ``now`` stays within the caps.

        Reaching a cap exactly is allowed; going over it is not.  The cost cap is
        checked first: it is the one that costs money.
        """
        p = self.prices
        day = self._day_for(now)
        spent, submits = self._cents.get(day, 0), self._submits.get(day, 0)
        cap: Literal["max_cost_per_day", "max_submits_per_day"]
        if p.max_cost_per_day is not None and spent + cents > p.max_cost_per_day:
            cap, counted, limit = "max_cost_per_day", spent, p.max_cost_per_day
        elif p.max_submits_per_day is not None and submits + 1 > p.max_submits_per_day:
            cap, counted, limit = "max_submits_per_day", submits, p.max_submits_per_day
        else:
            return None
        return BudgetHold(
            cap=cap,
            spent=counted,
            limit=limit,
            price=cents,
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
        """The JSON of one entry of ``costs --json`` ``days`` (docs/design.md, "Money")."""
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
    its recorded cost (records without one: at its model's current price);
    ``done`` and ``failed`` are what became of that day's submits so far.
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
        price = prices.cents(job)
        entry.submits += 1
        entry.cost += price
        entry.done += int(job.state is State.DONE)
        entry.failed += int(job.state is State.FAILED)
        model = entry.models.setdefault(job.model or UNKNOWN_MODEL, ModelCost())
        model.submits += 1
        model.cost += price
    return [days[d] for d in sorted(days, reverse=True)]
