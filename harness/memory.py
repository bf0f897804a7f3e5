"""A worker's resident memory followed over a long run of exposures (made from a few): what
the worker-memory benchmark and test share."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from pathlib import Path

from astropy.io import fits

from harness.processes import descendants
from harness.workers import WorkerProcess
from streams.settings import load_deployment
from streams.worker import submit


def resident_mb(pid: int) -> float:
    """VmRSS of one process in MB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(found.group(1)) / 1024 if found else 0.0


def tree_resident_mb(pid: int) -> tuple[float, float]:
    """(the process's own, every process below it) resident MB: a worker's event loop and
    its science processes."""
    below = sum(resident_mb(child) for child, _ in descendants(pid))
    return resident_mb(pid), below


def renumbered_copies(
    paths: Iterable[Path], n: int, out: Path, first_expid: int = 100_000
) -> list[Path]:
    """``n`` exposures cycling through ``paths``, each copy with its own EXPID (its primary
    header's only change): a long run's worth of distinct exposures without simulating each."""
    sources = list(paths)
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(n):
        target = out / f"exp_{first_expid + i}.fits"
        with fits.open(sources[i % len(sources)]) as hdul:
            hdul[0].header["EXPID"] = first_expid + i
            hdul.writeto(target)
        made.append(target)
    return made


def growth_per_100(samples: list[tuple[int, float]], after: int) -> float:
    """MB per 100 exposures between the first sample at or after ``after`` exposures and the
    last (a least-squares slope would hide a late jump; the end points show it)."""
    kept = [(count, mb) for count, mb in samples if count >= after]
    if len(kept) < 2 or kept[-1][0] == kept[0][0]:
        raise ValueError(f"need two samples from {after} exposures on, have {samples}")
    (c0, m0), (c1, m1) = kept[0], kept[-1]
    return (m1 - m0) * 100 / (c1 - c0)


def folders_done(out: Path) -> int:
    """Exposure folders complete under the output root ``out``."""
    base = out / "exposures"
    if not base.is_dir():
        return 0
    return sum((folder / "summary.json").exists() for folder in base.iterdir())


def follow_worker_memory(
    config: Path, paths: list[Path], every: int, workdir: Path, timeout_s: float = 300
) -> list[tuple[int, float, float]]:
    """One worker of ``config`` (its output root empty) fed ``paths`` ``every`` at a time,
    each group waited for to its folders: (exposures done, event loop MB, science processes
    MB) after each group, the worker idle."""
    settings = load_deployment(config).stream
    out = Path(settings.output_root)
    samples = []
    with WorkerProcess(config, workdir) as worker:
        for start in range(0, len(paths), every):
            group = paths[start : start + every]
            submit(group, settings)
            deadline = time.monotonic() + timeout_s
            while folders_done(out) < start + len(group):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"folders not persisted; see {worker.log_path}")
                time.sleep(0.1)
            time.sleep(1.0)  # the sink's last effects (Redis, the visit) settle
            samples.append((start + len(group), *tree_resident_mb(worker.pid)))
    return samples
