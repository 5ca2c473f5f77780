"""The daemon's configuration: frozen models, the loader, env overrides and the API key.

Validated once at start-up (docs/design.md, "Configuration").  ``load_config`` reads one YAML file
(with YAML 1.2 scalars, so ``ratio: 16:9`` stays a string), applies the
``SEEDANCE_WATCH_<SECTION>__<KEY>`` environment overrides and returns a frozen ``Config``.  Every
problem is a ``ConfigError`` whose message names the dotted key, the bad value, what is allowed and
where the value came from.  Nothing here exits, creates folders or logs: the caller decides what to
do with an error.

The API key is never part of the config; ``load_api_key`` finds it in the four
places docs/design.md, "Configuration" lists and wraps it in ``ApiKey``, which refuses to print it.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import types
import typing
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Self
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from seedance_watch.core.budget import BudgetPrices, money
from seedance_watch.core.models import (
    DEFAULT_MODELS,
    KIND_NAMES,
    MODELS,
    RESOLUTIONS,
    Choice,
    Kind,
    Resolution,
)
from seedance_watch.core.options import GenerationOptions
from seedance_watch.errors import ConfigError
from seedance_watch.files.yaml12 import load_yaml
from seedance_watch.providers.registry import DEFAULT_PROVIDER, provider_spec

__all__ = [
    "BUILTIN_DEFAULTS",
    "CONFIG_ENV",
    "ENV_PREFIX",
    "BudgetConfig",
    "ClusterConfig",
    "Config",
    "GatewayConfig",
    "HealthConfig",
    "HooksConfig",
    "LogConfig",
    "NotifyConfig",
    "PathsConfig",
    "PerSecondPrice",
    "StorageConfig",
    "WatchConfig",
    "load_config",
]

ENV_PREFIX = "SEEDANCE_WATCH_"
CONFIG_ENV = "SEEDANCE_WATCH_CONFIG"

PositiveFloat = Annotated[StrictFloat, Field(gt=0)]
_FROZEN = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    """An http(s) URL with a host, without its trailing slash."""
    if not re.match(r"^https?://[^/\s?#]+", value):
        raise PydanticCustomError("http_url", "must be an http:// or https:// URL with a host")
    return value.rstrip("/")


class PathsConfig(BaseModel):
    """The five folders.  Relative paths resolve against the config file's folder."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    inbox: Path = Path("inbox")
    outbox: Path = Path("outbox")
    done: Path = Path("done")
    failed: Path = Path("failed")
    state: Path = Path("state")

    @field_validator("inbox", "outbox", "done", "failed", "state", mode="after")
    @classmethod
    def _absolute(cls, value: Path, info: ValidationInfo) -> Path:
        context = info.context if isinstance(info.context, dict) else {}
        base = Path(context.get("base_dir") or Path.cwd())
        # normpath, not resolve(): config code must not touch the file system.
        return Path(os.path.normpath(base / value.expanduser()))

    @model_validator(mode="after")
    def _separate(self) -> Self:
        # done/ or outbox/ inside the inbox would feed the daemon its own output.
        names = ("inbox", "outbox", "done", "failed", "state")
        for i, name in enumerate(names):
            for other in names[i + 1 :]:
                a, b = getattr(self, name), getattr(self, other)
                if a == b:
                    raise PydanticCustomError(
                        "paths_overlap",
                        "paths.{name} and paths.{other} are the same folder; "
                        "each path needs its own folder",
                        {"key": other, "name": name, "other": other},
                    )
                if name == "inbox" and self.inbox in b.parents:
                    raise PydanticCustomError(
                        "paths_overlap",
                        "paths.{other} is inside paths.inbox; the daemon would read "
                        "its own output, so keep it outside the inbox",
                        {"key": other, "other": other},
                    )
        return self


#: The ``gateway`` key naming each kind's default model.
MODEL_KEYS: dict[Kind, str] = {
    "image": "model",
    "text": "text_model",
    "frames": "frames_model",
    "reference": "reference_model",
}


class GatewayConfig(BaseModel):
    """The gateway: which provider, where, which model, how often, how much at once."""

    model_config = _FROZEN

    #: The provider module (``providers/<name>.py``), or a plug-in's ``module:PROVIDER``.
    provider: Annotated[StrictStr, Field(min_length=1)] = DEFAULT_PROVIDER
    #: The provider's own base URL when the config names none.
    base_url: StrictStr = ""
    #: The model of image drops that name none (``model:`` in the sidecar wins).
    model: Annotated[StrictStr, Field(min_length=1)] = DEFAULT_MODELS["image"]
    poll_interval: PositiveFloat = 5.0
    task_timeout: PositiveFloat = 1800.0
    max_in_flight: Annotated[StrictInt, Field(ge=1)] = 10
    requests_per_minute: Annotated[StrictInt, Field(ge=1)] = 60
    request_timeout: PositiveFloat = 30.0
    max_video_bytes: Annotated[StrictInt, Field(gt=0)] = 2147483648
    #: Refuse a sidecar ``model:`` the daemon does not know (``invalid_sidecar``)
    #: instead of logging ``sidecar.unknown_model`` and submitting it anyway.
    strict_model: StrictBool = False
    #: The model of text-to-video drops (``mode: text``) that name none.
    text_model: Annotated[StrictStr, Field(min_length=1)] = DEFAULT_MODELS["text"]
    #: The model of first-and-last-frame drops (``last_frame:``) that name none.
    frames_model: Annotated[StrictStr, Field(min_length=1)] = DEFAULT_MODELS["frames"]
    #: The model of reference drops (``references:``) that name none.
    reference_model: Annotated[StrictStr, Field(min_length=1)] = DEFAULT_MODELS["reference"]
    #: The public URL at which the gateway reaches this daemon's ``POST /webhooks/pixazo``
    #: (``None``: no webhooks, tasks are polled every ``poll_interval``).
    webhook_url: StrictStr | None = None
    #: With webhooks on, the safety-net pace of polls (a callback triggers one at once).
    webhook_poll_interval: PositiveFloat = 60.0

    @model_validator(mode="before")
    @classmethod
    def _provider_defaults(cls, data: Any) -> Any:
        # The base URL a config leaves out is the provider's own.
        if isinstance(data, Mapping) and data.get("base_url") in (None, ""):
            name = data.get("provider", DEFAULT_PROVIDER)
            if isinstance(name, str):
                try:
                    spec = provider_spec(name)
                except ConfigError as exc:
                    raise PydanticCustomError(
                        "provider", "{message}", {"key": "provider", "message": exc.message}
                    ) from None
                return {**data, "base_url": spec.base_url}
        return data

    @field_validator("base_url", mode="after")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("webhook_url", mode="after")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @model_validator(mode="after")
    def _models_offer_their_kind(self) -> Self:
        # Each kind's model key must name a live model that makes that kind: a
        # retired one names its replacement, another the models that do.  An
        # unknown model is the gateway's to judge.
        for kind, key in MODEL_KEYS.items():
            model = getattr(self, key)
            refusal = MODELS.refusal(model, kind)
            if refusal is None and model not in MODELS and kind in ("frames", "reference"):
                # Only the table's Seedance 2 rows have these endpoints.
                refusal = (
                    f"{model} is not a model the daemon knows, and {KIND_NAMES[kind]} drops "
                    f"need one of its Seedance 2 models: {', '.join(MODELS.models_for(kind))}"
                )
            if refusal is not None:
                raise PydanticCustomError(
                    "model_kind", "gateway.{key}: {refusal}", {"key": key, "refusal": refusal}
                )
        return self

    @property
    def models(self) -> dict[Kind, str]:
        """The model of each kind of drop whose sidecar names none."""
        return {kind: getattr(self, key) for kind, key in MODEL_KEYS.items()}


class StorageConfig(BaseModel):
    """The S3 (or S3-compatible) bucket the images go through."""

    model_config = _FROZEN

    bucket: Annotated[StrictStr, Field(min_length=1)]
    prefix: StrictStr = "seedance-watch/"
    endpoint_url: StrictStr | None = None
    region: StrictStr | None = None
    url_mode: Literal["presigned", "public"] = "presigned"
    public_base_url: StrictStr | None = None
    presign_expires: Annotated[StrictInt, Field(ge=1, le=604800)] = 86400
    delete_after: StrictBool = True

    @field_validator("endpoint_url", "public_base_url", mode="after")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @model_validator(mode="after")
    def _public_needs_base(self) -> Self:
        if self.url_mode == "public" and not self.public_base_url:
            raise PydanticCustomError(
                "missing_public_base_url",
                "storage.url_mode 'public' requires storage.public_base_url "
                "(the URL under which the bucket's objects are readable)",
                {"key": "public_base_url"},
            )
        return self


class WatchConfig(BaseModel):
    """How the inbox is watched."""

    model_config = _FROZEN

    mode: Literal["auto", "native", "polling"] = "auto"
    settle_seconds: Annotated[StrictFloat, Field(ge=0)] = 2.0
    rescan_seconds: PositiveFloat = 60.0
    pair_timeout: PositiveFloat = 300.0


class LogConfig(BaseModel):
    """Log format and level; ``auto`` is console on a TTY, JSON lines otherwise."""

    model_config = _FROZEN

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class HealthConfig(BaseModel):
    """Where ``/healthz`` and ``/metrics`` are served (``None``: not at all)."""

    model_config = _FROZEN

    listen: StrictStr | None = None
    #: With a token, every route but ``/healthz`` and ``/webhooks/pixazo`` needs
    #: ``Authorization: Bearer <token>`` (docs/design.md, "The status page").
    token: Annotated[StrictStr, Field(min_length=16)] | None = None
    #: Behind a TLS reverse proxy: the page's cookie gets ``Secure`` (the daemon itself
    #: speaks plain HTTP, so it cannot tell; docs/design.md, "Access rules").
    secure_cookie: StrictBool = False

    @field_validator("listen", mode="after")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            _split_listen(value)
        return value

    @model_validator(mode="after")
    def _exposed_needs_token(self) -> Self:
        # Whoever reaches the page sees prompts and videos and can retry paid jobs.
        if self.listen is not None and self.token is None:
            host, _ = _split_listen(self.listen)
            if not _is_loopback(host):
                raise PydanticCustomError(
                    "listen_needs_token",
                    "health.listen {listen} is not a loopback address; set health.token "
                    "(at least 16 characters) so that only you can reach the page and metrics",
                    {"key": "token", "listen": repr(self.listen)},
                )
        if self.secure_cookie and self.token is None:
            # The cookie is the token's: without one there is none to mark, and a page
            # behind a proxy without a token is one anybody reaching the proxy can use.
            raise PydanticCustomError(
                "secure_cookie_needs_token",
                "health.secure_cookie is true but health.token is not set: the cookie it "
                "marks Secure is the token's; set health.token (at least 16 characters)",
                {"key": "secure_cookie"},
            )
        return self

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` to bind (IPv6 without brackets), or ``None``."""
        return None if self.listen is None else _split_listen(self.listen)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _split_listen(value: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[([0-9A-Fa-f:.%\w]+)\]:(\d{1,5})|([^\s:\[\]]+):(\d{1,5})", value)
    if match is None or int(match.group(2) or match.group(4)) > 65535:
        raise PydanticCustomError(
            "listen",
            "must be HOST:PORT with a port 0..65535 (IPv6 in brackets: [::1]:9464)",
        )
    host = match.group(1) or match.group(3)
    return host, int(match.group(2) or match.group(4))


#: An amount in ``budget.currency``: finite and >= 0 (compared in cents).
Money = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]


class PerSecondPrice(BaseModel):
    """A ``budget.prices`` entry per second of video: one rate, or one per resolution."""

    model_config = _FROZEN

    per_second: Money | dict[Resolution, Money]


_PRICE_FORMS = (
    "a number (USD per generation), {per_second: N} or {per_second: {480p: N, 720p: N, 1080p: N}}"
)


def _price_error(message: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError("budget_price", message, ctx)


def _check_amount(key: str, value: Any) -> None:
    """``value`` is money: a number (not a bool, not text), finite and >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
        or value < 0
    ):
        raise _price_error(
            "{key} = {value} is not an amount: write a number >= 0 (USD), such as 0.24",
            key=key,
            value=repr(value),
        )


def _price_entry(model: str, spec: Any) -> Any:
    """One ``budget.prices`` entry checked, each problem naming its key."""
    key = f"budget.prices.{model}"
    if not isinstance(spec, Mapping):
        _check_amount(key, spec)
        return spec
    if set(spec) != {"per_second"}:
        raise _price_error(
            "{key} takes {forms}; not the key(s) {keys}",
            key=key,
            forms=_PRICE_FORMS,
            keys=", ".join(map(str, spec)) or "(none)",
        )
    rates = spec["per_second"]
    if not isinstance(rates, Mapping):
        _check_amount(f"{key}.per_second", rates)
        return {"per_second": rates}
    if not rates:
        raise _price_error("{key}.per_second is empty: give a rate for each resolution", key=key)
    for resolution, rate in rates.items():
        if resolution not in RESOLUTIONS:
            raise _price_error(
                "{key}.per_second.{resolution} is not a resolution; use {resolutions}",
                key=key,
                resolution=str(resolution),
                resolutions=", ".join(RESOLUTIONS[:-1]) + " or " + RESOLUTIONS[-1],
            )
        _check_amount(f"{key}.per_second.{resolution}", rate)
    row = MODELS.get(model)
    made = row.options.get("resolution") if row is not None and not row.retired else None
    missing = [r for r in made.values if r not in rates] if isinstance(made, Choice) else []
    if missing:
        raise _price_error(
            "{key}.per_second has no rate for {missing}, which {model} makes",
            key=key,
            missing=", ".join(map(str, missing)),
            model=model,
        )
    return {"per_second": dict(rates)}


class BudgetConfig(BaseModel):
    """A daily cap on what submits may cost; ``None`` caps: no cap."""

    model_config = _FROZEN

    max_cost_per_day: Money | None = None
    #: At least 1: a cap of 0 could never let a job through (stop the daemon instead).
    max_submits_per_day: Annotated[StrictInt, Field(ge=1)] | None = None
    timezone: StrictStr = "UTC"
    currency: Annotated[StrictStr, Field(min_length=1)] = "USD"
    #: Prices by model, added to (or replacing) the model table's built-in ones:
    #: a number is USD per generation, ``per_second`` a rate or a rate per resolution.
    prices: dict[StrictStr, Money | PerSecondPrice] = Field(default_factory=dict)
    #: The price per generation of a model that is in neither table.
    default_price: Money = 0.20

    @field_validator("timezone", mode="after")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise PydanticCustomError(
                "timezone", "must be an IANA time zone name such as UTC or Europe/Paris"
            ) from exc
        return value

    @field_validator("prices", mode="before")
    @classmethod
    def _prices(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _price_error(
                "budget.prices maps a model to its price: {forms}", forms=_PRICE_FORMS
            )
        return {model: _price_entry(str(model), spec) for model, spec in value.items()}


def _argv(value: Any) -> Any:
    if isinstance(value, str):
        raise PydanticCustomError(
            "hook_argv",
            "must be a list of arguments, run without a shell, e.g. "
            '["/usr/local/bin/publish", "--quiet"], not one string',
        )
    return value


class HooksConfig(BaseModel):
    """Commands run once per job after its end is durable (argv lists, no shell; docs/design.md,
    "Hooks and notifications").

    A program path with a ``/`` that is not absolute (``./hooks/done.sh``) resolves
    against the config file's folder, like the paths; a bare name is looked up in
    ``$PATH`` when the hook runs.
    """

    model_config = _FROZEN

    on_done: Annotated[list[StrictStr], Field(min_length=1)] | None = None
    on_failed: Annotated[list[StrictStr], Field(min_length=1)] | None = None
    timeout: PositiveFloat = 60.0

    @field_validator("on_done", "on_failed", mode="before")
    @classmethod
    def _not_a_string(cls, value: Any) -> Any:
        return _argv(value)

    @field_validator("on_done", "on_failed", mode="after")
    @classmethod
    def _program(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return None
        program = value[0]
        if not program.strip():
            raise PydanticCustomError("hook_argv", "the first item (the program) is empty")
        if program.startswith("~") or ("/" in program and not program.startswith("/")):
            context = info.context if isinstance(info.context, dict) else {}
            base = Path(context.get("base_dir") or Path.cwd())
            program = os.path.normpath(base / Path(program).expanduser())
        return [program, *value[1:]]


NotifyEvent = Literal["done", "failed", "paused", "resumed"]
_DEFAULT_EVENTS: tuple[NotifyEvent, ...] = ("done", "failed", "paused")


class NotifyConfig(BaseModel):
    """Apprise URLs told of ended jobs and of pauses (docs/design.md, "Hooks and notifications")."""

    model_config = _FROZEN

    urls: list[StrictStr] = Field(default_factory=list)
    events: list[NotifyEvent] = Field(default_factory=lambda: list(_DEFAULT_EVENTS))

    @field_validator("urls", mode="after")
    @classmethod
    def _apprise_urls(cls, value: list[str]) -> list[str]:
        if not value:
            return value
        # Imported only when URLs are set: Apprise loads a hundred plugins.
        import apprise

        for index, url in enumerate(value):
            if apprise.Apprise.instantiate(url) is None:
                # Never echo the URL: it usually carries a token or a password.
                scheme = url.split("://", 1)[0] if "://" in url else None
                shown = f"scheme {scheme}://" if scheme and scheme.isalnum() else "no scheme://"
                raise PydanticCustomError(
                    "notify_url",
                    "notify.urls[{index}] ({shown}) is not a notification URL that "
                    "Apprise understands; see its list of services and their URL forms "
                    "(ntfy://, slack://, mailto://, json://...)",
                    {"key": "urls", "index": index, "shown": shown},
                )
        return value

    @field_validator("events", mode="after")
    @classmethod
    def _unique(cls, value: list[NotifyEvent]) -> list[NotifyEvent]:
        return list(dict.fromkeys(value))


def _database_password(url: str) -> str | None:
    """Where ``url`` carries a password (its user-info, or a ``password`` parameter)."""
    parts = urlsplit(url)
    try:
        if parts.password is not None:
            return "as user:PASSWORD@"
    except ValueError:
        return None
    if any(name.lower() == "password" for name, _ in parse_qsl(parts.query)):
        return "as a password= parameter"
    return None


class ClusterConfig(BaseModel):
    """Several hosts sharing one PostgreSQL store (docs/design.md, "The shared store").

    ``database`` null (and no ``$CREDENTIALS_DIRECTORY/database-url``): one host, the
    JSON-lines ledger in ``paths.state``.  The password never goes here: libpq's own
    ways (``PGPASSWORD``, ``PGPASSFILE``, ``~/.pgpass``) or the credential file, which
    holds the whole URL.  No message ever echoes the URL (it may carry a password).
    """

    model_config = _FROZEN

    database: StrictStr | None = None
    #: This host in the store, ``status``, logs and the page; None: the host name.
    name: Annotated[StrictStr, Field(min_length=1, max_length=200)] | None = None
    #: A host silent this long is presumed dead (its lease runs out).
    lease_seconds: Annotated[StrictFloat, Field(gt=0, le=86400, allow_inf_nan=False)] = 30.0

    @field_validator("database", mode="after")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in ("postgresql", "postgres"):
            shown = f"scheme {scheme}://" if scheme.isalnum() else "no scheme://"
            raise PydanticCustomError(
                "cluster_database",
                "cluster.database ({shown}) must be a postgresql:// URL, e.g. "
                "postgresql://seedance@db.example.net/seedance",
                {"key": "database", "shown": shown},
            )
        where = _database_password(value)
        if where is not None:
            raise PydanticCustomError(
                "cluster_database",
                "cluster.database carries a password ({where}); keep it out of the "
                "config: give it to libpq (PGPASSWORD, PGPASSFILE or ~/.pgpass), or put "
                "the whole URL in $CREDENTIALS_DIRECTORY/database-url",
                {"key": "database", "where": where},
            )
        return value

    @field_validator("name", mode="after")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (value != value.strip() or not value.isprintable()):
            raise PydanticCustomError(
                "cluster_name",
                "cluster.name {name!r} must be printable text without surrounding spaces",
                {"key": "name", "name": value},
            )
        return value


#: The generation options of a config that sets no ``defaults:`` (a partial one adds to them).
BUILTIN_DEFAULTS = GenerationOptions(resolution="720p", duration=5, camerafixed=False)


class Config(BaseModel):
    """The whole configuration, validated once and frozen."""

    model_config = _FROZEN

    paths: PathsConfig = Field(default_factory=PathsConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    storage: StorageConfig
    watch: WatchConfig = Field(default_factory=WatchConfig)
    defaults: GenerationOptions = BUILTIN_DEFAULTS
    dedupe: StrictBool = True
    log: LogConfig = Field(default_factory=LogConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    #: The file this came from (not a key users write).
    source: Path | None = None

    @field_validator("defaults", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        # A partial defaults: section (or one env override) adds to the built-in
        # defaults instead of silently dropping them; `key: null` unsets one.
        if isinstance(value, Mapping):
            return {**BUILTIN_DEFAULTS.model_dump(), **value}
        return value

    @model_validator(mode="after")
    def _cap_fits_one_job(self) -> Self:
        # What one image or text drop reserves with the model it gets when its sidecar
        # names none, at the config's defaults: a cap below it could never let one go,
        # which is a mistake worth stopping for.  (A frames or reference drop, or a
        # sidecar asking for more, that alone goes over the cap fails as over_budget
        # at intake, before anything is uploaded.)
        if self.budget.max_cost_per_day is None:
            return self
        prices = BudgetPrices.from_config(self.budget)
        cap = prices.max_cost_per_day
        assert cap is not None
        for kind in ("image", "text"):
            model = self.gateway.models[kind]
            row = MODELS.get(model)
            options = self.defaults.fitted(row) if row is not None else self.defaults
            cost = prices.reserve(model, options.set_options())
            if cost.cents > cap:
                how = (
                    f"{cost.seconds} s at {cost.rate} per second"
                    if cost.seconds is not None
                    else "one generation"
                )
                raise PydanticCustomError(
                    "budget_cap",
                    "budget.max_cost_per_day ({cap}) is below what one {kind} drop with "
                    "gateway.{model_key} ({model}) reserves at the config's defaults "
                    "({amount}: {how}): no such job could ever be submitted; raise the "
                    "cap, or set gateway.{model_key} to a cheaper model",
                    {
                        "key": "budget.max_cost_per_day",
                        "cap": money(cap),
                        "kind": kind,
                        "model_key": MODEL_KEYS[kind],
                        "model": model,
                        "amount": money(cost.cents),
                        "how": how,
                    },
                )
        return self


# --- loading -----------------------------------------------------------------------------

_SECTIONS: dict[str, type[BaseModel]] = {
    "paths": PathsConfig,
    "gateway": GatewayConfig,
    "storage": StorageConfig,
    "watch": WatchConfig,
    "defaults": GenerationOptions,
    "log": LogConfig,
    "health": HealthConfig,
    "budget": BudgetConfig,
    "hooks": HooksConfig,
    "notify": NotifyConfig,
    "cluster": ClusterConfig,
}
_SCALARS = ("dedupe",)
_TOP_KEYS = (*_SECTIONS, *_SCALARS)


def _known(section: str) -> list[str]:
    return list(_SECTIONS[section].model_fields)


def _suggest(word: str, choices: list[str], spell: str = "{}", *, env: bool = False) -> str:
    """`` (did you mean 'x'?)`` for the closest known key, ``spell`` shaping its name."""
    close = difflib.get_close_matches(word, choices, n=1)
    if not close:
        return ""
    return f" (did you mean {spell.format(close[0].upper() if env else close[0])!r}?)"


def _is_text_field(section: str, key: str) -> bool:
    """True when the field takes only text (or null): env values stay strings there."""
    leaves: list[Any] = []
    pending: list[Any] = [_SECTIONS[section].model_fields[key].annotation]
    while pending:
        tp = pending.pop()
        origin = typing.get_origin(tp)
        if origin is Annotated:
            pending.append(typing.get_args(tp)[0])
        elif origin in (typing.Union, types.UnionType):
            pending.extend(typing.get_args(tp))
        else:
            leaves.append(tp)
    return all(leaf in (str, Path, type(None)) for leaf in leaves)


def _env_value(raw: str, text_only: bool) -> Any:
    try:
        value = load_yaml(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, dict | list):
        # A flow list or mapping (hooks.on_done: '["/usr/bin/x", "--y"]') is kept for
        # fields that take one; text fields keep the raw string.
        return raw if text_only else value
    if text_only and value is not None and not isinstance(value, str):
        return raw  # a bucket named 2024 is the string "2024"
    return value


class _Loader:
    """One load: the merged raw data, and where each dotted key came from."""

    def __init__(self, source: Path | None) -> None:
        self.source = source
        self.origin: dict[str, str] = {}
        self.data: dict[str, Any] = {}

    def where(self, key: str | None) -> str:
        if key is not None and key in self.origin:
            return self.origin[key]
        return f"config file {self.source}" if self.source else "config (no file)"

    def fail(self, message: str, key: str | None) -> NoReturn:
        raise ConfigError(f"{self.where(key)}: {message}", key=key)

    def read_file(self, path: Path) -> None:
        try:
            text = path.read_bytes()
        except OSError as exc:
            self.fail(f"cannot read the config file: {exc.strerror or exc}", None)
        try:
            data = load_yaml(text)
        except yaml.YAMLError as exc:
            self.fail(f"not valid YAML: {exc}", None)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(f"the top level must be a mapping of sections, got {data!r}", None)
        for top, value in data.items():
            if top not in _TOP_KEYS:
                self.fail(
                    f"unknown key {top!r}{_suggest(str(top), list(_TOP_KEYS))}; "
                    f"known keys: {', '.join(_TOP_KEYS)}",
                    str(top),
                )
            if top in _SCALARS:
                self.data[top] = value
                continue
            if value is None:  # a section whose keys are all commented out
                value = {}
            if not isinstance(value, dict):
                self.fail(f"{top} must be a mapping of keys, got {value!r}", top)
            for key in value:
                if key not in _known(top):
                    self.fail(
                        f"unknown key '{top}.{key}'"
                        f"{_suggest(str(key), _known(top), top + '.{}')}; "
                        f"known keys in {top}: {', '.join(_known(top))}",
                        f"{top}.{key}",
                    )
            self.data[top] = dict(value)

    def apply_env(self, environ: Mapping[str, str]) -> None:
        for name in sorted(environ):
            if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
                continue
            rest = name[len(ENV_PREFIX) :].lower()
            section, sep, key = rest.partition("__")
            self.origin[section if not sep else f"{section}.{key}"] = f"environment variable {name}"
            if not sep:
                self._env_top(name, section, environ[name])
                continue
            if section not in _SECTIONS:
                hint = _suggest(
                    section, list(_SECTIONS), f"{ENV_PREFIX}{{}}__{key.upper()}", env=True
                )
                self.fail(
                    f"names no config section {section!r}{hint}; sections: {', '.join(_SECTIONS)}",
                    f"{section}.{key}",
                )
            if key not in _known(section):
                self.fail(
                    f"names no key '{section}.{key}'"
                    f"{_suggest(key, _known(section), f'{name[: -len(key)]}{{}}', env=True)}; "
                    f"known keys in {section}: {', '.join(_known(section))}",
                    f"{section}.{key}",
                )
            value = _env_value(environ[name], _is_text_field(section, key))
            self.data.setdefault(section, {})[key] = value

    def _env_top(self, name: str, key: str, raw: str) -> None:
        if key in _SECTIONS:
            self.fail(
                f"{key} is a section; set one of its keys with {ENV_PREFIX}{key.upper()}__<KEY>",
                key,
            )
        if key not in _SCALARS:
            hint = _suggest(key, list(_SCALARS), ENV_PREFIX + "{}", env=True)
            self.fail(
                f"names no config key {key!r}{hint}; "
                f"use {ENV_PREFIX}<SECTION>__<KEY> or one of: "
                + ", ".join(ENV_PREFIX + s.upper() for s in _SCALARS),
                key,
            )
        self.data[key] = _env_value(raw, text_only=False)

    def build(self) -> Config:
        # Every section is validated with the context (so default paths resolve
        # against the config file's folder), and a missing bucket names storage.bucket.
        for section in _SECTIONS:
            if section != "defaults":
                self.data.setdefault(section, {})
        base = self.source.parent if self.source else Path.cwd()
        try:
            config = Config.model_validate(self.data, context={"base_dir": base})
        except ValidationError as exc:
            self._raise_validation(exc)
        return config.model_copy(update={"source": self.source})

    def _raise_validation(self, exc: ValidationError) -> NoReturn:
        errors = exc.errors()
        first = errors[0]
        parts = [str(p) for p in first["loc"] if isinstance(p, str)]
        ctx = first.get("ctx") or {}
        if "key" in ctx and len(parts) <= 1:
            # A section's own check names its key; the whole config's names "section.key".
            parts.extend(str(ctx["key"]).split("."))
        key = ".".join(parts[:2]) if parts else None
        if first["type"] == "missing":
            env = ENV_PREFIX + "__".join(p.upper() for p in parts[:2])
            message = f"{key} is required; set it in the config file or with {env}"
        elif first["type"].startswith(
            (
                "paths_overlap",
                "missing_public",
                "listen_needs_token",
                "budget_cap",
                "budget_price",
                "notify_url",
                "model_kind",
                "provider",
                "cluster_",
            )
        ):
            message = first["msg"]
        elif key == "cluster.database":
            # Never echoed: a database URL may carry a password.
            message = f"{key} is invalid: {first['msg']}"
        else:
            message = f"{key} = {first['input']!r} is invalid: {first['msg']}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem(s))"
        self.fail(message, key)


def load_config(path: Path | None, environ: Mapping[str, str]) -> Config:
    """Load, override from ``environ``, validate; raise ``ConfigError`` on any problem.

    ``path`` None means ``$SEEDANCE_WATCH_CONFIG`` when set, else no file (defaults
    only, relative paths against the current directory).
    """
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])
    source = None if path is None else Path(os.path.normpath(Path.cwd() / path.expanduser()))
    loader = _Loader(source)
    if source is not None:
        loader.read_file(source)
    loader.apply_env(environ)
    return loader.build()
