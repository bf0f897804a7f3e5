"""A partition holding records nobody takes is sought back (streams/stall.py).

The watch's rule, then a live worker on the embedded broker that skips a record as faust
can at an assignment (tests/skipping_worker.py): with the watch the record is calibrated
a few seconds later; without it, it waits.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from conftest_services import *  # noqa: F403 (the fixtures: tansu)
from streaming import Worker, expid_of, folders, make_survey, own_config, wait_for_folders

from streams.settings import load_deployment
from streams.stall import Observed, StallWatch
from streams.worker import submit

SCRIPT = REPO / "tests" / "skipping_worker.py"


def test_a_partition_waiting_unchanged_over_two_looks_is_sought_back():
    watch = StallWatch()
    assert watch.stalled({"p": Observed(3, 5, idle=True)}) == {}
    assert watch.stalled({"p": Observed(3, 5, idle=True)}) == {"p": 3}
    assert watch.stalled({"p": Observed(3, 5, idle=True)}) == {}  # counted afresh after


def test_progress_work_in_hand_or_nothing_waiting_is_no_stall():
    watch = StallWatch()
    looks = [
        {"a": Observed(3, 5, True), "b": Observed(3, 5, False), "c": Observed(5, 5, True)},
        {"a": Observed(4, 5, True), "b": Observed(3, 5, False), "c": Observed(5, 5, True)},
        {"a": Observed(5, 6, True), "b": Observed(3, 5, False), "c": Observed(None, 9, True)},
    ]
    assert [watch.stalled(look) for look in looks] == [{}, {}, {}]
    # a partition that left and came back is counted afresh
    watch = StallWatch()
    assert watch.stalled({"a": Observed(3, 5, True)}) == {}
    assert watch.stalled({}) == {}
    assert watch.stalled({"a": Observed(3, 5, True)}) == {}


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return make_survey(tmp_path_factory.mktemp("stall"), n_good=3, size=512, seed=31)


@pytest.mark.parametrize("stall_check_s", [1.0, 0.0], ids=["watched", "unwatched"])
def test_a_skipped_record_is_taken_again(survey, tansu, tmp_path, stall_check_s):
    config = own_config(
        tmp_path, tansu.url, survey.store, "s", partitions=1, stall_check_s=stall_check_s
    )
    root = tmp_path / "out"
    stream = load_deployment(config).stream
    first, skipped = (str(expid_of(p)) for p in survey.good[:2])
    argv = [sys.executable, str(SCRIPT), str(config)]
    worker = Worker(config, tmp_path / "worker.log", argv=argv)
    try:
        submit(survey.good[:1], stream)  # taken and committed: the partition has an offset
        wait_for_folders(root, {first}, timeout=120, workers=[worker])
        time.sleep(2.0)  # committed (every second)
        wait_for_file(root, "pause", "paused", worker)
        submit(survey.good[1:2], stream)  # waits in the broker, then is skipped
        wait_for_file(root, "skip", "skipped", worker)
        if stall_check_s:
            wait_for_folders(root, {first, skipped}, timeout=30, workers=[worker])
            assert "seeking back to it" in worker.log.read_text(errors="replace")
        else:
            time.sleep(8.0)
            assert set(folders(root)) == {first}, "skipped, and taken all the same"
        assert worker.running, worker.log_tail()
    finally:
        worker.stop()


def wait_for_file(root: Path, ask: str, answer: str, worker: Worker) -> None:
    """Touch ``ROOT/ask`` and wait for the worker's ``ROOT/answer``."""
    (root / ask).touch()
    deadline = time.monotonic() + 30
    while not (root / answer).exists():
        assert time.monotonic() < deadline and worker.running, worker.log_tail()
        time.sleep(0.1)
