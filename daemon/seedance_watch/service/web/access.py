"""Who may use the page (docs/design.md, "Access rules"): the token, the cookie, same-origin.

With ``health.token`` set, every route but the open ones (``/healthz``, the
webhook) needs ``Authorization: Bearer <token>`` or the page's cookie.  A browser
gets the cookie by opening ``/?token=...`` once: the answer sets it (HttpOnly,
SameSite=Strict) and sends the browser on to the same URL without the token, so
the token leaves the address bar and the history.  The cookie holds a value
derived from the token (an HMAC), not the token itself.  Every comparison is in
constant time.

Without a token the listen address is loopback (the config refuses anything
else), and only a loopback ``Host`` is served: a web page whose name an attacker
points at 127.0.0.1 (DNS rebinding) would otherwise read the page and press retry.

State-changing requests also pass :func:`same_origin` (``Origin``, else
``Referer``, must name this server), token or not.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import urllib.parse

from starlette.datastructures import URL, Headers
from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["COOKIE_NAME", "OPEN_PATHS", "AccessGuard", "same_origin"]

COOKIE_NAME = "seedance_watch_session"
COOKIE_MAX_AGE = 30 * 24 * 3600
#: Routes anyone who reaches the port may call (the webhook carries its own secret).
#: Open to anyone (no token): the health probe.  The provider's webhook path is open
#: too (its callbacks carry their own per-job token): passed to the guard.
OPEN_PATHS = frozenset({"/healthz"})
PAGE_PATH = "/"

_NEED_TOKEN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seedance-watch: token needed</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>This status page needs its token</h1>
<p>Open it once as <code>/?token=YOUR-TOKEN</code> (the <code>health.token</code> of
the daemon's configuration); the browser then keeps a cookie.</p></body></html>
"""

#: Opened from another site, the follow-up request of a redirect would go without
#: the SameSite=Strict cookie just set; this page moves on from our own origin.
_CONTINUE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seedance-watch</title>
<meta http-equiv="refresh" content="0; url={url}"></head>
<body><p><a href="{url}">Continue to the status page</a></p></body></html>
"""


def _cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"seedance-watch page cookie", hashlib.sha256).hexdigest()


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def _split_host(value: str, default_port: int) -> tuple[str, int] | None:
    """``host[:port]`` (IPv6 in brackets) as a lower-case name and a port."""
    parsed = urllib.parse.urlsplit(f"//{value}")
    try:
        port = parsed.port
    except ValueError:
        return None
    if not parsed.hostname:
        return None
    return parsed.hostname.lower(), port or default_port


def _is_loopback_host(host_header: str | None) -> bool:
    if not host_header:
        return False
    split = _split_host(host_header, 80)
    if split is None:
        return False
    name = split[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def same_origin(headers: Headers) -> bool:
    """``Origin`` (else ``Referer``) names the host the request was sent to."""
    host = headers.get("host")
    claimed = headers.get("origin") or headers.get("referer")
    if not host or not claimed or claimed == "null":
        return False
    origin = urllib.parse.urlsplit(claimed)
    if origin.scheme not in ("http", "https") or not origin.netloc:
        return False
    default = 443 if origin.scheme == "https" else 80
    return _split_host(origin.netloc, default) == _split_host(host, default)


class AccessGuard:
    """ASGI middleware: lets a request through only as the module docstring says."""

    def __init__(self, app: ASGIApp, *, token: str | None, open_paths: frozenset[str]) -> None:
        self.app = app
        self.token = token
        self.open_paths = OPEN_PATHS | open_paths
        self.cookie = None if token is None else _cookie_value(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        response = self._refusal(conn)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _refusal(self, conn: HTTPConnection) -> Response | None:
        """None to let ``conn`` through, else the answer it gets instead."""
        if self.token is None:
            if _is_loopback_host(conn.headers.get("host")):
                return None
            return PlainTextResponse("this server answers only to a loopback host name\n", 403)
        offered = conn.query_params.get("token")
        if offered is not None and conn.url.path == PAGE_PATH:
            return self._exchange(conn, offered)
        if self._authorized(conn):
            return None
        headers = {"WWW-Authenticate": 'Bearer realm="seedance-watch"', "Cache-Control": "no-store"}
        if conn.url.path == PAGE_PATH:
            return HTMLResponse(_NEED_TOKEN_PAGE, 401, headers=headers)
        return PlainTextResponse("a token is needed (Authorization: Bearer ...)\n", 401, headers)

    def _authorized(self, conn: HTTPConnection) -> bool:
        assert self.token is not None and self.cookie is not None
        scheme, _, credential = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _equal(credential.strip(), self.token):
            return True
        cookie = conn.cookies.get(COOKIE_NAME)
        return cookie is not None and _equal(cookie, self.cookie)

    def _exchange(self, conn: HTTPConnection, offered: str) -> Response:
        """``/?token=``: a right token buys the cookie and a URL without the token."""
        assert self.token is not None and self.cookie is not None
        headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
        if not _equal(offered, self.token):
            return HTMLResponse(_NEED_TOKEN_PAGE, 401, headers=headers)
        rest = [(k, v) for k, v in conn.query_params.multi_items() if k != "token"]
        target = URL(path=conn.url.path, query=urllib.parse.urlencode(rest))
        response: Response
        if conn.headers.get("sec-fetch-site") == "cross-site":
            page = _CONTINUE_PAGE.format(url=html.escape(str(target), quote=True))
            response = HTMLResponse(page, headers=headers)
        else:
            response = RedirectResponse(str(target), 303, headers=headers)
        response.set_cookie(
            COOKIE_NAME,
            self.cookie,
            max_age=COOKIE_MAX_AGE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=conn.url.scheme == "https",
        )
        return response
