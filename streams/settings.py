"""The streaming service's configuration: data, from the ``[stream]`` table of the TOML file.

The same file configures the science (every other table, see
``calibstream.config``), so one ``--config`` describes a whole deployment::

    [stream]
    broker = "kafka://kafka:9092"
    redis = "redis://redis:6379/0"
    refcat = "/data/refcat"
    output_root = "/data/out"
    partitions = 8
    science_processes = 2

Every key has a default below; unknown keys are an error, and every value is checked
against its field's type (and the counts against their least value) when loaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from calibstream.config import Config, config_from_dict
from calibstream.config_types import checked
from calibstream.errors import ConfigError
from calibstream.failures import RetryPolicy
from streams.topology import CALIBRATE, Topology


@dataclass(frozen=True)
class StreamSettings:
    """Where the service reads and writes, and how it runs."""

    broker: str = "kafka://127.0.0.1:9092"  # faust broker URL(s), comma-separated
    redis: str | None = None  # redis://host:port/db; None: no Redis (calibration goes on)
    #: The reference-shard cache's Redis (redis://host:port/db), apart from the read model's
    #: so that only the cache is evictable; None: the same as ``redis``.
    cache_redis: str | None = None
    refcat: str = "refcat"  # the astrometric (and photometric) reference store
    photometry_refcat: str | None = None  # a separate photometric store
    output_root: str = "calibstream-out"  # ROOT/exposures/<EXPID>/
    app_id: str = "calibstream"  # the faust app id: the consumer group of the workers
    topic_prefix: str = "calibstream."  # topic name = prefix + role
    partitions: int = 4  # of every topic
    replication: int = 1
    #: Science processes per worker (CPU-bound steps run there, off the event loop);
    #: 0 runs the steps in one thread of the worker itself.
    science_processes: int = 1
    #: Events a worker's agents work on at once (per agent); the pool bounds the CPU.
    concurrency: int = 1
    #: Take an exposure on down the chain (astrometry, photometry, the sink) in the same
    #: science call as its detection when this worker owns the partitions those events go
    #: to (streams.runner.run_chain); the events are published all the same.
    chain: bool = True
    #: How long a worker's fetch waits for data (ms): what an exposure can wait at its
    #: first hop when the topics are idle (faust's own, fixed, is 1500). 200: the idle
    #: worker and broker poll each other half as often as at 100 for ~15 ms of latency
    #: (benchmarks/stream.py --cost; README, issue 17).
    fetch_max_wait_ms: int = 200
    session_timeout_s: float = 10.0  # consumer group session (heartbeats every third of it)
    #: A step stopped by a fault of the machine (read-only or full output root, a dead
    #: science process, ...) is retried this many times, ``retry_first_s`` apart and
    #: doubling up to ``retry_max_s`` (about two minutes in all), then parked.
    retry_attempts: int = 8
    retry_first_s: float = 1.0
    retry_max_s: float = 30.0
    #: A visit whose expected detectors have not all reported this long after its first
    #: one is summarised as it stands, naming the missing ones (a late one sends an update).
    visit_timeout_s: float = 120.0
    #: How often the visit agent looks for visits past their timeout.
    visit_check_s: float = 5.0
    #: How often a worker looks for partitions it owns holding records it never took
    #: (faust can skip one at an assignment: streams/stall.py); 0: never.
    stall_check_s: float = 15.0
    web_port: int | None = None  # faust's web server; None: off
    #: Largest event (producer request and topic ``max.message.bytes``): a zero-point
    #: event costs ~276 B per source (0.4 MB for a 4k×4k exposure with 1444 sources,
    #: README); Kafka's 1 MiB default would stop at ~3,800 sources.
    max_message_bytes: int = 8 * 1024 * 1024
    #: An encoded event larger than this leaves its catalogue columns in a claim file under
    #: ``output_root/claims/`` and carries its URI and digest (None: max_message_bytes // 4).
    claim_threshold_bytes: int | None = None
    #: The dashboard's bearer token (streams/dashboard_guard.py); needed to listen on anything
    #: but loopback. Better kept out of this file: $CALIBSTREAM_DASHBOARD_TOKEN or --token-file.
    dashboard_token: str | None = None
    #: Ask for the token on loopback too.
    dashboard_require_token: bool = False
    #: Host names the dashboard answers for, besides loopback's and the address it binds.
    dashboard_hosts: tuple[str, ...] = ()
    #: The folders whose files an event may name (a file:// URI or an absolute path, links
    #: resolved: calibstream.io.inputs.resolve_input). Absent from a configuration file: the
    #: working directory of the command at start (load_deployment). None (settings built in
    #: code): no folder is imposed, only that the input be a regular file.
    input_roots: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        roots = self.input_roots
        if roots is None:
            return
        if isinstance(roots, str | os.PathLike) or not roots:
            reason = f"[stream] input_roots: expected a list of folders, got {roots!r}"
            raise ConfigError(reason, where="config")
        object.__setattr__(self, "input_roots", tuple(str(Path(r).resolve()) for r in roots))

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.retry_attempts, self.retry_first_s, self.retry_max_s)

    def topic(self, role: str) -> str:
        """The topic of a role of the topology (``exposures``, ``detections``, ...)."""
        return self.topic_prefix + role

    @property
    def bootstrap(self) -> str:
        """``host:port,...`` of the broker URL (for plain Kafka clients)."""
        return ",".join(part.split("://", 1)[-1] for part in self.broker.split(","))


@dataclass(frozen=True)
class Deployment:
    stream: StreamSettings = field(default_factory=StreamSettings)
    science: Config = field(default_factory=Config)
    topology: Topology = CALIBRATE

    @property
    def topics(self) -> dict[str, int]:
        """Every topic of the topology, with its partition count."""
        return {self.stream.topic(role): self.stream.partitions for role in self.topology.roles}


def load_deployment(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Deployment:
    """Stream settings and science configuration from one TOML file; ``overrides`` (not None)
    replace stream keys (the command line's ``--broker``, ``--redis``, ...). A key unknown, a
    value of the wrong type or out of range is a :class:`ConfigError` naming it."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read configuration ({exc})", where=str(path)) from exc
    _default_input_roots(data)
    stream = data.pop("stream", {})
    if not isinstance(stream, dict):
        raise ConfigError("[stream] must be a table", where="config")
    stream = {**stream, **{k: v for k, v in overrides.items() if v is not None}}
    return Deployment(StreamSettings(**_checked_stream(stream)), config_from_dict(data))


#: The least value of the ``[stream]`` counts and durations.
_AT_LEAST = {
    "partitions": 1,
    "replication": 1,
    "science_processes": 0,  # 0: the steps run in a thread of the worker itself
    "concurrency": 1,
    "fetch_max_wait_ms": 0,
    "session_timeout_s": 0,
    "retry_attempts": 0,
    "retry_first_s": 0,
    "retry_max_s": 0,
    "visit_timeout_s": 0,
    "visit_check_s": 0.1,
    "stall_check_s": 0,
    "max_message_bytes": 1,
    "claim_threshold_bytes": 1,
}


def _checked_stream(stream: dict[str, Any]) -> dict[str, Any]:
    """The ``[stream]`` table, every key known and every value of its field's type."""
    known = {f.name for f in dataclasses.fields(StreamSettings)}
    unknown = set(stream) - known
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)}", where="stream")
    hints = get_type_hints(StreamSettings)
    stream = {key: checked(value, hints[key], "stream", key) for key, value in stream.items()}
    for key, least in _AT_LEAST.items():
        value = stream.get(key)
        if value is not None and value < least:
            reason = f"[stream] {key}: expected at least {least}, got {value!r}"
            raise ConfigError(reason, where="config")
    return stream


def _default_input_roots(data: dict[str, Any]) -> None:
    """Without ``[stream] input_roots``, inputs are confined to the working directory."""
    stream = data.setdefault("stream", {})
    if isinstance(stream, dict):
        stream.setdefault("input_roots", [str(Path.cwd().resolve())])


def write_stream_config(path: str | os.PathLike[str], **stream: Any) -> Path:
    """A TOML file holding these ``[stream]`` keys (None values left out: their defaults).

    Without ``input_roots``, the configuration it writes (the demo's, the tests', the
    benchmarks') confines inputs to the system's temporary folder and the working directory
    of the process writing it, where such runs keep the exposures they make."""
    if stream.get("input_roots") is None:
        stream["input_roots"] = [str(Path(tempfile.gettempdir()).resolve()), str(Path.cwd())]
    known = {f.name for f in dataclasses.fields(StreamSettings)}
    unknown = set(stream) - known
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)}", where="stream")
    lines = ["[stream]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in stream.items() if value is not None]
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path
