"""How big an event may be, and the settings that must agree on it.

``[stream] max_message_bytes`` (8 MiB by default) bounds every record the service sends:

* a failure event or a dead letter keeps at most the first ``INPUT_PREFIX_BYTES`` of its
  input, with the input's length, SHA-256, topic, partition and offset
  (:func:`streams.events.failure_event`, :func:`streams.events.dead_letter_event`);
* an event whose encoding would pass :func:`claim_threshold` leaves its columns in a claim
  file under the output root and carries its URI and digest
  (:func:`streams.events.encode_event`);
* what is still over :func:`max_event_bytes` then is an :class:`EventTooLargeError`, a
  failure of the exposure, never a producer that cannot send.

The producer's largest request, the consumers' fetch size and every topic's
``max.message.bytes`` must agree with it: :func:`check_limits`, at a worker's start.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from calibstream.errors import CalibstreamError, ConfigError
from streams.kafka_admin import run_sync
from streams.settings import StreamSettings
from streams.topology import CALIBRATE, Topology

log = logging.getLogger("calibstream.limits")

#: Bytes of a failure event's or dead letter's input kept in it (the input stays in its topic).
INPUT_PREFIX_BYTES = 64 * 1024
#: Bytes of an input's key kept in a failure event or dead letter.
KEY_PREFIX_BYTES = 1024
#: UTF-8 bytes of each text (reason, where, URI, band) kept in a failure event or dead letter.
TEXT_BYTES = 4096
#: The smallest ``max_message_bytes`` that holds any failure event or dead letter (~82 KiB).
MIN_MESSAGE_BYTES = 128 * 1024
#: Room a record takes beside its value (Kafka's record and batch framing, the key).
HEADROOM_BYTES = 1024
#: The claim-check threshold is ``max_message_bytes`` over this, unless configured.
CLAIM_FRACTION = 4


class LimitsError(ConfigError):
    """Settings (or a topic) that disagree on how big a record may be."""

    kind = "limits"


class EventTooLargeError(CalibstreamError):
    """An event still too big to send once its columns are claim-checked."""

    kind = "too_large"


def max_event_bytes(stream: StreamSettings) -> int:
    """The largest encoded event the service sends (its record then fits the producer)."""
    return stream.max_message_bytes - HEADROOM_BYTES


def claim_threshold(stream: StreamSettings) -> int:
    """Encoded events larger than this leave their columns in a claim file:
    ``[stream] claim_threshold_bytes`` when set, else ``max_message_bytes // 4``."""
    configured = stream.claim_threshold_bytes
    return stream.max_message_bytes // CLAIM_FRACTION if configured is None else int(configured)


def client_settings(stream: StreamSettings) -> dict[str, int]:
    """The faust app's record-size settings (``streams.app`` builds the app with these)."""
    return {
        "producer_max_request_size": stream.max_message_bytes,
        "consumer_max_fetch_size": stream.max_message_bytes,
    }


def check_settings(stream: StreamSettings, clients: Mapping[str, int] | None = None) -> None:
    """The configuration alone: events fit the producer, the producer fits the consumer."""
    clients = client_settings(stream) if clients is None else clients
    size, threshold = stream.max_message_bytes, claim_threshold(stream)
    producer, consumer = clients["producer_max_request_size"], clients["consumer_max_fetch_size"]
    if size < MIN_MESSAGE_BYTES:
        _fail("max_message_bytes", f"{size} is below {MIN_MESSAGE_BYTES}, a failure event's room")
    if not 0 < threshold <= max_event_bytes(stream):
        _fail("claim_threshold_bytes", f"{threshold} is not in 1..{max_event_bytes(stream)}")
    if producer < size:
        _fail(
            "producer_max_request_size",
            f"{producer} is below max_message_bytes {size}: the producer refuses events the "
            "service lets through",
        )
    if consumer < producer:
        _fail(
            "consumer_max_fetch_size",
            f"{consumer} is below producer_max_request_size {producer}: consumers cannot "
            "fetch what is sent",
        )


def check_topics(
    stream: StreamSettings,
    topics: Mapping[str, int | None],
    clients: Mapping[str, int] | None = None,
) -> None:
    """Every topic's ``max.message.bytes`` (None: not described) between the producer's
    largest request and the consumers' fetch size."""
    clients = client_settings(stream) if clients is None else clients
    producer, consumer = clients["producer_max_request_size"], clients["consumer_max_fetch_size"]
    for topic, limit in topics.items():
        if limit is None:
            log.warning("topic %s: the broker does not report max.message.bytes", topic)
        elif limit < producer:
            _fail(
                f"topic {topic} max.message.bytes",
                f"{limit} is below producer_max_request_size {producer} "
                "([stream] max_message_bytes): the broker would refuse events",
            )
        elif limit > consumer:
            _fail(
                f"topic {topic} max.message.bytes",
                f"{limit} is above consumer_max_fetch_size {consumer} "
                "([stream] max_message_bytes): consumers may not fetch what it holds",
            )


def check_limits(
    stream: StreamSettings,
    topology: Topology = CALIBRATE,
    *,
    clients: Mapping[str, int] | None = None,
    topics: Mapping[str, int | None] | None = None,
) -> dict[str, int | None]:
    """Check that the producer, the consumers and the topics (``max.message.bytes`` as the
    broker describes it, unless ``topics`` is given) agree; a :class:`LimitsError` names
    the first setting that does not, in one line. Returns the topics' limits."""
    check_settings(stream, clients)
    if topics is None:
        names = [stream.topic(role) for role in topology.roles]
        topics = run_sync(lambda: topic_limits(stream.bootstrap, names))
    check_topics(stream, topics, clients)
    return dict(topics)


async def topic_limits(
    bootstrap: str, topics: list[str], timeout: float = 10.0
) -> dict[str, int | None]:
    """``{topic: max.message.bytes}`` as the broker describes it (None when it does not say:
    Tansu reports only the values set on the topic). A topic it cannot describe raises."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout * 1000),
        client_id="calibstream-limits",
    )
    await admin.start()
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        responses = await admin.describe_configs(resources)
    finally:
        await admin.close()
    found: dict[str, int | None] = dict.fromkeys(topics)
    for response in responses:
        for code, message, _type, name, entries in response.resources:
            if code != 0:
                _fail(f"topic {name}", f"the broker cannot describe it ({message or code})")
            for entry in entries:
                if entry[0] == "max.message.bytes" and entry[1] is not None:
                    found[name] = int(entry[1])
    return found


def _fail(setting: str, reason: str) -> None:
    raise LimitsError(reason, where=setting)
