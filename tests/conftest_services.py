"""Pytest fixtures for the real services of ``streams.services``; import them in conftest.py:

    from conftest_services import *  # noqa: F403 (the fixtures below)

- ``tansu``: the embedded broker (a started :class:`~streams.services.TansuBroker`), one per run.
- ``kafka``: Apache Kafka 4.x in KRaft mode (a started :class:`~streams.services.KafkaBroker`),
  one per run. Its jars come from the cache; when they are not there yet, they are fetched once
  with Maven (unless ``CALIBSTREAM_KAFKA_FETCH=0``).
- ``kafka_factory()``: a private Apache Kafka broker, for tests that kill or restart it.
- ``redis_url``: ``$REDIS_URL`` when set (it must answer PING), else a redis-server started here.
- ``redis_factory()``: a private, started :class:`~streams.services.RedisServer` (stop it at will).

What cannot run on this machine skips, with the reason in the ``-ra`` summary. One instance of
each session service is shared however many modules import these fixtures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from streams.services import (
    KafkaBroker,
    RedisServer,
    ServiceUnavailable,
    TansuBroker,
    redis_ping,
)

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


@pytest.fixture(scope="session")
def kafka_factory() -> Iterator[Callable[..., KafkaBroker]]:
    """``kafka_factory(**KafkaBroker kwargs)``: a new started broker, closed at the end."""
    made: list[KafkaBroker] = []

    def make(**kwargs: Any) -> KafkaBroker:
        try:
            broker = _kafka(**kwargs)
        except ServiceUnavailable as exc:
            pytest.skip(f"kafka: {exc}")
        made.append(broker)
        return broker.start()

    yield make
    for broker in made:
        broker.close()


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
    made: list[RedisServer] = []

    def make(**kwargs: Any) -> RedisServer:
        try:
            server = RedisServer(**kwargs)
        except ServiceUnavailable as exc:
            pytest.skip(f"redis: {exc}")
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.close()


__all__ = ["kafka", "kafka_factory", "redis_factory", "redis_url", "tansu"]
