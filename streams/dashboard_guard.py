"""Who may use the dashboard: a Host-header allow list and a bearer token.

- **Host check** (every request): the ``Host`` header must name this dashboard: a loopback
  name (``localhost``, ``127.0.0.1``, ``::1``), the address it is bound to, or one of
  ``[stream] dashboard_hosts`` (or ``$CALIBSTREAM_DASHBOARD_HOSTS``, comma-separated);
  anything else is 421 Misdirected Request. This stops DNS rebinding: a web page of another
  site whose name resolves to this machine cannot read the dashboard through a browser.
- **Token** (every route, ``/metrics`` and ``/static/`` included): required when the dashboard
  listens on anything but loopback (it refuses to start without one) or when
  ``[stream] dashboard_require_token`` is set. A request carries it as
  ``Authorization: Bearer <token>`` (Prometheus: ``authorization: {credentials: ...}``) or
  in a cookie, which a browser gets by opening any page once with ``?token=<token>`` (the
  answer sets the cookie, HttpOnly and SameSite=Strict, and redirects to the same URL
  without the token). Compared in constant time; otherwise 401.

The token comes from ``--token-file FILE`` (a Docker secret), ``--token`` (seen by ``ps``:
for trials), ``$CALIBSTREAM_DASHBOARD_TOKEN`` or ``[stream] dashboard_token``, first found first.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from streams.settings import StreamSettings

__all__ = [
    "COOKIE",
    "HOSTS_ENV",
    "TOKEN_ENV",
    "Guard",
    "GuardError",
    "guard_middleware",
    "is_loopback",
    "make_guard",
    "read_token",
]

TOKEN_ENV = "CALIBSTREAM_DASHBOARD_TOKEN"
HOSTS_ENV = "CALIBSTREAM_DASHBOARD_HOSTS"
COOKIE = "calibstream_dashboard"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
MIN_TOKEN_LENGTH = 16
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::", "*")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GuardError(ValueError):
    """The dashboard cannot start guarded as asked (one line, for the command line)."""


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _host_name(header: str | None) -> str | None:
    """The host of a ``Host`` header, lower-case, without port, brackets or final dot."""
    if not header:
        return None
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[1:end] if end > 0 else None
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return name.rstrip(".") or None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on this machine only."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Guard:
    """The Host allow list and the token (None: no token asked)."""

    hosts: frozenset[str]
    token: str | None = None

    def host_allowed(self, header: str | None) -> bool:
        return _host_name(header) in self.hosts

    def token_matches(self, supplied: str) -> bool:
        """Constant-time comparison (of digests: the length does not show either)."""
        return self.token is not None and hmac.compare_digest(
            _digest(supplied), _digest(self.token)
        )

    @property
    def cookie_value(self) -> str:
        """What the cookie holds: derived from the token, not the token itself."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"calibstream dashboard cookie", "sha256").hexdigest()

    def authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(credentials.strip()):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(_digest(cookie), _digest(self.cookie_value))


def read_token(
    stream: StreamSettings, token: str | None = None, token_file: str | None = None
) -> str | None:
    """The token from, first found first: ``token_file``, ``token`` (the command line),
    ``$CALIBSTREAM_DASHBOARD_TOKEN``, ``[stream] dashboard_token``."""
    if token_file:
        try:
            return Path(token_file).read_text().strip() or None
        except OSError as exc:
            raise GuardError(f"cannot read the dashboard token file {token_file}: {exc}") from None
    return token or os.environ.get(TOKEN_ENV) or stream.dashboard_token or None


def make_guard(stream: StreamSettings, host: str, token: str | None) -> Guard:
    """The guard of a dashboard bound to ``host``; raises :class:`GuardError` when a token
    is needed (``host`` is not loopback, or ``dashboard_require_token``) and missing or short."""
    needed = stream.dashboard_require_token or not is_loopback(host)
    if needed and not token:
        where = "on loopback" if is_loopback(host) else f"on {host or 'all addresses'}"
        raise GuardError(
            f"refusing to serve the dashboard {where} without a token: set "
            f"${TOKEN_ENV}, --token-file, or [stream] dashboard_token"
        )
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise GuardError(f"the dashboard token is too short (at least {MIN_TOKEN_LENGTH} chars)")
    listed = stream.dashboard_hosts
    listed = [listed] if isinstance(listed, str) else list(listed)
    extra: Iterable[str] = [*listed, *os.environ.get(HOSTS_ENV, "").split(",")]
    names = {*LOOPBACK_NAMES, *(h.strip().lower().strip("[]") for h in extra)}
    if host not in WILDCARDS:
        names.add(host.lower().strip("[]"))
    return Guard(frozenset(n.rstrip(".") for n in names if n), token or None)


def _unauthorized() -> web.Response:
    return web.Response(
        status=401,
        text="a token is needed: Authorization: Bearer <token>, or open /?token=<token> once\n",
        headers={"WWW-Authenticate": 'Bearer realm="calibstream"'},
    )


def _with_cookie(request: web.Request, guard: Guard) -> web.Response:
    """Set the cookie and send the browser to the same URL without the token."""
    location = request.rel_url.without_query_params("token")
    response = web.Response(status=303, headers={"Location": str(location)})
    response.set_cookie(
        COOKIE,
        guard.cookie_value,
        max_age=COOKIE_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


def guard_middleware(
    guard: Guard,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The aiohttp middleware: the Host check, then the token."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not guard.host_allowed(request.headers.get("Host")):
            return web.Response(status=421, text="this dashboard does not answer for that Host\n")
        if guard.token is None:
            return await handler(request)
        supplied = request.query.get("token")
        if supplied is not None:
            if request.method == "GET" and guard.token_matches(supplied):
                return _with_cookie(request, guard)
            return _unauthorized()
        if not guard.authorized(request):
            return _unauthorized()
        return await handler(request)

    return check
