"""The Seedance models: which exist, what each takes and costs, and which are gone.

Everything the daemon knows about a model lives in this one table, as data: its
family (the request dialect), the kinds of drop it makes, the options it takes
and their ranges, its endpoint per kind at the gateway, its built-in price, and
whether it is still switched on (or was retired on a date, with a replacement).
The sidecar, the config, ``validate``, the budget, the provider, ``seedance-watch
models`` and the simulator all read it.

When a provider retires the next model, update its row (``retired_on`` and
``replacement``); when one ships, add a row.  No code has to change: every check
below works from the rows.  Each row names its source and the day it was read.

Rules that live here (docs/design.md, "Models"):

* a model is *retired* when its row says so: a drop or a config key naming it is
  refused before anything is uploaded, naming the replacement;
* a model makes a kind of drop only when its row lists that kind;
* a sidecar option the model does not take (the key, or that value) is refused,
  naming the key, the model and what it takes; an option from the config's
  ``defaults:`` that it does not take is left out for that drop.

Pure data and small functions: no I/O, no clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_TEXT_MODEL",
    "KINDS",
    "KIND_NAMES",
    "KNOWN_MODELS",
    "MODELS",
    "OPTION_KEYS",
    "OPTION_UNION",
    "RATIOS",
    "RESOLUTIONS",
    "Choice",
    "IntRange",
    "Kind",
    "ModelRow",
    "ModelTable",
    "OptionSpec",
    "Price",
    "Ratio",
    "Resolution",
    "kind_refusal",
    "models_for",
]

#: What a drop asks for: image to video, first and last frame, text to video, or
#: a video of what one to nine reference images show.
Kind = Literal["image", "frames", "text", "reference"]

#: Every kind, in the order they are shown to people.
KINDS: Final[tuple[Kind, ...]] = ("image", "frames", "text", "reference")

#: Each kind in the words of the documentation.
KIND_NAMES: Final[Mapping[Kind, str]] = MappingProxyType(
    {
        "image": "image to video",
        "frames": "first and last frame",
        "text": "text to video",
        "reference": "reference images",
    }
)

#: Every resolution and every ratio a model of the table may take (each row says
#: which of them it does).
Resolution = Literal["480p", "720p", "1080p"]
Ratio = Literal["16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"]
RESOLUTIONS: Final[tuple[Resolution, ...]] = get_args(Resolution)
RATIOS: Final[tuple[Ratio, ...]] = get_args(Ratio)
#: Every generation option a sidecar, a folder preset or ``defaults:`` may set, in
#: the order Seedance 1.0 text commands are appended to the prompt.
OPTION_KEYS: Final = (
    "resolution",
    "ratio",
    "duration",
    "camerafixed",
    "seed",
    "watermark",
    "generate_audio",
)


# --- options --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Choice:
    """An option taking one of a few values."""

    values: tuple[str | bool, ...]

    def allows(self, value: object) -> bool:
        # True == 1 in Python: a bool option must not take 1, nor a text option True.
        return any(type(value) is type(v) and value == v for v in self.values)

    def describe(self) -> str:
        shown = [_word(v) for v in self.values]
        return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"

    def to_json(self) -> list[str | bool]:
        return list(self.values)


@dataclass(frozen=True, slots=True)
class IntRange:
    """An integer option from ``low`` to ``high``; ``auto``: also the word ``auto``
    (the model picks; sent as -1)."""

    low: int
    high: int
    auto: bool = False

    def allows(self, value: object) -> bool:
        if self.auto and value == "auto":
            return True
        return type(value) is int and self.low <= value <= self.high

    def describe(self) -> str:
        text = f"an integer from {self.low} to {self.high}"
        return f"{text}, or auto" if self.auto else text

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"min": self.low, "max": self.high}
        if self.auto:
            out["auto"] = True
        return out


OptionSpec = Choice | IntRange

_BOOL = Choice((True, False))


def _word(value: str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


# --- prices -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Price:
    """What one task costs: ``per`` generation (``amount``), or per second of video,
    one ``amount`` at every resolution or ``by_resolution``.  USD, as published."""

    per: Literal["generation", "second"]
    amount: Decimal | None = None
    by_resolution: Mapping[str, Decimal] = field(default_factory=dict)

    def rate(self, resolution: str | None) -> Decimal | None:
        """The price per unit at ``resolution`` (None: not priced at that resolution)."""
        if self.by_resolution:
            return self.by_resolution.get(resolution or "720p")
        return self.amount

    def to_json(self) -> dict[str, Any]:
        if self.by_resolution:
            rates: Any = {k: float(v) for k, v in self.by_resolution.items()}
        else:
            rates = float(self.amount) if self.amount is not None else None
        return {"per_" + self.per: rates}

    def describe(self) -> str:
        if self.by_resolution:
            parts = ", ".join(f"{k} {v}" for k, v in self.by_resolution.items())
            return f"{parts} per {self.per}"
        return f"{self.amount} per {self.per}"


def per_generation(amount: str) -> Price:
    return Price("generation", Decimal(amount))


def per_second(amount: str) -> Price:
    return Price("second", Decimal(amount))


# --- the rows -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One model: what it is, what it takes, what it costs, where it is sent."""

    model: str
    #: The request dialect: ``1.0`` (text commands in the prompt) or ``2`` (options
    #: as keys, images with roles); retired families keep their name (``1.5``).
    family: str
    kinds: frozenset[Kind]
    options: Mapping[str, OptionSpec]
    #: The submit path under ``gateway.base_url``, per kind.
    endpoints: Mapping[Kind, str]
    price: Price | None
    source: str
    read_on: dt.date
    retired_on: dt.date | None = None
    replacement: str | None = None

    @property
    def retired(self) -> bool:
        return self.retired_on is not None

    @property
    def status(self) -> Literal["live", "retired"]:
        return "retired" if self.retired else "live"

    def takes(self, key: str, value: object) -> bool:
        """True when this model takes option ``key`` with ``value``."""
        spec = self.options.get(key)
        return spec is not None and spec.allows(value)

    def longest_duration(self) -> int | None:
        """The longest ``duration`` the model makes (what ``auto`` may cost)."""
        spec = self.options.get("duration")
        return spec.high if isinstance(spec, IntRange) else None

    def option_refusal(self, key: str, value: object) -> str | None:
        """Why this model does not take ``key: value`` (None when it does)."""
        spec = self.options.get(key)
        if spec is None:
            takes = ", ".join(k for k in OPTION_KEYS if k in self.options)
            return f"{self.model} does not take {key} (it takes {takes})"
        if spec.allows(value):
            return None
        shown = _word(value) if isinstance(value, str | bool) else repr(value)
        return f"{self.model} does not take {key}: {shown}; it takes {spec.describe()}"

    def retirement(self) -> str | None:
        """``MODEL was switched off on DATE; use REPLACEMENT`` for a retired model."""
        if self.retired_on is None:
            return None
        use = f"; use {self.replacement}" if self.replacement else ""
        return f"{self.model} was switched off on {self.retired_on.isoformat()}{use}"

    def to_json(self) -> dict[str, Any]:
        """One entry of ``seedance-watch models --json``."""
        return {
            "model": self.model,
            "family": self.family,
            "kinds": [k for k in KINDS if k in self.kinds],
            "options": {k: self.options[k].to_json() for k in OPTION_KEYS if k in self.options},
            "endpoints": {k: self.endpoints[k] for k in KINDS if k in self.endpoints},
            "price": None if self.price is None else self.price.to_json(),
            "status": self.status,
            "retired_on": None if self.retired_on is None else self.retired_on.isoformat(),
            "replacement": self.replacement,
            "source": self.source,
            "read_on": self.read_on.isoformat(),
        }


_SEEDANCE_1_OPTIONS: Final[Mapping[str, OptionSpec]] = MappingProxyType(
    {
        "resolution": Choice(RESOLUTIONS),
        "ratio": Choice(RATIOS),
        "duration": IntRange(2, 12),
        "camerafixed": _BOOL,
        "seed": IntRange(-1, 4294967295),
        "watermark": _BOOL,
    }
)


def _seedance_2_options(*resolutions: str) -> Mapping[str, OptionSpec]:
    return MappingProxyType(
        {
            "resolution": Choice(resolutions),
            "ratio": Choice(RATIOS),
            "duration": IntRange(4, 15, auto=True),
            "watermark": _BOOL,
            "generate_audio": _BOOL,
        }
    )


_SEEDANCE_1_ENDPOINTS: Final[Mapping[Kind, str]] = MappingProxyType(
    {
        "image": "/byteplus/v1/generateImage2VideoTask",
        "text": "/byteplus/v1/generateVideoTask",
    }
)


def _seedance_2_endpoints(prefix: str, suffix: str = "") -> Mapping[Kind, str]:
    """The Seedance 2 operations under ``prefix``: image and frames drops both go to
    ``first-last-frame-to-video`` (an image drop is a first frame alone)."""
    return MappingProxyType(
        {
            "image": f"{prefix}/first-last-frame-to-video{suffix}",
            "frames": f"{prefix}/first-last-frame-to-video{suffix}",
            "text": f"{prefix}/text-to-video{suffix}",
            "reference": f"{prefix}/reference-to-video{suffix}",
        }
    )


_ALL_KINDS: Final = frozenset(KINDS)
_D = dt.date

_BYTEPLUS_CAPABILITIES = "BytePlus ModelArk video generation API, model capabilities"
_PIXAZO_REFERENCE = "Pixazo model reference (2026-04-15) and Seedance skill file (2026-07)"
_PIXAZO_PAGES = "Pixazo model page (720p, sound included)"
_RETIREMENT = "BytePlus ModelArk deprecation notice"

#: Every model the daemon knows, live and retired.
_ROWS: Final[tuple[ModelRow, ...]] = (
    ModelRow(
        model="seedance-1-0-pro-fast-251015",
        family="1.0",
        kinds=frozenset({"image", "text"}),
        options=_SEEDANCE_1_OPTIONS,
        endpoints=_SEEDANCE_1_ENDPOINTS,
        price=per_generation("0.20"),
        source=f"{_BYTEPLUS_CAPABILITIES}; price: {_PIXAZO_REFERENCE}",
        read_on=_D(2026, 11, 20),
    ),
    ModelRow(
        model="seedance-1-0-pro-250528",
        family="1.0",
        kinds=frozenset({"image", "text"}),
        options=_SEEDANCE_1_OPTIONS,
        endpoints=_SEEDANCE_1_ENDPOINTS,
        price=per_generation("0.20"),
        source=f"{_BYTEPLUS_CAPABILITIES}; Pixazo serves image and text only; "
        f"price: {_PIXAZO_REFERENCE}",
        read_on=_D(2026, 11, 20),
    ),
    ModelRow(
        model="seedance-2-0",
        family="2",
        kinds=_ALL_KINDS,
        options=_seedance_2_options("480p", "720p"),
        endpoints=_seedance_2_endpoints("/seedance-2-0/v1"),
        price=per_second("0.29"),
        source=_PIXAZO_REFERENCE,
        read_on=_D(2026, 11, 20),
    ),
    ModelRow(
        model="seedance-2-0-fast",
        family="2",
        kinds=_ALL_KINDS,
        options=_seedance_2_options("480p", "720p"),
        endpoints=_seedance_2_endpoints("/seedance-2-0-fast/v1", "-fast"),
        price=per_second("0.24"),
        source=_PIXAZO_REFERENCE,
        read_on=_D(2026, 11, 20),
    ),
    ModelRow(
        model="seedance-2-0-mini",
        family="2",
        kinds=_ALL_KINDS,
        options=_seedance_2_options("480p", "720p"),
        endpoints=_seedance_2_endpoints("/seedance-2-0-mini"),
        price=per_second("0.0756"),
        source=f"{_PIXAZO_PAGES}, list price (promotions are lower); "
        "endpoints: Pixazo Seedance skill file (2026-07)",
        read_on=_D(2026, 9, 30),
    ),
    ModelRow(
        model="seedance-2-5",
        family="2",
        kinds=_ALL_KINDS,
        options=_seedance_2_options("480p", "720p", "1080p"),
        endpoints=_seedance_2_endpoints("/seedance-2-5/v1"),
        price=per_second("0.231"),
        source=f"{_PIXAZO_PAGES}; endpoints: Pixazo Seedance skill file (2026-07)",
        read_on=_D(2026, 9, 30),
    ),
    *(
        ModelRow(
            model=model,
            family="1.0",
            kinds=frozenset({"text"} if "t2v" in model else {"image", "frames"}),
            options=_SEEDANCE_1_OPTIONS,
            endpoints=MappingProxyType({}),
            price=None,
            source=f"{_RETIREMENT} (Seedance 1.0 Lite); Leonardo and Krea API changelogs",
            read_on=_D(2026, 11, 20),
            retired_on=_D(2026, 5, 13),
            replacement="seedance-1-0-pro-fast-251015",
        )
        for model in (
            "seedance-1-0-lite-i2v-250428",
            "seedance-1-0-lite-t2v-250428",
            "seedance-1-0-lite-i2v-250219",
            "seedance-1-0-lite-t2v-250219",
        )
    ),
    ModelRow(
        model="seedance-1-5-pro-251215",
        family="1.5",
        kinds=frozenset({"image", "frames", "text"}),
        options=MappingProxyType({}),
        endpoints=MappingProxyType({}),
        price=None,
        source=f"{_RETIREMENT} (Seedance 1.5 Pro)",
        read_on=_D(2026, 11, 20),
        retired_on=_D(2026, 11, 11),
        replacement="seedance-2-5",
    ),
)


class ModelTable(Mapping[str, ModelRow]):
    """The rows by model id, with the questions every caller asks of them."""

    def __init__(self, rows: tuple[ModelRow, ...]) -> None:
        self._rows = {row.model: row for row in rows}
        if len(self._rows) != len(rows):
            raise ValueError("a model appears twice in the table")
        for row in rows:
            if row.replacement is not None and row.replacement not in self._rows:
                raise ValueError(f"{row.model}: replacement {row.replacement} is not in the table")
            if not row.retired and set(row.endpoints) != set(row.kinds):
                raise ValueError(f"{row.model}: an endpoint per kind, no more, no less")
            for key, vocabulary in (("resolution", RESOLUTIONS), ("ratio", RATIOS)):
                spec = row.options.get(key)
                if isinstance(spec, Choice) and not set(spec.values) <= set(vocabulary):
                    raise ValueError(f"{row.model}: a {key} outside {', '.join(vocabulary)}")

    def __getitem__(self, model: str) -> ModelRow:
        return self._rows[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def live(self) -> list[ModelRow]:
        return [row for row in self._rows.values() if not row.retired]

    def models_for(self, kind: Kind) -> list[str]:
        """The live models that make ``kind`` drops, in table order."""
        return [row.model for row in self.live() if kind in row.kinds]

    def option_union(self) -> Mapping[str, OptionSpec]:
        """What at least one live model takes, per option key, in :data:`OPTION_KEYS` order.

        A :class:`Choice` of every value some row lists (first seen first, in table
        order), or the widest :class:`IntRange` (with ``auto`` when one row takes it).
        A key no live model takes is left out; a key that is a choice in one row and a
        range in another is an error in the table.
        """
        union: dict[str, OptionSpec] = {}
        for key in OPTION_KEYS:
            for row in self.live():
                spec, seen = row.options.get(key), union.get(key)
                if spec is None:
                    continue
                if seen is None:
                    union[key] = spec
                elif isinstance(seen, Choice) and isinstance(spec, Choice):
                    more = tuple(v for v in spec.values if not Choice(seen.values).allows(v))
                    union[key] = Choice(seen.values + more)
                elif isinstance(seen, IntRange) and isinstance(spec, IntRange):
                    union[key] = IntRange(
                        min(seen.low, spec.low), max(seen.high, spec.high), seen.auto or spec.auto
                    )
                else:
                    raise ValueError(f"{key}: a choice in one model and a range in another")
        return MappingProxyType(union)

    def kinds_of(self, model: str) -> str:
        """The kinds a known model takes, in words (``image to video, text to video``)."""
        return ", ".join(KIND_NAMES[k] for k in KINDS if k in self._rows[model].kinds)

    def refusal(self, model: str, kind: Kind) -> str | None:
        """Why ``model`` cannot make a ``kind`` drop: retired, or not that kind.

        None when it can, or when the model is unknown (whether to accept one is the
        caller's choice: ``gateway.strict_model``).
        """
        row = self._rows.get(model)
        if row is None:
            return None
        retired = row.retirement()
        if retired is not None:
            return retired
        if kind in row.kinds:
            return None
        return (
            f"{model} does not offer {KIND_NAMES[kind]} (it takes {self.kinds_of(model)}); "
            f"models that do: {', '.join(self.models_for(kind))}"
        )


#: Pixazo's Seedance models, as the gateway serves them today.
MODELS: Final = ModelTable(_ROWS)

#: Every model the daemon knows (live or retired); a sidecar may still name another.
KNOWN_MODELS: Final = frozenset(MODELS)

#: What any live model takes, per option: the ranges a sidecar's options and the
#: config's ``defaults:`` are checked against before the chosen model's own row.
OPTION_UNION: Final = MODELS.option_union()

#: The model of each kind of drop when neither the sidecar nor the config names one.
DEFAULT_MODELS: Final[Mapping[Kind, str]] = MappingProxyType(
    {
        "image": "seedance-1-0-pro-fast-251015",
        "text": "seedance-1-0-pro-fast-251015",
        "frames": "seedance-2-0-fast",
        "reference": "seedance-2-0-fast",
    }
)
DEFAULT_TEXT_MODEL: Final = DEFAULT_MODELS["text"]


def models_for(kind: Kind) -> list[str]:
    """The live models of :data:`MODELS` that make ``kind`` drops."""
    return MODELS.models_for(kind)


def kind_refusal(model: str, kind: Kind) -> str | None:
    """:meth:`ModelTable.refusal` on :data:`MODELS`."""
    return MODELS.refusal(model, kind)
