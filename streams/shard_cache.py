"""The reference-catalog shard cache in Redis (``calibstream.astrometry.refcat.ShardCache``).

A cache of the files in the refcat store: a miss, a flushed Redis, an eviction or an outage
only means the shard is read from its file. So it may live in a Redis of its own that evicts
(``[stream] cache_redis``; production: ``allkeys-lru``), apart from the read model's, which
must not. Every read is counted twice: per process in :meth:`status`, and for the whole
service in the shared counters (``cache:hit`` / ``cache:miss``) that the read model's
``counters()`` and the dashboard's /metrics read: those live in the read model's Redis
(``counters_url``), where nothing is evicted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from streams.redis_client import RedisClient

__all__ = ["RedisShardCache"]

_SKIPPED: Any = object()  # what _call gives when it did not ask Redis


class _Counters(RedisClient):
    role = "Redis read model (the shard cache's counters)"


class RedisShardCache(RedisClient):
    """Shards as bytes under ``<prefix>:shard:<key>``, kept ``shard_ttl_s`` seconds (None: no
    expiry). Never raises: an unavailable Redis is a miss that is not counted.

    ``counters_url``: the Redis of the shared counters (the read model's), when it is not
    ``url``; None: ``url``."""

    role = "Redis shard cache"

    def __init__(
        self,
        url: str | None,
        *,
        prefix: str = "calibstream",
        socket_timeout: float = 0.5,
        retry_after: float = 5.0,
        shard_ttl_s: int | None = 86400,
        clock: Callable[[], float] = time.monotonic,
        counters_url: str | None = None,
    ) -> None:
        self.shard_ttl_s = shard_ttl_s
        self._hits = 0
        self._misses = 0
        super().__init__(
            url,
            prefix=prefix,
            socket_timeout=socket_timeout,
            retry_after=retry_after,
            clock=clock,
        )
        self._counters: RedisClient = self
        if counters_url is not None and counters_url != url:
            self._counters = _Counters(
                counters_url,
                prefix=prefix,
                socket_timeout=socket_timeout,
                retry_after=retry_after,
                clock=clock,
            )

    def status(self) -> dict:
        """State and counts, with this process's cache hits and misses."""
        with self._lock:
            hits, misses = self._hits, self._misses
        return {**super().status(), "cache_hits": hits, "cache_misses": misses}

    def get(self, key: str) -> bytes | None:
        """A cached shard, or None (a miss, or Redis unavailable)."""
        value = self._call(lambda r: r.get(self._key("shard", key)), _SKIPPED)
        if value is _SKIPPED:
            return None
        with self._lock:
            if value is None:
                self._misses += 1
            else:
                self._hits += 1
        outcome = "cache:miss" if value is None else "cache:hit"  # for every process to see
        self._counters.count(outcome)
        return None if value is None else bytes(value)

    def close(self) -> None:
        if self._counters is not self:
            self._counters.close()
        super().close()

    def set(self, key: str, value: bytes) -> None:
        """Cache a shard for ``shard_ttl_s`` seconds (None: no expiry)."""
        self._call(lambda r: r.set(self._key("shard", key), value, ex=self.shard_ttl_s), None)
