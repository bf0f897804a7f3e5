"""Redis for tests and the demo: the system's ``redis-server`` on a loopback port."""

from __future__ import annotations

import os
import shutil

from harness.processes import HOST, LoopbackServer, ServiceUnavailable
from streams.kafka_admin import port_open


def redis_server_binary() -> str:
    """``$CALIBSTREAM_REDIS_SERVER`` or ``redis-server`` on PATH."""
    binary = os.environ.get("CALIBSTREAM_REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        raise ServiceUnavailable(
            "redis-server is not installed (apt-get install redis-server, "
            "or name one in $CALIBSTREAM_REDIS_SERVER)"
        )
    return binary


def redis_ping(url: str, timeout: float = 1.0) -> bool:
    """True when the Redis at ``url`` answers PING within ``timeout`` seconds."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class RedisServer(LoopbackServer):
    """``redis-server`` on a loopback port, without persistence (a cache and read model only)."""

    name = "redis"
    find_binary = staticmethod(redis_server_binary)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            "",
        ]

    def _wait_ready(self, timeout: float) -> None:
        self._poll_ready(
            lambda: port_open(HOST, self.port) and redis_ping(self.url, 1.0),
            f"redis-server on port {self.port}",
            timeout,
            0.02,
        )
