"""Pytest fixtures for the real services of the ``harness``; import them in conftest.py:

    from conftest_services import *  # noqa: F403 (the fixtures below)

- ``tansu``: the embedded broker (a started :class:`~harness.tansu.TansuBroker`), one per run.
- ``kafka``: Apache Kafka 4.x in KRaft mode (a started :class:`~harness.kafka.KafkaBroker`),
  one per run. Its jars come from the cache; when they are not there yet, they are fetched once
  with Maven (unless ``CALIBSTREAM_KAFKA_FETCH=0``).
- ``kafka_factory()``: a private Apache Kafka broker, for tests that kill or restart it.
- ``redis_url``: ``$REDIS_URL`` when set (it must answer PING), else a redis-server started here.
- ``redis_factory()``: a private, started :class:`~harness.redis_server.RedisServer` (stop it
  at will).
- ``read_model``: a :class:`~streams.readmodel.RedisReadModel` on ``redis_url`` under its own
  key prefix, cleaned up afterwards.

What cannot run on this machine skips, with the reason in the ``-ra`` summary. One instance of
each session service is shared however many modules import these fixtures.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from harness.kafka import KafkaBroker
from harness.processes import ServiceUnavailable
from harness.redis_server import RedisServer, redis_ping
from harness.tansu import TansuBroker
from streams.readmodel import RedisReadModel

# Shared across every module that imports these fixtures (pytest would otherwise make one
# session fixture per importing module): name -> started service, or the reason it can't run.
_SHARED: dict[str, Any] = {}
_UNAVAILABLE: dict[str, str] = {}


def _shared(name: str, make: Callable[[], Any]) -> Any:
    if name in _UNAVAILABLE:
        pytest.skip(_UNAVAILABLE[name])
    service = _SHARED.get(name)
    if service is None:
        try:
            service = make()
        except ServiceUnavailable as exc:
            _UNAVAILABLE[name] = f"{name}: {exc}"
            pytest.skip(_UNAVAILABLE[name])
        _SHARED[name] = service
    if not service.running:  # first use, or a test stopped it: same ports, same data
        service.start()
    return service


def _close(name: str) -> None:
    service = _SHARED.pop(name, None)
    if service is not None:
        service.close()


def _kafka(**kwargs: Any) -> KafkaBroker:
    fetch = os.environ.get("CALIBSTREAM_KAFKA_FETCH", "1") != "0"
    if "kafka-jars" in _UNAVAILABLE:
        raise ServiceUnavailable(_UNAVAILABLE["kafka-jars"])
    try:
        return KafkaBroker(fetch=fetch, **kwargs)
    except ServiceUnavailable as exc:
        _UNAVAILABLE["kafka-jars"] = str(exc)  # don't try Maven again in this run
        raise


@pytest.fixture(scope="session")
def tansu() -> Iterator[TansuBroker]:
    """The embedded broker: ``tansu.bootstrap`` (aiokafka), ``tansu.url`` (faust)."""
    yield _shared("tansu", TansuBroker)
    _close("tansu")


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    """Apache Kafka (KRaft): ``kafka.bootstrap``, ``kafka.url``; kill/restart keep its data."""
    yield _shared("kafka", _kafka)
    _close("kafka")


def _factory(name: str, make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """``factory(**kwargs)``: a new started service made by ``make``, closed at the end."""
    made: list[Any] = []

    def start(**kwargs: Any) -> Any:
        try:
            service = make(**kwargs)
        except ServiceUnavailable as exc:
            pytest.skip(f"{name}: {exc}")
        made.append(service)
        return service.start()

    yield start
    for service in made:
        service.close()


@pytest.fixture(scope="session")
def kafka_factory() -> Iterator[Callable[..., KafkaBroker]]:
    """``kafka_factory(**KafkaBroker kwargs)``: a new started broker, closed at the end."""
    yield from _factory("kafka", _kafka)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://host:port/db`` of a Redis that answers PING."""
    url = os.environ.get("REDIS_URL")
    if url:
        if not redis_ping(url, 2.0):
            pytest.skip(f"redis: REDIS_URL={url} does not answer PING")
        yield url
        return
    yield _shared("redis", RedisServer).url
    _close("redis")


@pytest.fixture(scope="session")
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    """``redis_factory(**RedisServer kwargs)``: a new started redis-server, closed at the end."""
    yield from _factory("redis", RedisServer)


def fresh_prefix() -> str:
    """A Redis key prefix of a test's own."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def read_model(redis_url: str) -> Iterator[RedisReadModel]:
    """A read model on the session Redis under its own prefix; its keys deleted afterwards."""
    prefix = fresh_prefix()
    model = RedisReadModel(redis_url, prefix=prefix)
    yield model
    model.close()
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


__all__ = [
    "kafka",
    "kafka_factory",
    "read_model",
    "redis_factory",
    "redis_url",
    "tansu",
]
