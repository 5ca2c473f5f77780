"""``seedance-watch costs``: spend and submits per day and model, from the ledger (docs/design.md,
"Money").

The store is read through a :class:`~seedance_watch.ledger.base.JobReader`, which
takes nothing from a running daemon (as ``status`` does), so this works while the
daemon runs.  Days are calendar days in ``budget.timezone``, newest first; a job
counts on the day its submit intent was recorded, at the cost recorded on it
(reserved with the intent, settled when a ``duration: auto`` video was
downloaded; records written before costs were kept: at their model's price in the
current config), and ``done``/``failed`` say what became of that day's submits.
Amounts are whole cents until they are printed.  On a shared store the report covers
every host's jobs (the reader's snapshot is the whole database), and each day also
says what each host submitted (``"hosts"``, by the host that owns the job now).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from seedance_watch.commands.terminal import printable
from seedance_watch.config import BudgetConfig
from seedance_watch.core.budget import (
    BudgetPrices,
    daily_costs,
    day_of,
    from_cents,
)
from seedance_watch.core.jobs import Job
from seedance_watch.ledger.base import JobReader

__all__ = ["DEFAULT_DAYS", "costs_report", "format_costs"]

#: How many days ``costs`` looks back by default (today included).
DEFAULT_DAYS = 30


def costs_report(
    reader: JobReader, budget: BudgetConfig, *, now: float, days: int = DEFAULT_DAYS
) -> dict[str, Any]:
    """``{"currency", "days": [...], "today": {"spent", "cap", "remaining"}}`` (docs/design.md,
    "Money").

    ``days`` bounds the report to the last ``days`` calendar days, today included;
    only days with submits are listed.  ``today`` is the store's budget tally
    (:meth:`~seedance_watch.ledger.base.JobReader.tally`): the spend the daily cap counts.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    prices = BudgetPrices.from_config(budget)
    jobs = reader.snapshot()
    try:
        since = day_of(now, prices.zone) - dt.timedelta(days=days - 1)
    except OverflowError:  # --days 99999999: every day there is
        since = dt.date.min
    today = reader.tally(prices).today(now)
    report_days = [day.to_dict() for day in daily_costs(prices, jobs, since=since)]
    if reader.hosts() is not None:
        _by_host(report_days, prices, jobs, reader.owners(), since)
    return {
        "currency": prices.currency,
        "days": report_days,
        "today": {
            "spent": today["spent"],
            "cap": today["cap"],
            "remaining": today["remaining"],
        },
    }


def _by_host(
    days: list[dict[str, Any]],
    prices: BudgetPrices,
    jobs: list[Job],
    owners: dict[str, str],
    since: dt.date,
) -> None:
    """Add ``"hosts": {HOST: {"submits", "done", "failed", "cost"}}`` to each day."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(owners.get(job.job_id) or "-", []).append(job)
    index = {day["date"]: day for day in days}
    for day in days:
        day["hosts"] = {}
    for host in sorted(groups):
        for cost in daily_costs(prices, groups[host], since=since):
            entry = cost.to_dict()
            index[entry["date"]]["hosts"][host] = {
                key: entry[key] for key in ("submits", "done", "failed", "cost")
            }


def _amount(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_costs(report: dict[str, Any]) -> str:
    """The report as a table for a person: one line per day, then one per model."""
    currency = report["currency"]
    today = report["today"]
    head = f"today: {_amount(today['spent'])} {currency} spent"
    if today["cap"] is not None:
        head += f" of {_amount(today['cap'])} ({_amount(today['remaining'])} left)"
    lines = [head]
    if not report["days"]:
        lines.append("no submits in this period")
        return "\n".join(printable(line) for line in lines)
    lines.append(f"{'date':<12}{'model':<32}{'submits':>8}{'done':>6}{'failed':>8}{'cost':>10}")
    total = 0
    for day in report["days"]:
        total += round(day["cost"] * 100)
        lines.append(
            f"{day['date']:<12}{'(all)':<32}{day['submits']:>8}{day['done']:>6}"
            f"{day['failed']:>8}{_amount(day['cost']):>10}"
        )
        for name, model in day["models"].items():
            lines.append(
                f"{'':<12}{name:<32}{model['submits']:>8}{'':>6}{'':>8}{_amount(model['cost']):>10}"
            )
        for name, host in day.get("hosts", {}).items():
            lines.append(
                f"{'':<12}{'on ' + name:<32}{host['submits']:>8}{host['done']:>6}"
                f"{host['failed']:>8}{_amount(host['cost']):>10}"
            )
    lines.append(f"{'total':<12}{'':<32}{'':>8}{'':>6}{'':>8}{_amount(from_cents(total)):>10}")
    lines.append(f"(amounts in {currency}: what each submit reserved or settled at)")
    return "\n".join(printable(line) for line in lines)
