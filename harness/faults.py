"""Faults to inject into a running deployment, and what to count afterwards: the toolkit of the
fault suite (``benchmarks/faults.py``, ``tests/test_faults.py``).

Each injector cleans up after itself, even when the code inside (or the injection) fails:

- :func:`tmpfs`: a tmpfs of a given size mounted at a folder for a while (an output root
  that :func:`read_only` can remount and :func:`full_disk` can fill).
- :func:`read_only`: the output root read-only for a while (a mount point remounted ``ro``
  then ``rw``; any other folder is bind-mounted onto itself for the while).
- :func:`full_disk`: the output root's small file system filled up to a real ENOSPC, then
  emptied again.
- :func:`kill_science_process` (a busy one, ``kill -9``), :func:`kill_worker` (``kill -9``
  of the worker's pid alone: its science processes must die with it),
  :func:`restart_kafka`, :func:`restart_redis` (``kill -9``, down for a while, started again
  on the same port and data).
- :func:`produce_tombstones`, :func:`produce_oversized`: records no producer of the service
  makes, straight onto a topic.

:func:`census` counts an output root's folders (complete, failed, partial, duplicated) and
compares them with the read model's rows; :func:`count_records` counts a topic's records.
Mounting needs root (``CAP_SYS_ADMIN``); without it :class:`FaultUnavailable` says so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibstream.io.outputs import read_summary
from harness.processes import ServiceProcess, ServiceUnavailable, alive, descendants
from streams.kafka_admin import run_sync, topic_partitions

#: The files of a complete, calibrated exposure folder.
OK_FILES = frozenset({"calexp.fits", "src.fits", "matches.fits", "background.fits", "summary.json"})
CALIBRATED_IN_FULL = ("ok", "warning")  # statuses (calibstream.verdicts)
NOT_IN_FULL = ("failed", "partial")
FILLER = ".calibstream-fault-filler"
POOL_MARK = "multiprocessing.spawn"  # in the command line of a spawned pool process


class FaultUnavailable(ServiceUnavailable):
    """This fault cannot be injected here (no mount rights, ...); the message says why."""


# ---------------------------------------------------------------- the output root


def _mount(*args: str, retry_s: float = 5.0) -> None:
    """``mount ARGS`` (``umount`` when the first is ``-u``), retried while the target is busy
    (a file open for writing stops a remount read-only)."""
    command = ["umount", *args[1:]] if args[0] == "-u" else ["mount", *args]
    deadline = time.monotonic() + retry_s
    while True:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0:
            return
        busy = "busy" in done.stderr
        if not busy or time.monotonic() >= deadline:
            denied = any(w in done.stderr.lower() for w in ("permission", "only root", "permit"))
            error = FaultUnavailable if denied else OSError
            raise error(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
        time.sleep(0.05)


def _unmount(path: Path) -> None:
    try:
        _mount("-u", str(path))
    except OSError:
        _mount("-u", "-l", str(path))  # still busy: detach it now, freed when unused


@contextlib.contextmanager
def tmpfs(path: str | os.PathLike[str], size: str = "256m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (created) while inside; its content goes with
    it at the end."""
    path = Path(path).resolve()
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    try:
        yield path
    finally:
        _unmount(path)


@contextlib.contextmanager
def read_only(root: str | os.PathLike[str]) -> Iterator[Path]:
    """``root`` read-only while inside: remounted ``ro`` (then ``rw``) when it is a mount
    point, else bind-mounted onto itself and that mount made read-only (then removed)."""
    root = Path(root).resolve()
    bound = not os.path.ismount(root)
    if bound:
        _mount("--bind", str(root), str(root))
    flags = "remount,bind" if bound else "remount"
    try:
        _mount("-o", f"{flags},ro", str(root))
        try:
            yield root
        finally:
            _mount("-o", f"{flags},rw", str(root))
    finally:
        if bound:
            _unmount(root)


@contextlib.contextmanager
def full_disk(root: str | os.PathLike[str], *, largest: int = 1 << 30) -> Iterator[Path]:
    """The file system mounted at ``root`` filled up while inside: every write there fails
    with ENOSPC. Only a small one (at most ``largest`` bytes free: a :func:`tmpfs`); the
    filler file is removed at the end."""
    root = Path(root).resolve()
    stat = os.statvfs(root)
    free = stat.f_bavail * stat.f_frsize
    if not os.path.ismount(root) or free > largest:
        raise FaultUnavailable(
            f"{root} is not a small mounted file system ({free} bytes free): "
            "mount a tmpfs there first (harness.faults.tmpfs)"
        )
    filler = root / FILLER
    try:
        _fill(filler)
        yield filler
    finally:
        filler.unlink(missing_ok=True)


def _fill(path: Path) -> None:
    """Write ``path`` until its file system has no byte left (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # big blocks, then the last few bytes
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)


# ---------------------------------------------------------------- processes


def _popen(process: Any) -> subprocess.Popen:
    """The Popen of a harness service (``.proc``) or of a test's worker (``.process``)."""
    popen = getattr(process, "proc", None) or getattr(process, "process", None)
    if popen is None:
        raise ValueError(f"{process!r} is not running")
    return popen


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return -1
    return int(fields[11]) + int(fields[12])  # utime + stime


def science_processes(worker: Any) -> list[int]:
    """The pids of a worker's science pool (spawned processes, not the resource tracker)."""
    found = []
    for pid, _ in descendants(_popen(worker).pid):
        with contextlib.suppress(OSError):
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if POOL_MARK in line and "resource_tracker" not in line:
                found.append(pid)
    return sorted(found)


def kill_science_process(worker: Any, timeout: float = 30.0) -> int:
    """``kill -9`` of one of the worker's science processes while it computes (the one that
    used the most CPU over a quarter of a second); returns its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = science_processes(worker)
        before = {pid: _cpu_ticks(pid) for pid in pids}
        time.sleep(0.25)
        used = {pid: _cpu_ticks(pid) - ticks for pid, ticks in before.items()}
        busy = max(used, key=used.__getitem__, default=None)
        if busy is not None and used[busy] > 0:
            os.kill(busy, signal.SIGKILL)
            return busy
    raise TimeoutError(f"no science process of {worker!r} computed for {timeout:.0f} s")


def kill_worker(worker: Any, gone_within: float = 5.0) -> list[int]:
    """``kill -9`` of the worker's process alone (as the OOM killer does); returns the pids of
    its descendants still running ``gone_within`` seconds later (orphans: none expected)."""
    popen = _popen(worker)
    below = descendants(popen.pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(popen.pid, signal.SIGKILL)
    popen.wait(30)
    deadline = time.monotonic() + gone_within
    while alive(below) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = sorted(pid for pid, _ in alive(below))
    if isinstance(worker, ServiceProcess):
        worker.kill()  # reaps it and sweeps its process group: the orphans too
    return orphans


def restart_kafka(broker: ServiceProcess, down_s: float = 3.0) -> float:
    """``kill -9`` of the broker, ``down_s`` seconds down, started again on its data and
    ports; returns the seconds it took to be ready."""
    return _restart(broker, down_s)


def restart_redis(server: ServiceProcess, down_s: float = 3.0) -> float:
    """``kill -9`` of redis-server (no persistence: everything in it is lost), ``down_s``
    seconds down, started again on its port; returns the seconds it took to answer."""
    return _restart(server, down_s)


def _restart(service: ServiceProcess, down_s: float) -> float:
    service.kill()
    time.sleep(down_s)
    service.start()
    return service.started_in or 0.0


# ---------------------------------------------------------------- records


async def _produce(bootstrap: str, topic: str, records: list, max_bytes: int) -> list:
    from aiokafka import AIOKafkaProducer

    partitions = await topic_partitions(bootstrap, topic)
    if not partitions:
        raise ValueError(f"no topic {topic} on {bootstrap}")
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        max_request_size=max_bytes,
        max_batch_size=max_bytes,
    )
    await producer.start()
    try:
        sent = []
        for i, (key, value) in enumerate(records):
            partition = partitions[i % len(partitions)]
            meta = await producer.send_and_wait(topic, value, key=key, partition=partition)
            sent.append((meta.partition, meta.offset))
        return sent
    finally:
        await producer.stop()


def produce_tombstones(
    bootstrap: str, topic: str, n: int = 20, key_prefix: str = "tombstone-"
) -> list[tuple[int, int]]:
    """``n`` tombstones (a key, no value) onto ``topic``, spread over its partitions;
    returns their (partition, offset)."""
    records = [(f"{key_prefix}{i}".encode(), None) for i in range(n)]
    return run_sync(lambda: _produce(bootstrap, topic, records, 1 << 20))


def produce_oversized(bootstrap: str, topic: str, nbytes: int) -> tuple[int, int]:
    """One record of ``nbytes`` bytes that decode as no event onto ``topic``; returns its
    (partition, offset). The topic's ``max.message.bytes`` must let it in."""
    value = (b"oversized record " * (nbytes // 17 + 1))[:nbytes]
    records = [(b"oversized", value)]
    [sent] = run_sync(lambda: _produce(bootstrap, topic, records, nbytes + 64 * 1024))
    return sent


async def _count(bootstrap: str, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    partitions = await topic_partitions(bootstrap, topic)
    if not partitions:
        return 0
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        first, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        return sum(end[tp] - first[tp] for tp in tps)
    finally:
        await consumer.stop()


def count_records(bootstrap: str, topic: str) -> int:
    """Records in ``topic`` (0 when there is no such topic)."""
    return run_sync(lambda: _count(bootstrap, topic))


# ---------------------------------------------------------------- what is on disk


@dataclass
class Census:
    """An output root's exposure folders, by EXPID (the folder's name). A folder's status
    (its summary.json) is ``ok`` or ``warning`` (calibrated in full: every file there),
    ``partial`` (a stage could not fit for the data's fault: what was fitted is there) or
    ``failed`` (the failure summary alone)."""

    ok: set[str] = field(default_factory=set)  # complete calibrations (ok, warning)
    failed: set[str] = field(default_factory=set)  # failure summaries, partial calibrations
    partial: list[str] = field(default_factory=list)  # incomplete: see census()
    duplicates: int = 0  # entries beyond one per EXPID (folders and staging leftovers)
    rows: int = 0  # folders with a summary
    rows_right: int = 0  # … whose read-model row has the folder's status

    @property
    def outcomes(self) -> set[str]:
        return self.ok | self.failed


def census(root: str | os.PathLike[str], readmodel: Any = None) -> Census:
    """Count ``root/exposures``; ``readmodel`` (a :class:`~streams.readmodel.RedisReadModel`)
    is asked for each summarised folder's row. Incomplete (``partial``): a folder without a
    readable summary.json or with an unknown status, an ok/warning one without all of
    :data:`OK_FILES`, a ``.X.new-*`` staging leftover."""
    found = Census()
    base = Path(root) / "exposures"
    entries: Counter[str] = Counter()
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        if entry.name.startswith("."):  # .X.new-* (staging) or .X.old-* (a replaced folder)
            name, _, kind = entry.name[1:].rpartition(".")
            entries[name] += 1
            if kind.startswith("new-"):
                found.partial.append(entry.name)
            continue
        summary = read_summary(entry)
        entries[str(summary.get("expid", entry.name)) if summary else entry.name] += 1
        status = None if summary is None else summary.get("status")
        files = {p.name for p in entry.iterdir()} if entry.is_dir() else set()
        if status in CALIBRATED_IN_FULL and files >= OK_FILES:
            found.ok.add(entry.name)
        elif status in NOT_IN_FULL:
            found.failed.add(entry.name)
        else:
            found.partial.append(entry.name)
        if summary is not None:
            found.rows += 1
            row = readmodel.metrics(entry.name) if readmodel is not None else None
            found.rows_right += row is not None and row.get("status") == status
    found.duplicates = sum(n - 1 for n in entries.values() if n > 1)
    return found
