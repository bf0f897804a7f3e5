"""Fresh processes measured one by one: wall seconds, CPU seconds (user + system) and peak
resident memory of each child, from the kernel's own accounting (``wait4``).

Used by ``benchmarks/calibrate.py --fresh N``: ``calibstream calibrate`` of one exposure
as a user runs it (a new process: imports, first touch of every page) against
``source-extractor`` then ``scamp`` on the same inputs, in turn, N pairs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Usage:
    wall: float  # seconds
    cpu: float  # user + system seconds
    peak_mb: float  # the process's peak resident set (MB)
    returncode: int
    output: str = ""

    def __add__(self, other: Usage) -> Usage:
        """Two processes run one after the other: times add, the peak is the larger."""
        return Usage(
            self.wall + other.wall,
            self.cpu + other.cpu,
            max(self.peak_mb, other.peak_mb),
            self.returncode or other.returncode,
            self.output + other.output,
        )


#: Every child run through :func:`run_measured`, in order (the peer's calls included).
RECORD: list[tuple[str, Usage]] = []


#: GNU time reports its child's peak resident set. A child forked straight from this
#: (large) Python process would inherit its peak: Linux carries ru_maxrss across exec.
TIME = "/usr/bin/time"


def installed_env(cache: Path) -> dict[str, str]:
    """This environment as a user's install has it: compiled bytecode kept (here under
    ``cache``), so every run after the first imports compiled modules, as a pip-installed
    package's are. (This machine sets PYTHONDONTWRITEBYTECODE=1: every run would compile
    calibstream's sources again, ~0.1 s.)"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(cache)}


def run_measured(
    command: list[str], cwd: Path, capture: bool = False, env: dict[str, str] | None = None
) -> Usage:
    """Run ``command`` to its end; its usage (and its output if ``capture``), recorded."""
    with tempfile.TemporaryFile("w+") as sink, tempfile.NamedTemporaryFile("r") as peak:
        out = sink if capture else None
        wrapped = [TIME, "-f", "%M", "-o", peak.name, *command]
        start = time.perf_counter()
        process = subprocess.Popen(wrapped, cwd=cwd, stdout=out, stderr=out, text=True, env=env)
        _, status, usage = os.wait4(process.pid, 0)  # the child's CPU, GNU time's included
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        output = ""
        if capture:
            sink.seek(0)
            output = sink.read()
        kilobytes = int(peak.read().split()[-1])
    result = Usage(
        wall, usage.ru_utime + usage.ru_stime, kilobytes / 1024, process.returncode, output
    )
    RECORD.append((Path(command[0]).name, result))
    return result


def calibstream_command(exposure: Path, store: Path, out: Path, config: str | None) -> list[str]:
    command = ["calibstream", "calibrate", "--refcat", str(store), "--out", str(out)]
    if config:
        command += ["--config", config]
    return [*command, str(exposure)]


def fresh_pairs(ours, peer, pairs: int) -> tuple[list[Usage], list[Usage]]:
    """``ours(i)`` and ``peer()`` (each returning a Usage) run in turn, ``pairs`` times."""
    mine, theirs = [], []
    for i in range(pairs):
        mine.append(ours(i))
        theirs.append(peer())
    return mine, theirs


def report(mine: list[Usage], theirs: list[Usage], peer_parts: dict[str, float]) -> str:
    """Median wall and CPU seconds of each side, their ratios, and the peaks of memory."""
    wall, cpu = _median(mine, "wall"), _median(mine, "cpu")
    peer_wall, peer_cpu = _median(theirs, "wall"), _median(theirs, "cpu")
    peak = max(u.peak_mb for u in mine)
    parts = ", ".join(f"{name} {mb:.0f} MB" for name, mb in peer_parts.items())
    return "\n".join(
        [
            f"\none command, one exposure, fresh processes ({len(mine)} pairs, in turn; medians):",
            f"  {'':<26s} {'calibstream':>12s} {'SEx+SCAMP':>10s} {'ratio':>7s}",
            f"  {'wall seconds':<26s} {wall:12.3f} {peer_wall:10.3f} {wall / peer_wall:6.2f}x",
            f"  {'CPU seconds (user+sys)':<26s} {cpu:12.3f} {peer_cpu:10.3f} "
            f"{cpu / peer_cpu:6.2f}x",
            f"  {'peak RSS (MB)':<26s} {peak:12.0f} {max(peer_parts.values()):10.0f}"
            f"   (peer: {parts})",
            f"  target: <= 1.0x wall ({'met' if wall <= peer_wall else 'missed'}), "
            f"peak <= 400 MB ({'met' if peak <= 400 else 'missed'})",
        ]
    )


def _median(runs: list[Usage], field: str) -> float:
    return statistics.median(getattr(u, field) for u in runs)
