"""Generation options: what a sidecar, a folder preset or ``defaults:`` may set.

One model of the options, shared by the sidecar and the config's ``defaults:``
section so both validate the same way.  The ranges here are the union of what
the models take, read from the model table
(:data:`~seedance_watch.core.models.OPTION_UNION`); whether the chosen model takes
a key (and that value) is the table's question too
(:meth:`~seedance_watch.core.models.ModelRow.option_refusal`).
The gateway silently replaces invalid values with its defaults, hence the
strictness.

How options travel depends on the model's family: Seedance 1.0 reads them as text
commands appended to the prompt (:meth:`GenerationOptions.commands`), Seedance 2 as
top-level keys of the body (:meth:`GenerationOptions.body_keys`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from seedance_watch.core.models import (
    OPTION_KEYS,
    OPTION_UNION,
    IntRange,
    ModelRow,
    Ratio,
    Resolution,
)

__all__ = ["COMMAND_ORDER", "GATEWAY_DEFAULTS", "GenerationOptions"]

#: The order in which Seedance 1.0 text commands are appended to the prompt.
COMMAND_ORDER = ("resolution", "ratio", "duration", "camerafixed", "seed", "watermark")

#: The order of the Seedance 2 body keys (as the gateway's documentation shows them).
BODY_ORDER = (
    "duration",
    "ratio",
    "resolution",
    "generate_audio",
    "watermark",
    "seed",
    "camerafixed",
)

#: What the gateway uses for an option that is not sent (what a task then costs).
GATEWAY_DEFAULTS: dict[str, Any] = {"resolution": "720p", "duration": 5}


def _int_range(key: str) -> IntRange:
    spec = OPTION_UNION[key]
    if not isinstance(spec, IntRange):
        raise TypeError(f"{key}: the model table gives no integer range")
    return spec


_DURATION = _int_range("duration")
_SEED = _int_range("seed")


class GenerationOptions(BaseModel):
    """Optional parameters; ``None`` means "not set here"."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    resolution: Resolution | None = None
    ratio: Ratio | None = None
    duration: (
        Annotated[int, Field(ge=_DURATION.low, le=_DURATION.high)] | Literal["auto"] | None
    ) = None
    camerafixed: bool | None = None
    seed: Annotated[int, Field(ge=_SEED.low, le=_SEED.high)] | None = None
    watermark: bool | None = None
    generate_audio: bool | None = None

    def over(self, defaults: GenerationOptions) -> GenerationOptions:
        """These options, with unset keys taken from ``defaults``."""
        merged = defaults.model_dump()
        merged.update(self.set_options())
        return GenerationOptions.model_validate(merged)

    def set_options(self) -> dict[str, Any]:
        """The keys that are set, in :data:`~seedance_watch.core.models.OPTION_KEYS` order."""
        return {k: getattr(self, k) for k in OPTION_KEYS if getattr(self, k) is not None}

    def refusals(self, row: ModelRow) -> list[tuple[str, str]]:
        """``(key, why)`` for each set option ``row``'s model does not take."""
        out = []
        for key, value in self.set_options().items():
            why = row.option_refusal(key, value)
            if why is not None:
                out.append((key, why))
        return out

    def fitted(self, row: ModelRow) -> GenerationOptions:
        """These options without the ones ``row``'s model does not take (config defaults
        are for every model: a key one model lacks is simply not sent to it)."""
        dropped = {key: None for key, _ in self.refusals(row)}
        return self.model_copy(update=dropped) if dropped else self

    def commands(self) -> str:
        """The Seedance 1.0 text commands, in the gateway's order; unset keys are omitted."""
        parts: list[str] = []
        for name in COMMAND_ORDER:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            parts.append(f"--{name} {value}")
        return " ".join(parts)

    def body_keys(self) -> dict[str, Any]:
        """The Seedance 2 top-level keys: the set options, in the documentation's order,
        ``duration: auto`` as -1."""
        keys = {k: getattr(self, k) for k in BODY_ORDER if getattr(self, k) is not None}
        if keys.get("duration") == "auto":
            keys["duration"] = -1
        return keys
