"""One Redis connection that never stops the service: the base of the shard cache and the
read model.

Redis is an accelerator, never the only copy of anything: the truth is the output folders on
disk and the Kafka topics. So every call degrades when Redis is down (reads give a default,
writes are dropped), one warning is logged per outage, and Redis is left alone for a back-off
period instead of paying a socket timeout on every call. Also the strict JSON the rows are
stored in (:func:`json_text`).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:  # imported when a client is made: `calibstream calibrate` never loads redis
    import redis

__all__ = ["COUNTERS", "RedisClient", "json_text", "loads_row"]

log = logging.getLogger("calibstream.redis")

T = TypeVar("T")

#: The hash (under the prefix) of the throughput counters every process adds to: the read
#: model's counters, and the shard cache's ``cache:hit`` / ``cache:miss``.
COUNTERS = "counters"


# Errors that mean "Redis is not reachable or not usable now": an outage, with back-off.
# (BusyLoadingError and AuthenticationError are ConnectionError subclasses in redis-py.)
def _outage_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.ConnectionError, redis.TimeoutError, OSError)


def _redact(url: str | None) -> str | None:
    """The URL without its password (it ends up in logs and on the dashboard)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars and arrays as Python values, NaN/inf as None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    for attr in ("item", "tolist"):  # numpy scalar / array
        method = getattr(value, attr, None)
        if callable(method):
            try:
                return _plain(method())
            except (TypeError, ValueError):
                break
    return str(value)


def json_text(value: Any) -> str:
    """Strict, compact JSON of ``value`` (numpy values as Python ones, NaN/inf as null): the
    read model's rows and the dashboard's answers."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def loads_row(raw: bytes | str | None) -> dict | None:
    """A stored JSON object, or None (absent, or not an object)."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class RedisClient:
    """A Redis connection whose calls never raise: failures are counted, logged once per
    outage on ``calibstream.redis`` and turned into the caller's default.

    ``url=None`` disables it for good (state ``"disabled"``); so does a malformed URL.
    """

    #: What this connection is for, in its log messages.
    role = "Redis"

    def __init__(
        self,
        url: str | None,
        *,
        prefix: str = "calibstream",
        socket_timeout: float = 0.5,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.socket_timeout = socket_timeout
        self.retry_after = retry_after
        self._clock = clock
        self._lock = threading.Lock()
        self._state = "disabled" if url is None else "up"
        self._retry_at = 0.0
        self._down_since = 0.0
        self._errors = 0
        self._last_error: str | None = None
        self._skipped = 0
        self._client: redis.Redis | None = None
        if url is None:
            return
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        try:
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                # redis-py 6+ retries 3 times with back-off by default: one immediate retry on
                # a dropped connection only, none on timeouts (an outage costs one timeout).
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            )
        except (ValueError, redis.RedisError) as exc:  # a malformed URL: disabled, said loudly
            log.warning(
                "%s URL %s is not usable (%s): running without Redis", self.role, _redact(url), exc
            )
            self._state = "disabled"
            self._last_error = f"{type(exc).__name__}: {exc}"
            return
        self._connected(self._client)
        self.ping()

    def _connected(self, client: redis.Redis) -> None:
        """Called once the client exists, before the first ping (e.g. to register scripts)."""

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> str:
        """``"up"``, ``"down"`` (an outage: calls skipped until the back-off ends) or
        ``"disabled"`` (no URL, or closed)."""
        return self._state

    def status(self) -> dict:
        """State and counts, for logs and the dashboard (the URL without its password)."""
        with self._lock:
            return {
                "state": self._state,
                "url": _redact(self.url),
                "errors": self._errors,
                "last_error": self._last_error,
                "skipped": self._skipped,
            }

    def ping(self) -> bool:
        """True when Redis answers now (a probe; skipped during a back-off)."""
        return bool(self._call(lambda r: r.ping(), False))

    def close(self) -> None:
        """Drop the connections; the object is ``"disabled"`` from now on."""
        with self._lock:
            client, self._client = self._client, None
            self._state = "disabled"
        if client is not None:
            try:
                client.close()
            except Exception:  # closing must not raise either
                log.debug("closing the Redis client failed", exc_info=True)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def count(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to the shared throughput counter ``name`` (``"<kind>:<label>"``)."""
        self._call(lambda r: r.hincrby(self._key(COUNTERS), name, amount), None)

    # ------------------------------------------------------------------ calls

    def _call(self, fn: Callable[[redis.Redis], T], default: T) -> T:
        """``fn(client)``, or ``default`` when disabled, backing off, or failing."""
        with self._lock:
            client = self._client
            if client is None:
                return default
            if self._state == "down" and self._clock() < self._retry_at:
                self._skipped += 1
                return default
        import redis

        try:
            result = fn(client)
        except _outage_errors() as exc:
            self._outage(client, exc)
            return default
        except redis.RedisError as exc:  # Redis answered with an error (OOM, WRONGTYPE...)
            self._fault(exc)
            return default
        self._up()
        return result

    def _outage(self, client: redis.Redis, exc: BaseException) -> None:
        now = self._clock()
        with self._lock:
            self._errors += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._retry_at = now + self.retry_after
            first = self._state == "up"
            if first:
                self._state = "down"
                self._down_since = now
        if first:
            log.warning(
                "%s at %s is unreachable (%s): carrying on without it "
                "(cache misses, dropped writes), retrying every %g s",
                self.role,
                _redact(self.url),
                self._last_error,
                self.retry_after,
            )
        try:  # pooled sockets are dead now: the next try opens fresh ones
            client.connection_pool.disconnect()
        except Exception:
            log.debug("disconnecting the Redis pool failed", exc_info=True)

    def _fault(self, exc: BaseException) -> None:
        with self._lock:
            self._errors += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
        log.debug("Redis command failed: %s", exc)

    def _up(self) -> None:
        if self._state != "down":
            return
        with self._lock:
            if self._state != "down":
                return
            self._state = "up"
            outage = self._clock() - self._down_since
        log.info("%s at %s is back after %.1f s", self.role, _redact(self.url), outage)
