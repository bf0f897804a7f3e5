"""The harness's command line: ``python -m harness.cli fetch-kafka | status | run SERVICE``.

- ``fetch-kafka``: fetch the Apache Kafka jars from Maven Central into the cache, once (at once
  when already there); CI runs it before the tests.
- ``status``: say which services can run on this machine (and why not).
- ``run SERVICE``: run Tansu, Apache Kafka or Redis in the foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time
from collections.abc import Callable

from harness.kafka import (
    KAFKA_VERSION,
    KafkaBroker,
    fetch_kafka,
    java_binary,
    kafka_dir,
    kafka_libs,
)
from harness.processes import ServiceUnavailable
from harness.redis_server import RedisServer, redis_server_binary
from harness.tansu import TansuBroker, tansu_binary


def _status() -> int:
    def check(label: str, fn: Callable[[], object]) -> None:
        try:
            print(f"{label:10s} {fn()}")
        except ServiceUnavailable as exc:
            print(f"{label:10s} unavailable: {exc}")

    check("tansu", tansu_binary)
    check("java", java_binary)
    check("kafka", lambda: kafka_libs() or f"not fetched ({kafka_dir()})")
    check("redis", redis_server_binary)
    print(f"{'kcat':10s} {shutil.which('kcat') or 'not installed (apt-get install kcat)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch-kafka", help="fetch the Apache Kafka jars into the cache, once")
    fetch.add_argument("--version", default=KAFKA_VERSION)
    sub.add_parser("status", help="say which services can run here")
    run = sub.add_parser("run", help="run one service in the foreground until Ctrl-C")
    run.add_argument("service", choices=["tansu", "kafka", "redis"])
    run.add_argument("--port", type=int)
    run.add_argument("--workdir", help="kept (Kafka: its data survives restarts)")
    args = parser.parse_args(argv)

    if args.command == "status":
        return _status()
    if args.command == "fetch-kafka":
        return _fetch_kafka(args.version)
    return _run(args.service, args.workdir, args.port)


def _fetch_kafka(version: str) -> int:
    t0 = time.monotonic()
    try:
        libs = fetch_kafka(version, quiet=False)
    except ServiceUnavailable as exc:
        print(f"fetch-kafka: {exc}", file=sys.stderr)
        return 2
    print(
        f"Apache Kafka {version}: {len(list(libs.glob('*.jar')))} jars in {libs} "
        f"({time.monotonic() - t0:.1f} s)"
    )
    return 0


def _run(name: str, workdir: str | None, port: int | None) -> int:
    cls = {"tansu": TansuBroker, "kafka": KafkaBroker, "redis": RedisServer}[name]
    try:
        service = cls(workdir, port=port)
    except ServiceUnavailable as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    with service:
        print(
            f"{name} ready in {service.started_in:.2f} s: {service.url} "
            f"(pid {service.pid}, log {service.log_path}); Ctrl-C stops it",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while service.running:
                time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
