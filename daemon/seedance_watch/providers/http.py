"""The money-safe HTTP rules every provider and the downloader share.

Rules that live here (docs/design.md, "The gateway protocol"):

* **A submit travels on a fresh connection** (no keep-alive pool), so that a failure
  to connect provably means "not sent" and a dead keep-alive connection is never
  mistaken for either case.  Polls and downloads are idempotent and share a pool.
* **Which failures provably did not send**: a DNS failure, a refused connection, a
  connect or pool timeout -- raised before any byte of the request left.  Anything
  later on a submit means "outcome unknown": the task may exist and be billed, so
  it is never resent (:class:`~seedance_watch.errors.SubmitAmbiguous`).
* **A 502 or 504 on a submit** comes from a proxy in front of the gateway that may
  already have passed it on: ambiguous.  429, 500 and 503 were refused: resend later.
* **A 403 that is not the gateway's JSON** (an HTML challenge from a proxy or a
  firewall in front of it) is blocked before the gateway: transient, never a
  credentials pause, logged once as ``gateway.blocked``.
* **The key goes to one origin only**: a :class:`KeyedClient` refuses to send a
  request to any other scheme, host and port than its own.

Every httpx failure is translated into :mod:`seedance_watch.errors` through the one
table of :func:`mapped_errors`, and every non-2xx answer through
:func:`status_error`, the way httpx's own ``map_exceptions`` works: no provider
writes its own chain of ``except`` blocks.  This module and the provider modules are
the only ones that import httpx.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import structlog

from seedance_watch import errors as E

__all__ = [
    "KeyedClient",
    "Operation",
    "ResponseHook",
    "blocked",
    "describe",
    "error_text",
    "json_object",
    "mapped_errors",
    "origin",
    "parse_retry_after",
    "status_error",
    "strip_query",
]

log = structlog.get_logger(__name__)

Operation = Literal["submit", "poll", "download", "check"]
#: ``on_response(operation, http_status or None on a transport error, seconds)``.
ResponseHook = Callable[[str, int | None, float], None]

_MAX_MESSAGE = 500


def strip_query(url: str) -> str:
    """``url`` without its query string or fragment, safe to log (no signature)."""
    return url.split("?", 1)[0].split("#", 1)[0]


def origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, the default port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP-date); None if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def describe(exc: Exception) -> str:
    """``Type: message`` of an exception (just the type when it says nothing)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The answer's JSON when it is an object, else None."""
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# --- the one mapping of transport failures ------------------------------------------------

#: Raised before any byte of the request left: provably not sent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

#: Per operation: (a call that provably never left, a call that may have arrived,
#: a URL no client can call).
_TRANSPORT: Mapping[Operation, tuple[type[E.SeedanceWatchError], ...]] = {
    "submit": (E.SubmitNotSent, E.SubmitAmbiguous, E.GatewayRejected),
    "poll": (E.GatewayUnavailable, E.GatewayUnavailable, E.GatewayRejected),
    "download": (E.DownloadIncomplete, E.DownloadIncomplete, E.DownloadFailed),
    "check": (E.GatewayUnavailable, E.GatewayUnavailable, E.GatewayRejected),
}


@contextlib.contextmanager
def mapped_errors(op: Operation, target: str) -> Iterator[None]:
    """Translate httpx's request errors of ``op`` into our tree, by one table."""
    not_sent, maybe_sent, unusable = _TRANSPORT[op]
    try:
        yield
    except httpx.UnsupportedProtocol as exc:
        hint = {"hint": "check gateway.base_url"} if unusable is E.GatewayRejected else {}
        raise unusable(f"cannot call {target}: {exc}", **hint) from exc
    except _NOT_SENT as exc:
        raise not_sent(f"could not connect to {target}: {describe(exc)}") from exc
    except httpx.RequestError as exc:
        if op == "submit":
            message = (
                f"the submit to {target} may have reached the gateway, but no answer "
                f"came back: {describe(exc)}"
            )
        elif op == "download":
            message = f"the download from {target} broke off: {describe(exc)}"
        else:
            message = f"the {op} at {target} failed: {describe(exc)}"
        raise maybe_sent(message) from exc


# --- the one mapping of answers ------------------------------------------------------------

#: The 5xx answers to a submit that say it was refused, not taken: sent again later.
_REFUSED_5XX = frozenset({500, 503})

_REFUSALS = {
    401: "refused the API key",
    402: "refused the request: the account has no credit left",
    403: "refused access: the API key may not use this endpoint or model",
}


def error_text(response: httpx.Response, redact: Callable[[str], str] = lambda s: s) -> str:
    """The peer's own words from an error body (``{"error": ...}`` or ``{"message"}``),
    else the start of the body; shortened and passed through ``redact``."""
    message: str | None = None
    data = json_object(response)
    if data is not None:
        error = data.get("error")
        if isinstance(error, str):
            message = error or None
        elif isinstance(error, dict):
            parts = [str(error[k]) for k in ("code", "message") if error.get(k) not in (None, "")]
            message = ": ".join(parts) or None
        if message is None and isinstance(data.get("message"), str):
            message = data["message"]
    if not message:
        text = response.text.strip() if response.content else ""
        message = (
            " ".join(text.split())
            or response.reason_phrase
            or httpx.codes.get_reason_phrase(response.status_code)
            or "(empty body)"
        )
    return redact(message)[:_MAX_MESSAGE]


def blocked(response: httpx.Response) -> bool:
    """A 403 whose body is something else than JSON: a proxy's or a firewall's page in
    front of the gateway, not the gateway refusing the key."""
    return (
        response.status_code == 403
        and bool(response.content.strip())
        and json_object(response) is None
    )


def _first_words(response: httpx.Response) -> str:
    return " ".join(response.text[:120].split()) if response.content else ""


def status_error(op: Operation, response: httpx.Response, message: str) -> E.SeedanceWatchError:
    """The error of a non-2xx answer to a call carrying the key (``message``: the
    peer's words, see :func:`error_text`)."""
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if blocked(response):
        # Not the gateway speaking: a proxy or firewall in front of it blocked us.
        cls = E.SubmitNotSent if op == "submit" else E.GatewayUnavailable
        return cls(
            f"a proxy or firewall in front of the gateway blocked the {op} (HTTP 403, "
            f"not the gateway's answer): {_first_words(response)}",
            retry_after=retry_after,
            http_status=status,
        )
    if status in _REFUSALS:
        return E.CredentialsRefused(
            f"the gateway {_REFUSALS[status]} (HTTP {status}): {message}", http_status=status
        )
    if status == 429:
        return E.RateLimited(
            f"the gateway is rate limiting us (HTTP 429): {message}",
            retry_after=retry_after,
            http_status=429,
        )
    if op == "submit" and status in (502, 504):
        # A proxy in front of the gateway answered: it may have passed the submit on.
        return E.SubmitAmbiguous(
            f"a proxy in front of the gateway answered HTTP {status} to the submit: "
            f"{message}; the gateway may have created (and bills) the task",
            http_status=status,
        )
    if op == "submit" and status >= 500 and status not in _REFUSED_5XX:
        # Only these say the gateway did not take it; another 5xx came from whatever
        # handled the request, after it arrived: never resent automatically.
        return E.SubmitAmbiguous(
            f"the gateway answered HTTP {status} to the submit: {message}; whether it "
            "created (and bills) the task is unknown",
            http_status=status,
        )
    if status >= 500:
        cls = E.SubmitNotSent if op == "submit" else E.GatewayUnavailable
        return cls(
            f"the gateway failed the {op} (HTTP {status}): {message}",
            retry_after=retry_after,
            http_status=status,
        )
    return E.GatewayRejected(
        f"the gateway rejected the {op} (HTTP {status}): {message}", http_status=status
    )


# --- the client ----------------------------------------------------------------------------


class KeyedClient:
    """The HTTP side of a provider: calls carrying the key, to one origin only.

    Two httpx clients: a keep-alive pool for polls, and one without keep-alive for
    submits (each on a fresh connection).  ``headers`` (the key among them) are
    added to every call; ``on_response`` is told of every exchange (metrics).
    ``transport`` replaces the network (tests).
    """

    def __init__(
        self,
        base_url: str,
        headers: Callable[[], Mapping[str, str]],
        *,
        request_timeout: float = 30.0,
        max_connections: int = 20,
        transport: httpx.AsyncBaseTransport | None = None,
        on_response: ResponseHook | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.origin = origin(self.base_url)
        self._headers = headers
        self._on_response = on_response
        self._blocked_said = False
        timeout = httpx.Timeout(request_timeout)
        self._pool = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections),
            transport=transport,
        )
        self._fresh = httpx.AsyncClient(
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=0),
            headers={"Connection": "close"},
            transport=transport,
        )

    def is_ours(self, url: str) -> bool:
        """True when ``url`` is on the origin the key may go to."""
        return url.startswith(("http://", "https://")) and origin(url) == self.origin

    async def aclose(self) -> None:
        for client in (self._fresh, self._pool):
            await client.aclose()

    async def send(
        self,
        op: Operation,
        method: str,
        url: str,
        *,
        shown: str,
        body: Any = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call (a submit on a fresh connection); transport errors mapped.

        ``shown`` is what logs say of the URL (a path template, no ids or query).
        """
        if not self.is_ours(url):  # a guard, never expected to trip
            raise E.GatewayRejected(f"refusing to send the API key to {strip_query(url)}")
        headers = {**self._headers(), **(extra_headers or {})}
        client = self._fresh if op == "submit" else self._pool
        started = time.monotonic()
        status: int | None = None
        try:
            with mapped_errors(op, strip_query(url)):
                if body is None:
                    response = await client.request(method, url, headers=headers)
                else:
                    response = await client.request(method, url, json=body, headers=headers)
            status = response.status_code
            if blocked(response) and not self._blocked_said:
                # Once: a proxy in front of the gateway answers every call alike.
                self._blocked_said = True
                log.warning("gateway.blocked", op=op, status=403, body=_first_words(response))
            return response
        finally:
            observe(self._on_response, op, method, shown, status, time.monotonic() - started)


def observe(
    hook: ResponseHook | None,
    op: Operation,
    method: str,
    path: str,
    status: int | None,
    seconds: float,
) -> None:
    """Log one exchange at debug level and tell ``hook`` (a failing hook is logged only:
    a metrics bug must never turn a created, billed task into an error)."""
    log.debug(
        "gateway.request", op=op, method=method, path=path, status=status, seconds=round(seconds, 4)
    )
    if hook is not None:
        try:
            hook(op, status, seconds)
        except Exception:
            log.exception("gateway.response_hook_failed", op=op)
