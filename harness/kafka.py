"""Apache Kafka 4.x for tests: KRaft combined mode (broker and controller in one JVM) on
loopback ports, its jars fetched from Maven Central once into a cache
(:func:`fetch_kafka`, or ``python -m harness.cli fetch-kafka``)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.processes import HOST, ServiceProcess, ServiceUnavailable, free_port
from streams.kafka_admin import ServiceError, wait_for_kafka

KAFKA_VERSION = os.environ.get("CALIBSTREAM_KAFKA_VERSION", "4.1.1")
"""The Apache Kafka release the harness fetches and runs (Scala 2.13 build)."""

LOG4J_VERSION = "2.24.3"  # the log4j2 that Kafka 4.1 is built with; its slf4j binding is added
KAFKA_MAIN = "kafka.Kafka"  # what bin/kafka-server-start.sh runs
KAFKA_STORAGE_TOOL = "kafka.tools.StorageTool"  # what bin/kafka-storage.sh runs (format)
JVM_OPTIONS = ("-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")
"""Small and quick to start (C1 only saves ~0.5 s a start); pass ``jvm_options=()`` for a JVM
tuned for throughput instead."""


def cache_root() -> Path:
    """Where fetched things are kept: ``$CALIBSTREAM_CACHE`` or ``~/.cache/calibstream``."""
    env = os.environ.get("CALIBSTREAM_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "calibstream"


def kafka_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_root() / f"kafka-{version}"


def kafka_libs(version: str = KAFKA_VERSION) -> Path | None:
    """The folder of a complete fetched Kafka runtime, or None when not fetched yet."""
    libs = kafka_dir(version) / "libs"
    return libs if (kafka_dir(version) / "COMPLETE").is_file() and libs.is_dir() else None


_POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by harness/kafka.py: the runtime class path of an Apache Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>calibstream</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


def fetch_kafka(
    version: str = KAFKA_VERSION,
    *,
    mvn: str | None = None,
    timeout: float = 1200.0,
    quiet: bool = True,
) -> Path:
    """Fetch the jars of Apache Kafka ``version`` (with log4j2's slf4j binding) from Maven
    Central into ``<cache>/kafka-<version>/libs`` once; later calls return the folder at once.

    Raises :class:`ServiceUnavailable` when Maven is missing or cannot fetch (offline)."""
    done = kafka_libs(version)
    if done is not None:
        return done
    mvn = mvn or shutil.which("mvn")
    if not mvn:
        raise ServiceUnavailable(
            "Maven (mvn) is not installed: cannot fetch the Kafka jars (apt-get install maven)"
        )
    root = kafka_dir(version)
    root.mkdir(parents=True, exist_ok=True)
    (root / "pom.xml").write_text(_POM.format(version=version, log4j=LOG4J_VERSION))
    staging = root / f"libs.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        jars = _copy_dependencies(mvn, root / "pom.xml", staging, version, timeout, quiet)
    except ServiceUnavailable:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    libs = root / "libs"
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (root / "COMPLETE").write_text("\n".join(jars) + "\n")
    return libs


def _copy_dependencies(
    mvn: str, pom: Path, staging: Path, version: str, timeout: float, quiet: bool
) -> list[str]:
    """Maven copies the runtime class path of ``pom`` into ``staging``; the jars' names, or
    :class:`ServiceUnavailable` with Maven's first error."""
    cmd = [
        mvn,
        "-B",
        "-f",
        str(pom),
        "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    if quiet:
        cmd.insert(1, "-q")
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise ServiceUnavailable(
            f"fetching Kafka {version} with Maven took over {timeout:.0f} s"
            " (Maven Central unreachable?)"
        ) from None
    jars = sorted(p.name for p in staging.glob("*.jar")) if staging.is_dir() else []
    if done.returncode != 0 or not any(j.startswith("kafka_2.13-") for j in jars):
        raise ServiceUnavailable(
            f"Maven could not fetch Kafka {version} from Maven Central: {_maven_error(done)}"
        )
    return jars


def _maven_error(done: subprocess.CompletedProcess[str]) -> str:
    """The first ``[ERROR]`` line of a failed Maven run (colours and advice removed)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    lines = [ln.replace("[ERROR]", "").strip() for ln in text.splitlines() if "ERROR" in ln]
    lines = [ln for ln in lines if ln and not ln.startswith(("To see", "Re-run", "For more"))]
    return lines[0] if lines else text.strip()[-300:] or f"exit {done.returncode}"


def java_binary(minimum: int = 17) -> str:
    """The ``java`` to run Kafka with (``$JAVA_HOME/bin/java`` or PATH), at least ``minimum``."""
    home = os.environ.get("JAVA_HOME")
    java = (
        str(Path(home) / "bin" / "java")
        if home and (Path(home) / "bin/java").exists()
        else shutil.which("java")
    )
    if not java:
        raise ServiceUnavailable(
            "Java is not installed: Apache Kafka needs Java 17+ "
            "(apt-get install openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(m.group(1)) if m else 0
    if major == 1 and m and m.group(2):  # "1.8.0"
        major = int(m.group(2))
    if major < minimum:
        raise ServiceUnavailable(
            f"{java} is Java {major or '?'}; Apache Kafka 4 needs Java {minimum}+"
        )
    return java


def kafka_uuid() -> str:
    """A random Kafka Uuid (URL-safe base64 of 16 bytes, no padding), as for a cluster id."""
    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


_LOG4J2 = """\
status = error
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.loader.name = org.apache.kafka.image.loader
logger.loader.level = WARN
logger.ctrl.name = org.apache.kafka.controller
logger.ctrl.level = WARN
"""


class KafkaBroker(ServiceProcess):
    """Apache Kafka in KRaft combined mode (one node: broker + controller), on loopback ports.

    The data directory (``workdir/data``) is formatted on the first start only, so
    :meth:`kill` + :meth:`start` (or :meth:`restart`) keeps every topic, record and committed
    offset. Defaults suit tests: a 512 MB heap, no topic auto-creation, session timeouts down to
    1 s allowed, and a 3 s broker session so a broker restarted after ``kill -9`` is back in about
    as many seconds. ``properties`` adds or overrides ``server.properties`` entries.
    """

    name = "kafka"

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        version: str = KAFKA_VERSION,
        port: int | None = None,
        controller_port: int | None = None,
        heap: str = "512m",
        properties: Mapping[str, object] | None = None,
        fetch: bool = False,
        log_level: str = "INFO",
        jvm_options: Sequence[str] = JVM_OPTIONS,
        start_timeout: float = 120.0,
    ) -> None:
        self.java = java_binary()
        libs = fetch_kafka(version) if fetch else kafka_libs(version)
        if libs is None:
            raise ServiceUnavailable(
                f"the Apache Kafka {version} jars are not in {kafka_dir(version)}: "
                "run `python -m harness.cli fetch-kafka` (needs Maven Central)"
            )
        self.libs = libs
        self.version = version
        super().__init__(workdir, start_timeout)
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.heap = heap
        self.log_level = log_level
        self.jvm_options = list(jvm_options)
        self.properties = dict(properties or {})
        self.cluster_id: str | None = None  # known after the first start

    @property
    def bootstrap(self) -> str:
        """``host:port`` for aiokafka's ``bootstrap_servers`` and kcat's ``-b``."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The broker URL for faust (``kafka://host:port``)."""
        return f"kafka://{self.bootstrap}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def server_properties(self) -> dict[str, object]:
        props: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:"
            f"{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": 1,
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            "group.min.session.timeout.ms": 1000,
            "broker.session.timeout.ms": 3000,
            "broker.heartbeat.interval.ms": 500,
        }
        props.update(self.properties)
        return props

    def _prepare(self) -> None:
        conf = self.workdir / "server.properties"
        conf.write_text("".join(f"{k}={v}\n" for k, v in self.server_properties().items()))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2.format(level=self.log_level))
        meta = self.data_dir / "meta.properties"
        if not meta.is_file():  # first start: format the storage (what `kafka-storage format` does)
            out = subprocess.run(
                [
                    *self._java_command(),
                    KAFKA_STORAGE_TOOL,
                    "format",
                    "-t",
                    kafka_uuid(),
                    "-c",
                    str(conf),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=self.workdir,
            )
            if out.returncode != 0:
                raise ServiceError(f"formatting {self.data_dir} failed:\n{out.stdout}{out.stderr}")
        m = re.search(r"^cluster\.id=(\S+)", meta.read_text(), re.M)
        self.cluster_id = m.group(1) if m else None

    def _java_command(self) -> list[str]:
        return [
            self.java,
            f"-Xmx{self.heap}",
            *self.jvm_options,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            str(self.libs / "*"),
        ]

    def _command(self) -> list[str]:
        return [*self._java_command(), KAFKA_MAIN, str(self.workdir / "server.properties")]

    def _wait_ready(self, timeout: float) -> None:
        wait_for_kafka(self.bootstrap, timeout, alive=lambda: self.running)
