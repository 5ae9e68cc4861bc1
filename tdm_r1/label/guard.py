"""What the labelling app checks before a request reaches an endpoint, and its login sessions.

:class:`RequestGuard` is a plain ASGI middleware, so that it decides on the headers alone, before
any body is read:

* **Host** (DNS rebinding): a page fetched as ``http://attacker.example:PORT/`` after the attacker's
  name was pointed at 127.0.0.1 carries ``Host: attacker.example``; only the names the app was
  started for (its bind address, ``localhost`` / loopback, and ``--allowed-host`` values) are
  served, other hosts get 421 (no Host at all: 400).
* **Origin / Referer** on every POST: a browser names the page that sent the request; one from
  another site is refused with 403 even when it carries a valid token. A request without either
  header (a script, the simulated rater) is judged by its token alone.
* **Size**: a POST body larger than :data:`MAX_BODY` is answered 413 from its ``Content-Length``
  without being read; a streamed body without a length is refused (411).
* **Page token** of ``/api/`` POSTs (header ``X-Label-Token``), before their body is read.

Only host *names* are compared, not ports: behind a TLS proxy the port a browser shows is not the
one the app listens on.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from tdm_r1.errors import excerpt

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: Largest POST body accepted (bytes): a label is about 200 bytes of JSON, a login form less.
MAX_BODY = 16 * 1024
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MISSING_TOKEN = "missing page token: reload the page and try again (POSTs need it)"
WRONG_TOKEN = "wrong page token: the app was restarted; reload the page"


def normalise_host(name: str) -> str:
    """A host name as compared: lower case, no brackets around IPv6, no trailing dot."""
    return name.strip().strip("[]").rstrip(".").lower()


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names an app bound to ``bind`` serves: ``bind``, loopback names and ``extra``."""
    names = {normalise_host(n) for n in (bind, *LOOPBACK_NAMES, *extra) if n and n.strip()}
    return frozenset(names - {"0.0.0.0", "::"})  # "all interfaces" is no name a browser sends


def host_of_header(value: str) -> str:
    """The name in a ``Host`` header (``name``, ``name:port``, ``[v6]:port``)."""
    value = value.strip()
    if value.startswith("["):
        return normalise_host(value[1 : value.find("]")] if "]" in value else value)
    return normalise_host(value.rsplit(":", 1)[0] if value.count(":") == 1 else value)


def host_of_url(value: str) -> str | None:
    """The host name of an ``Origin`` / ``Referer`` value; None when it has none (``null``...)."""
    try:
        host = urlsplit(value.strip()).hostname
    except ValueError:
        return None
    return normalise_host(host) if host else None


def refusal(
    method: str, path: str, headers: dict[str, str], hosts: frozenset[str], page_token: str
) -> tuple[int, str] | None:
    """(status, reason) when a request must not reach the app, else None (see the module doc)."""
    host = headers.get("host")
    if not host:
        return 400, "no Host header: this labelling app answers only requests that name its host"
    if host_of_header(host) not in hosts:
        return 421, (
            f"this labelling app does not serve host {excerpt(host)!r}: open it as one of "
            f"{', '.join(sorted(hosts))} (or start it with --allowed-host NAME)"
        )
    if method in SAFE_METHODS:
        return None
    for header in ("origin", "referer"):
        if header in headers:
            site = host_of_url(headers[header])
            if site not in hosts:
                return 403, (
                    f"refused a POST sent from another site ({header.title()}: "
                    f"{excerpt(headers[header])!r}): label from the app's own pages"
                )
            break  # Origin decides when present; Referer only stands in for a missing Origin
    length = headers.get("content-length")
    if length is None and "transfer-encoding" in headers:
        return 411, "a POST to this labelling app needs a Content-Length header"
    if length is not None and (not length.strip().isdigit() or int(length) > MAX_BODY):
        return 413, f"request body too large ({excerpt(length)} bytes; at most {MAX_BODY} are accepted)"
    if path.startswith("/api/"):
        sent = headers.get("x-label-token", "")
        if not sent:
            return 403, MISSING_TOKEN
        if not hmac.compare_digest(sent.encode(), page_token.encode()):
            return 403, WRONG_TOKEN
    return None


class RequestGuard:
    """ASGI middleware applying :func:`refusal` to every HTTP request."""

    def __init__(self, app: Any, *, hosts: frozenset[str], page_token: str) -> None:
        self.app, self.hosts, self.page_token = app, hosts, page_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for key, value in scope.get("headers", ()):
            headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
        refused = refusal(scope["method"], scope["path"], headers, self.hosts, self.page_token)
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, reason = refused
        body = json.dumps({"error": reason}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),  # an unread body must not be taken for the next request
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Sessions:
    """Login sessions of an app started with an access token: the cookie holds a random session
    id, never the token itself (a copied cookie then dies with the app and reveals no secret).

    At most ``limit`` sessions are kept (the oldest goes first), each for ``max_age`` seconds.
    """

    def __init__(self, limit: int = 10_000, max_age: float = 7 * 24 * 3600) -> None:
        self.limit, self.max_age = limit, max_age
        self._ids: OrderedDict[str, float] = OrderedDict()

    def new(self) -> str:
        sid = secrets.token_urlsafe(32)
        self._ids[sid] = time.monotonic()
        while len(self._ids) > self.limit:
            self._ids.popitem(last=False)
        return sid

    def valid(self, sid: str | None) -> bool:
        started = self._ids.get(sid or "")
        return started is not None and time.monotonic() - started < self.max_age
