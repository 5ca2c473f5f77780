"""Logging set-up: structlog events, stdlib logs through the same pipeline, redaction.

One event per line (docs/design.md, "The status page"): JSON lines for machines, a plain console
renderer for people.  Libraries that log through the standard ``logging`` module (httpx, botocore,
watchdog...) are rendered by the same processors, so every line, ours or theirs, goes through one
redaction step before it is written:

- registered secrets (the API key) are replaced by ``***`` in every string, even
  inside rendered tracebacks;
- fields named like secrets (``api_key``, ``authorization``, ``*token*``...) are masked;
- signed URLs (``X-Amz-...``, ``...Signature=``) lose their query string, which is
  a bearer credential for as long as it is valid; signing parameters met outside a
  URL are masked, and botocore's signing debug lines are never emitted;
- with ``all_queries`` (error reports, pauses: what the page, ``status`` and
  notifications show, docs/design.md "The error report"), every URL loses its query
  string and fragment, whose parameters a person never needs (a webhook URL's
  ``token=``, a signature in a spelling the patterns do not know);
- request headers dumped as text (botocore's debug "Sending http request:
  <AWSPreparedRequest ... headers={...}>") keep their names but lose the values
  of credential headers (``Authorization``, whose value names the access key and
  carries the signature, ``X-Amz-Security-Token``, cookies, API-key headers), and
  an ``AWS4-HMAC-SHA256 Credential=..., Signature=...`` value met anywhere else
  is masked whole;
- a password in a URL (``postgresql://user:PASSWORD@host/db``, ``?password=...``)
  or in a libpq connection string (``password=...``) is masked: a database URL is
  never written with its password.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "CHATTY_LOGGERS",
    "CREDENTIAL_HEADERS",
    "clear_secrets",
    "configure_logging",
    "redact_event",
    "redact_text",
    "redact_url",
    "register_secret",
]

#: Libraries quieted to WARNING unless the level is debug.
CHATTY_LOGGERS = (
    "httpx",
    "httpcore",
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "watchdog",
    "werkzeug",
    "asyncio",
    "moto",
)

#: Kept at INFO even at level debug: botocore.auth's debug lines are signing
#: material (canonical requests with presigned query strings, signatures).
SIGNING_LOGGERS = ("botocore.auth",)

MASK = "***"

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR

# --- redaction ---------------------------------------------------------------------------

_secrets_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secret(value: str) -> None:
    """Redact ``value`` from every log line from now on (empty strings are ignored)."""
    global _secrets
    if not value:
        return
    with _secrets_lock:
        if value not in _secrets:
            # Longest first, so a secret containing another is masked whole.
            _secrets = tuple(sorted((*_secrets, value), key=len, reverse=True))


def clear_secrets() -> None:
    """Forget every registered secret (for tests)."""
    global _secrets
    with _secrets_lock:
        _secrets = ()


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>\\]+")
_SIGNED_QUERY = re.compile(r"x-amz-|signature=", re.IGNORECASE)
# Signing parameters outside a URL (a canonical request, a query string alone).
_SIGNING_PARAM = re.compile(
    r"((?:X-Amz-(?:Credential|Signature|Security-Token)|Signature|AWSAccessKeyId)=)[^&\s\"']+",
    re.IGNORECASE,
)


#: Headers whose value is a credential (matched case-insensitively).
CREDENTIAL_HEADERS = (
    "authorization",
    "proxy-authorization",
    "x-amz-security-token",
    "cookie",
    "set-cookie",
    "ocp-apim-subscription-key",
    "x-api-key",
)
_HEADER_NAMES = "|".join(re.escape(name) for name in CREDENTIAL_HEADERS)
# A header in a dict or tuple repr: 'Name': b'value' or ('Name', 'value').  The value
# is a (bytes) string literal in either quote; escapes inside it are skipped over.
_HEADER_PAIR = re.compile(
    rf"""(?P<name>(?P<q>['"])(?:{_HEADER_NAMES})(?P=q))(?P<sep>\s*[:,]\s*)"""
    r"""b?(?P<vq>['"])(?:\\.|(?!(?P=vq)).)*(?P=vq)""",
    re.IGNORECASE | re.DOTALL,
)
# A header written as a line of text: "Authorization: Bearer ..." up to the line end.
_HEADER_LINE = re.compile(rf"(?im)^(\s*(?:{_HEADER_NAMES})\s*:\s*)\S.*$")
# A SigV4 authorization value anywhere (say, inside an exception message).
_SIGV4_AUTH = re.compile(r"AWS4-HMAC-SHA256\s+Credential=[^'\"\r\n]*")
# A password parameter: in a URL's query (libpq reads ?password=) or in a libpq
# connection string, where a value with spaces is quoted ('a b', \' inside).
_PASSWORD_PARAM = re.compile(r"""(\bpassword\s*=\s*)('(?:\\.|[^'\\])*'|[^&\s"']+)""", re.IGNORECASE)


def redact_url(url: str, *, all_queries: bool = False) -> str:
    """The URL without its query string when that query signs it (presigned URLs),
    or, with ``all_queries``, whenever it has one.

    Also masks a password in the URL's user-info part or in a ``password=`` query
    parameter (a database URL).  Other URLs are unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    query, fragment = parts.query, parts.fragment
    if all_queries or _SIGNED_QUERY.search(query) or _SIGNED_QUERY.search(fragment):
        query, fragment = "", ""
    elif "password" in query.lower():
        query = _PASSWORD_PARAM.sub(lambda m: m.group(1) + MASK, query)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


# Punctuation that ends the sentence around a URL rather than the URL itself.
_URL_TRAILER = re.compile(r"[.,;:!?)\]}]+$")


def _redact_url_in_text(found: str, all_queries: bool) -> str:
    """A URL found in running text, redacted; the sentence's own ``.``/``;``/``)`` after
    it stay, instead of leaving with the query string they were matched into."""
    trailer = _URL_TRAILER.search(found)
    if trailer is None:
        return redact_url(found, all_queries=all_queries)
    head = found[: trailer.start()]
    return redact_url(head, all_queries=all_queries) + trailer.group()


def redact_text(text: str, *, all_queries: bool = False) -> str:
    """``text`` with registered secrets, signing material and credential headers masked;
    with ``all_queries`` no URL in it keeps a query string (:func:`redact_url`)."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "://" in text:
        text = _URL.sub(lambda m: _redact_url_in_text(m.group(0), all_queries), text)
    if "AWS4-HMAC-SHA256" in text:
        text = _SIGV4_AUTH.sub("AWS4-HMAC-SHA256 " + MASK, text)
    if "=" in text:
        text = _SIGNING_PARAM.sub(lambda m: m.group(1) + MASK, text)
    lowered = text.lower()
    if "password" in lowered:
        text = _PASSWORD_PARAM.sub(lambda m: m.group(1) + MASK, text)
    if any(name in lowered for name in CREDENTIAL_HEADERS):
        text = _HEADER_PAIR.sub(lambda m: f"{m['name']}{m['sep']}'{MASK}'", text)
        text = _HEADER_LINE.sub(lambda m: m.group(1) + MASK, text)
    return text


# Deliberately not bare "key": job_id, s3_key and content_key are not secrets.
_SECRET_NAME = re.compile(
    r"secret|passw|credential|authoriz|cookie|token|api_?key|subscription_key|private_key"
)


def _is_secret_name(name: str) -> bool:
    """True for field names that carry credentials (``total_tokens`` is a count)."""
    normal = name.lower().replace("-", "_")
    if normal.endswith("tokens"):
        return False
    return bool(_SECRET_NAME.search(normal))


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth > 8:
        return MASK
    if isinstance(value, Mapping):
        return {
            (redact_text(k) if isinstance(k, str) else k): (
                MASK if isinstance(k, str) and _is_secret_name(k) else _redact_value(v, depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, depth + 1) for v in value]
    if isinstance(value, PurePath):
        return redact_text(str(value))
    # Renderers would repr() it anyway; do it here so the text can be redacted.
    return redact_text(repr(value))


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secrets in every value of the event."""
    out: EventDict = {}
    for key, value in event_dict.items():
        if key.startswith("_"):  # _record, _from_structlog: structlog's plumbing
            out[key] = value
        elif _is_secret_name(key):
            out[key] = MASK
        else:
            out[key] = _redact_value(value)
    return out


def _stack_info_to_text(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    # stdlib records carry stack_info as text; structlog's renderers expect "stack".
    stack = event_dict.pop("stack_info", None)
    if isinstance(stack, str):
        event_dict["stack"] = stack
    return event_dict


# --- configuration ---------------------------------------------------------------------

_HANDLER_MARK = "_seedance_watch_handler"


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(
    *, fmt: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Set up structlog and stdlib logging to write one redacted event per line.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console on a TTY, JSON otherwise);
    ``level`` is ``debug``, ``info``, ``warning`` or ``error``.  Safe to call again
    (SIGHUP): the previous handler is replaced, never duplicated.
    """
    if fmt not in ("auto", "json", "console"):
        raise ValueError(f"log format must be auto, json or console, not {fmt!r}")
    if level not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}, not {level!r}")
    out = stream if stream is not None else sys.stderr
    tty = _is_tty(out)
    as_json = fmt == "json" or (fmt == "auto" and not tty)

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=tty)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _stack_info_to_text,
            # Tracebacks become text *before* redaction, so a secret in an
            # exception message or a local repr is masked too.
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "debug" else logging.WARNING)
    for name in SIGNING_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, _LEVELS[level]))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            # Resolve exc_info=True now, while the exception is still current.
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a reload (SIGHUP) must reach loggers created at import time.
        cache_logger_on_first_use=False,
    )
