"""Generation options: the sidecar keys that become text commands in the prompt.

Shared by the sidecar (per drop) and the config's ``defaults:`` section, so both
validate the same way.  The gateway silently replaces invalid values with its
defaults, hence strict validation here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["COMMAND_ORDER", "GenerationOptions", "Ratio", "Resolution"]

Resolution = Literal["480p", "720p", "1080p"]
Ratio = Literal["16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"]

#: The order in which the text commands are appended to the prompt (SPEC §2).
COMMAND_ORDER = ("resolution", "ratio", "duration", "camerafixed", "seed", "watermark")


class GenerationOptions(BaseModel):
    """Optional parameters; ``None`` means "not set here"."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    resolution: Resolution | None = None
    ratio: Ratio | None = None
    duration: Annotated[int, Field(ge=2, le=12)] | None = None
    camerafixed: bool | None = None
    seed: Annotated[int, Field(ge=-1, le=4294967295)] | None = None
    watermark: bool | None = None

    def over(self, defaults: GenerationOptions) -> GenerationOptions:
        """These options, with unset keys taken from ``defaults``."""
        merged = defaults.model_dump()
        merged.update({k: v for k, v in self.model_dump().items() if v is not None})
        return GenerationOptions.model_validate(merged)

    def commands(self) -> str:
        """The text commands, in the gateway's order; unset keys are omitted."""
        parts: list[str] = []
        for name in COMMAND_ORDER:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            parts.append(f"--{name} {value}")
        return " ".join(parts)
