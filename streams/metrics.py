"""The Prometheus text endpoint's metrics, collected from the read model at each scrape.

The workers count into Redis (every worker and science process adds to the same counters
and histogram buckets), so one scrape of the dashboard sees the whole service, however
many workers run. Counters count events handled (a redelivered or replayed event counts
again, as work done); ``calibstream_exposures`` counts distinct exposures by status,
``calibstream_visits`` distinct visits by completeness.
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

from calibstream.verdicts import STATUSES
from streams.monitor import Monitor
from streams.night import FIGURES, gauge_values, latest_by_band
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
        """Every metric family, read from the monitor now (one scrape)."""
        counters = self.monitor.counters()
        yield from _event_counters(counters)
        yield from _cache_counters(counters.get("cache", {}))
        yield _by_stage_gauge(
            "calibstream_events_retrying",
            "Events an agent is retrying now, waiting out a fault of the machine",
            counters.get("waiting", {}),
        )
        yield _by_stage_gauge(
            "calibstream_events_parked_now",
            "Events parked and not redriven yet (calibstream redrive), by agent",
            counters.get("parked_now", {}),
        )
        yield _exposures_gauge(self.monitor.readmodel.count_by_status())
        yield _visits_gauge(self.monitor.readmodel.count_visits())
        yield from _night_gauges(latest_by_band(self.monitor.readmodel))
        histograms = self.monitor.histograms()
        yield _stage_histogram(histograms["stage_seconds"])
        latency = histograms["latency_seconds"].get("persisted")
        if latency is not None:
            yield _latency_histogram(latency)
        yield _lag_gauge(self.monitor.lag.partitions)
        yield GaugeMetricFamily(
            "calibstream_redis_up",
            "1 when the dashboard reaches Redis (the read model), else 0",
            value=1 if self.monitor.readmodel.state == "up" else 0,
        )


def _event_counters(counters: dict[str, dict[str, int]]) -> Iterator[Metric]:
    """Events processed, failed and dead-lettered, by stage."""
    for kind, doc in (
        ("processed", "Events an agent's step handled successfully, by agent"),
        ("failed", "Events that became failure events, by the stage that failed"),
        ("deadletter", "Undecodable events sent to the dead-letter topic, by agent"),
        ("retried", "Retries of a step stopped by a fault of the machine, by agent"),
        ("parked", "Events parked after their last retry (calibstream redrive), by agent"),
    ):
        family = CounterMetricFamily(f"calibstream_events_{kind}", doc, labels=["stage"])
        for stage, value in sorted(counters.get(kind, {}).items()):
            family.add_metric([stage], value)
        yield family


def _by_stage_gauge(name: str, doc: str, values: dict[str, int]) -> Metric:
    """A gauge kept as a Redis counter that goes up and down, by agent."""
    gauge = GaugeMetricFamily(name, doc, labels=["stage"])
    for stage, value in sorted(values.items()):
        gauge.add_metric([stage], max(0, value))
    return gauge


def _cache_counters(cache: dict[str, int]) -> Iterator[Metric]:
    """Reference-catalog shard cache hits and misses."""
    for outcome, doc in (("hit", "hits"), ("miss", "misses")):
        yield CounterMetricFamily(
            f"calibstream_refcat_cache_{doc}",
            f"Reference-catalog shard reads from the Redis cache: {doc}",
            value=cache.get(outcome, 0),
        )


def _exposures_gauge(count_by_status: dict[str, int]) -> Metric:
    """Distinct exposures by status (ok, warning, partial, failed)."""
    exposures = GaugeMetricFamily(
        "calibstream_exposures",
        "Distinct exposures in the read model, by status",
        labels=["status"],
    )
    for status in STATUSES:
        exposures.add_metric([status], count_by_status.get(status, 0))
    return exposures


def _visits_gauge(count_by_completeness: dict[str, int]) -> Metric:
    """Distinct visits by completeness: every expected detector reported, or not (yet)."""
    visits = GaugeMetricFamily(
        "calibstream_visits",
        "Distinct visits in the read model, by completeness (complete, incomplete)",
        labels=["status"],
    )
    for status, count in sorted(count_by_completeness.items()):
        visits.add_metric([status], count)
    return visits


def _night_gauges(latest: dict) -> Iterator[Metric]:
    """The latest seeing, depth and effective time, by band."""
    for name, (_, metric, doc) in FIGURES.items():
        gauge = GaugeMetricFamily(metric, doc, labels=["band"])
        for band, value in gauge_values(latest, name).items():
            gauge.add_metric([band], value)
        yield gauge


def _stage_histogram(stage_seconds: dict[str, Histogram]) -> Metric:
    """Each agent step's duration per event, by stage."""
    stages = HistogramMetricFamily(
        "calibstream_stage_duration_seconds",
        "Duration of one agent's step on one event (science process wall time)",
        labels=["stage"],
    )
    for stage, histogram in sorted(stage_seconds.items()):
        stages.add_metric([stage], _buckets(histogram), histogram.sum)
    return stages


def _latency_histogram(latency: Histogram) -> Metric:
    """Submission-to-persisted latency."""
    return HistogramMetricFamily(
        "calibstream_latency_seconds",
        "From the characterized-exposure event's submission to the persisted folder",
        buckets=_buckets(latency),
        sum_value=latency.sum,
    )


def _lag_gauge(partitions) -> Metric:
    """The workers' group lag, by topic and partition."""
    lag = GaugeMetricFamily(
        "calibstream_consumer_lag",
        "Records the workers' group has not yet consumed, by topic and partition",
        labels=["topic", "partition"],
    )
    for row in partitions:
        lag.add_metric([row.topic, str(row.partition)], row.lag)
    return lag


def metrics_text(monitor: Monitor) -> bytes:
    """The Prometheus text exposition of the service's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(monitor))
    return generate_latest(registry)
