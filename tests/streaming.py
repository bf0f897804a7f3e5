"""Helpers for the end-to-end tests of the streaming service (not a test module).

A survey of simulated exposures (some deliberately broken), workers run as
users run them (``python -m streams.cli worker`` subprocesses), waits on the
output folders, and a plain consumer that reads a topic whole.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from calibstream.cli import main as core_main
from harness.workers import own_config  # noqa: F401 (the tests' own topics and group)
from streams.codec import decode
from streams.kafka_admin import topic_partitions
from streams.settings import write_stream_config as write_config  # noqa: F401 (for the tests)

#: The files of a complete exposure folder (the contract's, and the Parquet copies).
OUTPUT_FILES = frozenset(
    {
        "calexp.fits",
        "src.fits",
        "src.parquet",
        "matches.fits",
        "matches.parquet",
        "background.fits",
        "summary.json",
    }
)


@dataclass(frozen=True)
class Survey:
    root: Path
    store: Path
    good: list[Path]
    bad: dict[str, Path]  # truncated, missing_hdu, no_refs

    @property
    def exposures(self) -> list[Path]:
        return [*self.good, *self.bad.values()]

    @property
    def bad_ids(self) -> dict[str, int]:
        return {kind: expid for expid, kind in zip(BAD_IDS, self.bad, strict=True)}


BAD_IDS = (997, 998, 999)


def make_survey(root: Path, n_good: int, size: int = 1024, seed: int = 5) -> Survey:
    """``n_good`` simulated exposures, their reference store, and three broken ones:
    a truncated file (EXPID 997), one without its PSF HDU (998), and a field 10° away
    from every reference star (999)."""
    sim = root / "sim"
    argv = ["simulate", str(sim), "--n", str(n_good), "--size", str(size), str(size)]
    assert core_main([*argv, "--seed", str(seed)]) == 0
    store = root / "store"
    assert core_main(["ingest-refcat", str(sim / "refcat.fits"), "--out", str(store)]) == 0
    good = sorted(sim.glob("exp_*[0-9].fits"))
    bad = {}
    truncated = root / "truncated.fits"
    with fits.open(good[0]) as hdul:
        hdul[0].header["EXPID"] = BAD_IDS[0]
        hdul.writeto(truncated)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    bad["truncated"] = truncated
    missing = root / "missing_hdu.fits"
    with fits.open(good[1]) as hdul:
        hdul[0].header["EXPID"] = BAD_IDS[1]
        del hdul["PSF"]
        hdul.writeto(missing)
    bad["missing_hdu"] = missing
    far = root / "no_refs.fits"
    with fits.open(good[2]) as hdul:
        hdul["IMAGE"].header["CRVAL2"] += 10.0
        hdul[0].header["EXPID"] = BAD_IDS[2]
        hdul.writeto(far)
    bad["no_refs"] = far
    return Survey(root, store, good, bad)


def expid_of(path: Path) -> int:
    return int(fits.getheader(path, 0)["EXPID"])


class Worker:
    """A ``calibstream worker`` subprocess, its output in a log file."""

    def __init__(self, config: Path, log: Path, *extra: str, argv: list[str] | None = None) -> None:
        self.log = log
        self._handle = open(log, "ab")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "streams.cli", "worker", "--config", str(config)]
        self.process = subprocess.Popen(
            [*(argv or command), *extra],
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # kill -9 reaches the science processes too
        )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 60.0) -> int:
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._handle.close()
        return self.process.returncode

    def kill(self) -> None:
        """kill -9 the worker and its science processes."""
        if self.running:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


#: A worker is ready once its science pool is up and the group gave it partitions.
READY = {"science pool ready": 1, "Setting newly assigned partitions": 1}


def wait_for_log(worker: Worker, marks: dict[str, int], timeout: float = 120.0) -> None:
    """Until the worker's log holds each mark at least that many times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.running, f"the worker exited\n{worker.log_tail()}"
        text = worker.log.read_text(errors="replace")
        if all(text.count(mark) >= n for mark, n in marks.items()):
            return
        time.sleep(0.2)
    raise AssertionError(f"the worker never logged {marks}\n{worker.log_tail()}")


def folders(root: Path) -> dict[str, dict]:
    """Every exposure folder under ``root`` with its summary (or None while incomplete)."""
    base = root / "exposures"
    if not base.is_dir():
        return {}
    found = {}
    for folder in base.iterdir():
        if folder.name.startswith("."):
            continue
        try:
            found[folder.name] = json.loads((folder / "summary.json").read_text())
        except (OSError, ValueError):
            found[folder.name] = None
    return found


def wait_for_folders(
    root: Path, expected: set[str], timeout: float, workers: list[Worker] = ()
) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = folders(root)
        if expected <= {k for k, v in found.items() if v is not None}:
            return found
        time.sleep(0.25)
    tails = "\n".join(w.log_tail() for w in workers)
    missing = sorted(expected - set(folders(root)))
    raise AssertionError(f"folders {missing} not persisted after {timeout:.0f} s\n{tails}")


def same_folders(a: Path, b: Path, names: list[str]) -> list[str]:
    """Files that differ between two output roots, for the exposures ``names``."""
    differ = []
    for name in names:
        left, right = a / "exposures" / name, b / "exposures" / name
        files = sorted(p.name for p in left.iterdir())
        if files != sorted(p.name for p in right.iterdir()):
            differ.append(f"{name}: files {files}")
            continue
        differ += [
            f"{name}/{f}" for f in files if (left / f).read_bytes() != (right / f).read_bytes()
        ]
    return differ


def read_topic(bootstrap: str, topic: str, timeout: float = 5.0) -> list:
    """Every record of ``topic`` (all partitions, from the beginning) as decoded events
    ``(partition, offset, key, Decoded)``."""

    async def read() -> list:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in await topic_partitions(bootstrap, topic)]
            assert tps, f"no topic {topic}"
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            out, idle = [], 0
            while idle < int(timeout) and await _behind(consumer, tps, end):
                batch = await consumer.getmany(timeout_ms=1000)
                idle = 0 if batch else idle + 1
                for records in batch.values():
                    out += [(r.partition, r.offset, r.key, decode(r.value)) for r in records]
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


async def _behind(consumer, tps, end) -> bool:
    return any([await consumer.position(tp) < end[tp] for tp in tps])
