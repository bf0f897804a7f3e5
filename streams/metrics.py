"""The Prometheus text endpoint's metrics, collected from the read model at each scrape.

The workers count into Redis (every worker and science process adds to the same counters
and histogram buckets), so one scrape of the dashboard sees the whole service, however
many workers run. Counters count events handled (a redelivered or replayed event counts
again, as work done); ``calibstream_exposures`` counts distinct exposures by status.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from streams.monitor import Monitor
from streams.readmodel import Histogram

__all__ = ["ServiceCollector", "metrics_text"]


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [
        ("+Inf" if bound == float("inf") else repr(bound), count)
        for bound, count in zip(histogram.bounds, histogram.cumulative, strict=True)
    ]


class ServiceCollector(Collector):
    """Reads the service's counters, histograms and lag when Prometheus scrapes."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        counters = self.monitor.counters()
        for kind, doc in (
            ("processed", "Events an agent's step handled successfully, by agent"),
            ("failed", "Events that became failure events, by the stage that failed"),
            ("deadletter", "Undecodable events sent to the dead-letter topic, by agent"),
        ):
            family = CounterMetricFamily(f"calibstream_events_{kind}", doc, labels=["stage"])
            for stage, value in sorted(counters.get(kind, {}).items()):
                family.add_metric([stage], value)
            yield family

        cache = counters.get("cache", {})
        for outcome, doc in (("hit", "hits"), ("miss", "misses")):
            yield CounterMetricFamily(
                f"calibstream_refcat_cache_{doc}",
                f"Reference-catalog shard reads from the Redis cache: {doc}",
                value=cache.get(outcome, 0),
            )

        exposures = GaugeMetricFamily(
            "calibstream_exposures",
            "Distinct exposures in the read model, by status",
            labels=["status"],
        )
        for status, count in sorted(self.monitor.readmodel.count_by_status().items()):
            exposures.add_metric([status], count)
        yield exposures

        histograms = self.monitor.histograms()
        stages = HistogramMetricFamily(
            "calibstream_stage_duration_seconds",
            "Duration of one agent's step on one event (science process wall time)",
            labels=["stage"],
        )
        for stage, histogram in sorted(histograms["stage_seconds"].items()):
            stages.add_metric([stage], _buckets(histogram), histogram.sum)
        yield stages

        latency = histograms["latency_seconds"].get("persisted")
        if latency is not None:
            yield HistogramMetricFamily(
                "calibstream_latency_seconds",
                "From the characterized-exposure event's submission to the persisted folder",
                buckets=_buckets(latency),
                sum_value=latency.sum,
            )

        lag = GaugeMetricFamily(
            "calibstream_consumer_lag",
            "Records the workers' group has not yet consumed, by topic and partition",
            labels=["topic", "partition"],
        )
        for row in self.monitor.lag.partitions:
            lag.add_metric([row.topic, str(row.partition)], row.lag)
        yield lag

        yield GaugeMetricFamily(
            "calibstream_redis_up",
            "1 when the dashboard reaches Redis (the read model), else 0",
            value=1 if self.monitor.readmodel.state == "up" else 0,
        )


def metrics_text(monitor: Monitor) -> bytes:
    """The Prometheus text exposition of the service's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(monitor))
    return generate_latest(registry)
