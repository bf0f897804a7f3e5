"""Stopping anything stops its children, whatever stops it and whenever (issue 13).

- A bare :class:`~streams.science.SciencePool` in a child process: ``kill -9`` of the child
  leaves no pool process.
- A worker calibrating a queue of exposures, stopped with SIGTERM or SIGINT (in order),
  ``kill -9`` (the worker's pid alone, not its process group) or SIGTERM to its whole process
  group (as a service manager stops it): none of its science processes remains, and a stop
  is never taken for a fault (nothing retried, no pool restarted).
- ``calibstream demo --keep`` on tiny exposures, stopped while it calibrates with SIGTERM,
  SIGINT or ``kill -9``: no broker, Redis, worker, science process or dashboard remains.

Each case records every descendant of what it stops (pid and start time, from ``/proc``)
just before stopping it, then checks that none of them is running a few seconds after.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest_services import *  # noqa: F403 (the fixtures: tansu)

from calibstream.astrometry.refcat import ingest_refcat
from calibstream.simulate.survey import write_simulation
from harness.processes import Pid, alive, descendants
from harness.workers import WorkerProcess
from streams.settings import load_deployment, write_stream_config
from streams.worker import submit

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)"),
]

GONE_WITHIN_S = 5.0
POOL = "from multiprocessing.spawn import spawn_main"  # a spawned pool process's command line


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "(gone)"


def left_after(processes: set[Pid], timeout: float = GONE_WITHIN_S) -> list[str]:
    """Which of ``processes`` still run ``timeout`` seconds from now (their command lines)."""
    deadline = time.monotonic() + timeout
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [f"{pid}: {cmdline(pid)}" for pid, _ in sorted(alive(processes))]


def pool_processes(processes: set[Pid]) -> set[Pid]:
    return {p for p in processes if POOL in cmdline(p[0])}


@pytest.fixture
def reaper():
    """Records processes a test made; kills any that outlive it (a failing test leaks none)."""
    recorded: set[Pid] = set()
    yield recorded
    for pid, _ in alive(recorded):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, path.read_text(errors="replace")[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} after {timeout:.0f} s:\n{path.read_text()[-3000:]}")


# ---------------------------------------------------------------- a bare science pool

BARE_POOL = """
import asyncio, sys
from streams.science import SciencePool
from streams.settings import Deployment, StreamSettings
pool = SciencePool(Deployment(StreamSettings(science_processes=2, redis=None)))
asyncio.run(pool.warm_up())
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_bare_science_pool_dies_with_its_killed_parent(tmp_path, reaper):
    log = tmp_path / "child.log"
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", BARE_POOL],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_text(log, "ready", child, timeout=120)
        procs = descendants(child.pid)
        reaper.update(procs)
        assert len(pool_processes(procs)) == 2, [cmdline(p) for p, _ in procs]
        os.kill(child.pid, signal.SIGKILL)  # the child alone, not its process group
        child.wait(10)
        assert left_after(procs) == []
    finally:
        child.kill()
        child.wait()


# ---------------------------------------------------------------- a worker


@pytest.fixture(scope="module")
def exposures(tmp_path_factory) -> tuple[list[Path], Path]:
    """Six small exposures (enough to keep a worker busy for a while) and their references."""
    root = tmp_path_factory.mktemp("hygiene")
    written = write_simulation(root / "sim", n=6, size=(768, 768), seed=3)
    paths = sorted(p for p in written if p.name.startswith("exp_") and ".truth" not in p.name)
    ingest_refcat([root / "sim" / "refcat.fits"], root / "refcat")
    return paths, root / "refcat"


SIGNALS = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT, "kill-9": signal.SIGKILL}


@pytest.mark.parametrize("how", [*SIGNALS, "sigterm-group"])
def test_a_stopped_worker_leaves_no_science_process(how, exposures, tansu, tmp_path, reaper):
    paths, refcat = exposures
    prefix = f"hyg{os.getpid()}{how.replace('-', '')}{time.monotonic_ns() % 10**6}."
    config = write_stream_config(
        tmp_path / "stream.toml",
        broker=tansu.url,
        refcat=str(refcat),
        output_root=str(tmp_path / "out"),
        app_id=prefix + "app",
        topic_prefix=prefix,
        session_timeout_s=6.0,
        science_processes=2,
    )
    with WorkerProcess(config, tmp_path / "worker") as worker:
        submit(paths, load_deployment(config).stream)
        deadline = time.monotonic() + 120
        while not list((tmp_path / "out").glob("exposures/*/summary.json")):
            assert time.monotonic() < deadline and worker.running, worker.log_tail()
            time.sleep(0.1)
        procs = descendants(worker.pid)
        reaper.update(procs)
        assert len(pool_processes(procs)) == 2, [cmdline(p) for p, _ in procs]
        done = len(list((tmp_path / "out").glob("exposures/*/summary.json")))
        assert done < len(paths), "not stopped while calibrating"
        t0 = time.monotonic()
        if how == "sigterm-group":  # as a service manager stops it: every process at once
            os.killpg(worker.pid, signal.SIGTERM)
        else:
            os.kill(worker.pid, SIGNALS[how])
        worker.proc.wait(60)
        stopped_in = time.monotonic() - t0
        assert left_after(procs) == [], worker.log_tail()
        if how.startswith("sig"):  # a stop, not a fault: nothing retried, no pool restarted
            log = worker.log_path.read_text(errors="replace")
            assert "science process died" not in log, worker.log_tail(60)
            assert "waiting for the machine" not in log, worker.log_tail(60)
    print(f"{how}: the worker stopped in {stopped_in:.1f} s after {done} exposure(s)")


# ---------------------------------------------------------------- the demo


@pytest.mark.parametrize("how", list(SIGNALS))
def test_a_stopped_demo_leaves_nothing_running(how, tmp_path, reaper):
    log = tmp_path / "demo.log"
    argv = ["demo", "--out", str(tmp_path / "demo"), "--n", "2", "--size", "512", "512"]
    with open(log, "wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", *argv, "--port", "0", "--keep"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_text(log, "characterized-exposure events", demo, timeout=180)
        procs = descendants(demo.pid)
        reaper.update(procs)
        names = " ".join(cmdline(p) for p, _ in procs)
        for part in ("tansu", "redis-server", " worker ", " dashboard ", POOL):
            assert part in names, f"{part!r} not among {names}"
        calibrating = "running until ^C" not in log.read_text()
        os.kill(demo.pid, SIGNALS[how])
        status = demo.wait(90)
        assert left_after(procs) == [], log.read_text()[-3000:]
        if how == "sigterm":
            assert status in (0, 1, 128 + signal.SIGTERM), log.read_text()[-3000:]
    finally:
        demo.kill()
        demo.wait()
    print(f"{how}: stopped {'while calibrating' if calibrating else 'after calibrating'}")
