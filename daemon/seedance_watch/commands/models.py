"""``seedance-watch models``: the model table, for a person or as JSON.

What each model makes, which options it takes, what it costs by default and
whether it is still switched on -- the same table every check of the daemon reads
(:mod:`seedance_watch.core.models`).
"""

from __future__ import annotations

from typing import Any

from seedance_watch.commands.terminal import printable
from seedance_watch.core.models import (
    DEFAULT_MODELS,
    KINDS,
    MODELS,
    OPTION_KEYS,
    IntRange,
    ModelRow,
    ModelTable,
)

__all__ = ["format_models", "models_report"]


def models_report(table: ModelTable = MODELS) -> list[dict[str, Any]]:
    """``models --json``: one object per model, live ones first, in table order."""
    rows = sorted(table.values(), key=lambda row: row.retired)
    return [_entry(row) for row in rows]


def _entry(row: ModelRow) -> dict[str, Any]:
    full = row.to_json()
    return {
        "model": row.model,
        "family": row.family,
        "kinds": full["kinds"],
        "options": full["options"],
        "price": full["price"],
        "status": row.status,
        "retired_on": full["retired_on"],
        "replacement": row.replacement,
        "source": f"{row.source} (read {row.read_on.isoformat()})",
    }


def format_models(table: ModelTable = MODELS) -> str:
    """The table for a terminal: a line per model, its options under each live one."""
    defaults: dict[str, list[str]] = {}
    for kind in KINDS:
        defaults.setdefault(DEFAULT_MODELS[kind], []).append(kind)
    lines = [f"{'model':<30} {'family':<6} {'kinds':<31} {'price (USD)':<22} status"]
    for row in sorted(table.values(), key=lambda r: r.retired):
        if row.retired:
            status = f"retired {row.retired_on}, use {row.replacement}"
            lines.append(f"{row.model:<30} {row.family:<6} {'-':<31} {'-':<22} {status}")
            continue
        kinds = ", ".join(k for k in KINDS if k in row.kinds)
        price = "-" if row.price is None else row.price.describe()
        status = "live"
        if row.model in defaults:
            status += f" (default for {', '.join(defaults[row.model])})"
        lines.append(f"{row.model:<30} {row.family:<6} {kinds:<31} {price:<22} {status}")
        lines.append(f"{'':<4}options: {_options(row)}")
    lines.append("")
    lines.append(
        "Prices are the gateway's published rates (per generation, or per second of video); "
        "your account's dashboard is authoritative, and budget.prices overrides any row."
    )
    lines.append("Sources:")
    for row in table.values():
        lines.append(f"  {row.model}: {row.source} (read {row.read_on.isoformat()})")
    return "\n".join(printable(line) for line in lines)


def _options(row: ModelRow) -> str:
    parts = []
    for key in OPTION_KEYS:
        spec = row.options.get(key)
        if spec is None:
            continue
        if isinstance(spec, IntRange):
            shown = f"{spec.low}..{spec.high}" + (" or auto" if spec.auto else "")
        else:
            shown = "|".join(str(v).lower() for v in spec.values)
        parts.append(f"{key} {shown}")
    return ", ".join(parts)
