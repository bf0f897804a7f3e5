"""Kafka administration the service needs: topics created with their partition counts, a
broker's readiness, a topic's partitions, whether a service (the broker, Redis) is reachable
at all, and coroutines run from synchronous code.

Production code (worker, submit, replay, lag) and the test harness both use it; it starts
nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from calibstream.errors import CalibstreamError

T = TypeVar("T")


class ServiceError(RuntimeError):
    """The service was there but failed to start or to answer; the message ends with its log."""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ServiceUnreachable(CalibstreamError):
    """A service a command needs (the broker, Redis) accepts no connection: a fault of the
    machine or of the settings, not of the data; the CLI says so in one line, exit code 1."""

    kind = "unreachable"
    exit_code = 1


def require_reachable(
    what: str, url: str, addresses: list[tuple[str, int]], setting: str, timeout: float = 2.0
) -> None:
    """Return when one of ``addresses`` accepts a TCP connection within ``timeout`` seconds
    (as a client bootstraps from any); else raise :class:`ServiceUnreachable` naming
    ``what``, its ``url`` and the ``setting`` it comes from."""
    reasons = []
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except socket.gaierror:
            reason = "unknown host"
        except TimeoutError:
            reason = f"no answer in {timeout:g} s"
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
        reasons.append(f"{host}:{port} {reason}" if len(addresses) > 1 else reason)
    why = "; ".join(reasons)
    raise ServiceUnreachable(f"cannot reach {what} at {url} ({why}): check {setting}")


def host_ports(bootstrap: str, default_port: int) -> list[tuple[str, int]]:
    """``[(host, port), ...]`` of ``host[:port],...`` (``[v6]:port`` too)."""
    found = []
    for part in filter(None, (p.strip() for p in bootstrap.split(","))):
        host, colon, port = part.rpartition(":")
        if not colon or "]" in port:  # no port (an IPv6 address without one is bracketed)
            host, port = part, str(default_port)
        if not port.isdigit():
            raise ServiceUnreachable(f"not a host:port address: {part!r}")
        found.append((host.strip("[]"), int(port)))
    return found


def require_broker(broker: str, bootstrap: str, setting: str, timeout: float = 2.0) -> None:
    """The broker at ``bootstrap`` (``host:port,...``) accepts connections, or one line why:
    before faust or a client starts, which would retry (and log) on and on."""
    require_reachable("the broker", broker, host_ports(bootstrap, 9092), setting, timeout)


def require_redis(url: str | None, setting: str, timeout: float = 2.0) -> None:
    """The Redis at ``url`` accepts connections (a ``unix://`` socket is not checked)."""
    if url is None:
        raise ServiceUnreachable(f"no Redis configured: set {setting}")
    try:
        parts = urlsplit(url)
        address = (parts.hostname or "localhost", parts.port or 6379)
    except ValueError as exc:
        raise ServiceUnreachable(f"not a Redis URL ({exc}): check {setting}") from None
    if parts.scheme in ("redis", "rediss"):
        shown = f"{parts.scheme}://{address[0]}:{address[1]}{parts.path}"  # no password
        require_reachable("Redis", shown, [address], setting, timeout)


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, even inside a running event loop
    (then in a helper thread with its own loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


async def akafka_metadata(bootstrap: str, timeout: float = 5.0) -> dict[str, Any]:
    """One metadata round trip: ``{"brokers": [...], "cluster_id": ..., "controller_id": ...}``.

    Raises when the broker does not answer within ``timeout`` seconds."""
    from aiokafka.admin import AIOKafkaAdminClient

    ms = max(int(timeout * 1000), 500)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=ms, client_id="calibstream-probe"
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            return await admin.describe_cluster()
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def await_kafka(
    bootstrap: str, timeout: float = 30.0, alive: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Wait until the broker at ``bootstrap`` accepts connections and lists at least one broker
    in its metadata (a KRaft broker lists itself only once unfenced). Returns the metadata.

    ``alive`` (optional) is polled; when it turns false the wait ends with :class:`ServiceError`.
    """
    host, _, port = bootstrap.rpartition(":")
    deadline = time.monotonic() + timeout
    last: Exception | str = "no answer"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise ServiceError(f"the broker process at {bootstrap} exited while starting")
        # A silent TCP probe first: aiokafka logs an error for every refused connection.
        if port_open(host, int(port)):
            try:
                meta = await akafka_metadata(
                    bootstrap, min(5.0, max(deadline - time.monotonic(), 0.5))
                )
                if meta.get("brokers"):
                    return meta
                last = "metadata lists no broker yet"
            except Exception as exc:
                last = exc
        else:
            last = "connection refused"
        await asyncio.sleep(0.1)
    raise ServiceError(f"Kafka at {bootstrap} not ready after {timeout:.0f} s: {last}")


def wait_for_kafka(
    bootstrap: str, timeout: float = 30.0, alive: Callable[[], bool] | None = None
) -> dict[str, Any]:
    """Synchronous :func:`await_kafka`."""
    return run_sync(lambda: await_kafka(bootstrap, timeout, alive))


async def acreate_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    exist_ok: bool = True,
    timeout: float = 30.0,
) -> None:
    """Create topics ``{name: partition count}`` and wait until every partition has a leader.

    A topic that exists already is accepted when ``exist_ok`` and its partition count is the one
    asked for; a different count raises ``ValueError`` (it was probably auto-created).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    configs = configs or {}
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout * 1000),
        client_id="calibstream-admin",
    )
    await admin.start()
    try:
        new = [
            NewTopic(name, n, replication_factor, topic_configs=dict(configs.get(name, {})))
            for name, n in topics.items()
        ]
        response = await admin.create_topics(new, timeout_ms=int(timeout * 1000))
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            if code == 0:
                continue
            error = for_code(code)
            if error is TopicAlreadyExistsError and exist_ok:
                continue
            message = entry[2] if len(entry) > 2 and entry[2] else error.__name__
            raise ServiceError(f"creating topic {name!r} failed: {message}")
        deadline = time.monotonic() + timeout
        while True:
            described = {d["topic"]: d for d in await admin.describe_topics(list(topics))}
            pending = []
            for name, n in topics.items():
                d = described.get(name)
                if d is None or d["error_code"] != 0:
                    pending.append(name)
                    continue
                parts = d["partitions"]
                if len(parts) != n:
                    raise ValueError(f"topic {name!r} has {len(parts)} partitions, not {n}")
                if any(p["leader"] < 0 for p in parts):
                    pending.append(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"topics {pending} have no leader after {timeout:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def topic_partitions(bootstrap: str, topic: str, timeout: float = 10.0) -> list[int]:
    """The partition ids of ``topic`` (empty when it does not exist), from the broker's
    metadata. (A consumer's own metadata may not name the topic yet: Apache Kafka lists no
    topic in a client's bootstrap metadata, and ``consumer.topics()`` does not update it.)"""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout * 1000),
        client_id="calibstream-admin",
    )
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] != 0:
        return []
    return sorted(p["partition"] for p in described["partitions"])


def create_topics(bootstrap: str, topics: Mapping[str, int], **kwargs: Any) -> None:
    """Synchronous :func:`acreate_topics`."""
    run_sync(lambda: acreate_topics(bootstrap, topics, **kwargs))
