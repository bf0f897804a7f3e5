"""A worker's memory stays flat over 100 exposures (issue 17).

One worker on the embedded broker with one science process is fed 100 distinct exposures
(10 simulated, each copied under nine more EXPIDs), 20 at a time; after each group, idle,
the resident memory of its event loop and of its science process is sampled. After the
first group (imports, first touch, the reference shards cached), neither may grow by more
than ``BOUND_MB`` per 100 exposures: a leak of one exposure's catalogue (~0.1 MB at
1024²) or its events per exposure would exceed it. ``benchmarks/worker_memory.py`` prints
the same samples beside the batch command's."""

from __future__ import annotations

import pytest
from conftest_services import *  # noqa: F403 (the fixtures: tansu, redis_factory)

from calibstream.astrometry.refcat import ingest_refcat
from calibstream.simulate.survey import write_simulation
from harness.memory import follow_worker_memory, growth_per_100, renumbered_copies
from harness.workers import own_config

pytestmark = pytest.mark.slow

N, EVERY, DISTINCT = 100, 20, 10
BOUND_MB = 5.0  # per 100 exposures; measured +1.3 (event loop) and +0.4 (science)


def test_a_workers_memory_stays_flat_over_100_exposures(tansu, redis_factory, tmp_path):
    sim = tmp_path / "sim"
    write_simulation(sim, n=DISTINCT, size=(1024, 1024), seed=11)
    store = tmp_path / "store"
    ingest_refcat([sim / "refcat.fits"], store)
    paths = renumbered_copies(sorted(sim.glob("exp_*[0-9].fits")), N, tmp_path / "run")
    config = own_config(tmp_path, tansu.url, store, "m", redis=redis_factory().url)
    samples = follow_worker_memory(config, paths, EVERY, tmp_path / "worker")
    print("exposures, event loop MB, science MB:", samples)
    assert [count for count, *_ in samples] == list(range(EVERY, N + 1, EVERY))
    loop = growth_per_100([(c, mb) for c, mb, _ in samples], EVERY)
    science = growth_per_100([(c, mb) for c, _, mb in samples], EVERY)
    assert samples[-1][2] > 100, "no science process was sampled"
    assert loop <= BOUND_MB, f"the event loop grew {loop:+.1f} MB per 100 exposures"
    assert science <= BOUND_MB, f"the science process grew {science:+.1f} MB per 100 exposures"
