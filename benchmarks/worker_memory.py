"""A worker's memory over a long run, beside the batch command's over the same exposures.

    python benchmarks/worker_memory.py [--n 100] [--size 1024 1024] [--distinct 20] [--every 10]

Simulates ``--distinct`` exposures and cycles through them to ``--n`` (copies with their
own EXPIDs), then:

* the service: the embedded broker, Redis and one worker with one science process; the
  exposures submitted ``--every`` at a time, each group waited for to its folders, then the
  resident memory (VmRSS) of the worker's event loop and of its science process, idle;
* the peer: ``calibstream calibrate``'s loop in one process over the same files, its
  resident memory after each group.

Prints the samples and each side's growth per 100 exposures after the first group
(imports, first touch and caches settle there). Issue 17's goal: a worker's memory stays
flat over 100 exposures."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from stream import run_batch  # noqa: E402  (benchmarks/stream.py, beside this script)

from calibstream.astrometry.refcat import ingest_refcat  # noqa: E402
from calibstream.simulate.survey import write_simulation  # noqa: E402
from harness.memory import follow_worker_memory, growth_per_100, renumbered_copies  # noqa: E402
from harness.redis_server import RedisServer  # noqa: E402
from harness.tansu import TansuBroker  # noqa: E402
from harness.workers import own_config  # noqa: E402


def exposures(work: Path, n: int, distinct: int, size: tuple[int, int]) -> tuple[list, Path]:
    sim = work / "sim"
    write_simulation(sim, n=distinct, size=size, seed=11)
    store = work / "store"
    ingest_refcat([sim / "refcat.fits"], store)
    made = sorted(sim.glob("exp_*[0-9].fits"))
    return renumbered_copies(made, n, work / "run"), store


def stream_samples(paths: list[Path], store: Path, work: Path, every: int) -> list:
    """The embedded broker, Redis and one worker: :func:`follow_worker_memory`'s samples."""
    with TansuBroker(work / "tansu") as broker, RedisServer(work / "redis") as redis:
        config = own_config(work, broker.url, store, "m", redis=redis.url)
        return follow_worker_memory(config, paths, every, work / "worker")


def batch_samples(paths: list[Path], store: Path, out: Path, every: int) -> list:
    """The batch loop of ``benchmarks/stream.py`` over ``paths``: its resident MB after each
    group."""
    rss = run_batch([paths], store, out).rss_mb
    return [(count, rss[count - 1]) for count in range(every, len(paths) + 1, every)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--size", type=int, nargs=2, default=(1024, 1024))
    parser.add_argument("--distinct", type=int, default=20)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="worker-memory-") as tmp:
        work = Path(tmp)
        paths, store = exposures(work, args.n, args.distinct, tuple(args.size))
        stream = stream_samples(paths, store, work, args.every)
        batch = batch_samples(paths, store, work / "batch-out", args.every)
    print(f"{args.n} exposures of {args.size[0]}x{args.size[1]} ({args.distinct} distinct)")
    print(f"{'exposures':>10} {'event loop MB':>14} {'science MB':>11} {'batch MB':>9}")
    by_count = dict(batch)
    for count, loop, science in stream:
        peer = by_count.get(count, float("nan"))
        print(f"{count:>10} {loop:>14.1f} {science:>11.1f} {peer:>9.1f}")
    after = args.every  # the first group pays the imports, first touch and caches
    for label, series in (
        ("event loop", [(c, loop) for c, loop, _ in stream]),
        ("science process", [(c, s) for c, _, s in stream]),
        ("batch loop (peer)", batch),
    ):
        growth = growth_per_100(series, after)
        print(f"growth after {after} exposures, {label}: {growth:+.1f} MB per 100")


if __name__ == "__main__":
    main()
