"""The fault suite (benchmarks/faults.py) on 6 exposures (3 of them bad on purpose), over the
faults that are cheap: the output root read-only for a while, 20 tombstones on the exposures
topic, a busy science process killed, the worker killed (``kill -9``) and another started.

Each fault must leave every good exposure persisted once and complete, every bad one with its
failure summary, no duplicate, no partial folder, and the read model's rows agreeing with the
folders. A fault the service cannot take yet is marked ``xfail(strict=True)`` naming what is
missing, so that it turns into a failure (and gets un-marked) when the feature lands.

Also the injectors themselves (harness/faults.py): each undoes what it did, even on error.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest
from conftest import REPO
from conftest_services import *  # noqa: F403 (the fixtures: kafka, tansu)

from harness import faults

pytestmark = pytest.mark.slow


def _load_suite():
    spec = importlib.util.spec_from_file_location("fault_suite", REPO / "benchmarks/faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


suite = _load_suite()


@pytest.fixture(scope="module")
def broker(request):
    """Apache Kafka when it can run here, else the embedded broker."""
    try:
        return request.getfixturevalue("kafka")
    except pytest.skip.Exception:
        return request.getfixturevalue("tansu")


@pytest.fixture(scope="module")
def bench(broker, tmp_path_factory):
    work = tmp_path_factory.mktemp("faults")
    survey = suite.make_survey(work / "survey", n=6, size=1024, seed=5, crowded=False)
    return suite.Bench(
        work, survey, broker, restartable=False, can_mount=suite.can_mount(work), hold_s=4.0
    )


@pytest.mark.parametrize("name", ["read-only", "tombstones", "science-kill", "worker-kill"])
def test_a_fault_leaves_every_exposure_persisted_once(bench, name):
    fault = suite.FAULTS[name]
    if fault.mount and not bench.can_mount:
        pytest.skip("cannot mount a tmpfs here (root needed)")
    row = suite.run_fault(bench, fault)
    print("\n" + suite.HEADER + "\n" + suite.format_row(row))
    shown = suite.format_row(row)
    assert row.submitted == 6 and row.bad == 3, shown
    assert row.persisted == row.submitted - row.bad, shown
    assert row.failed == row.bad, shown
    assert row.duplicates == 0 and row.partial == 0, shown
    assert row.rows_right == row.rows == row.persisted + row.failed, shown
    assert "ORPHANS" not in row.note, shown
    if name != "tombstones":  # it hit mid-stream: exposures were still to come when it ended
        assert row.done_s is not None and row.done_s > 0, shown


# ---------------------------------------------------------------- the injectors


def test_read_only_and_full_disk_undo_themselves(tmp_path):
    if not suite.can_mount(tmp_path):
        pytest.skip("cannot mount a tmpfs here (root needed)")
    with faults.tmpfs(tmp_path / "root", "2m") as root:
        with pytest.raises(RuntimeError), faults.read_only(root):
            with pytest.raises(OSError, match="Read-only"):
                (root / "x").write_text("x")
            raise RuntimeError("the code inside fails")
        (root / "x").write_text("writable again")
        with pytest.raises(RuntimeError), faults.full_disk(root):
            with pytest.raises(OSError, match="No space left"):
                (root / "y").write_bytes(b"y" * 8192)
            raise RuntimeError("the code inside fails")
        assert not (root / faults.FILLER).exists()
        (root / "y").write_bytes(b"y" * 8192)
    assert not os.path.ismount(tmp_path / "root")
    plain = tmp_path / "plain"  # not a mount point: bind-mounted onto itself for the while
    plain.mkdir()
    with faults.read_only(plain), pytest.raises(OSError, match="Read-only"):
        (plain / "x").write_text("x")
    (plain / "x").write_text("writable again")
    with pytest.raises(faults.FaultUnavailable), faults.full_disk(plain):  # never a real disk
        pass


def test_census_counts_partial_and_duplicate_folders(tmp_path):
    base = tmp_path / "exposures"
    folders = {
        "1": ("ok", faults.OK_FILES),
        "2": ("failed", {"summary.json"}),
        "3": ("warning", faults.OK_FILES),
        "4": ("partial", {"summary.json", "src.fits"}),  # a stage could not fit: not in full
        "5": ("ok", {"summary.json", "src.fits"}),  # files missing: incomplete
        "6": (None, {"calexp.fits"}),  # no summary: incomplete
        ".1.new-abc123": (None, {"calexp.fits"}),  # staging leftover: incomplete, duplicate
        ".2.old-xyz": ("failed", {"summary.json"}),  # a replaced folder: a duplicate of 2
    }
    for name, (status, files) in folders.items():
        (base / name).mkdir(parents=True)
        for file in files:
            expid = int(next(c for c in name if c.isdigit()))
            text = json.dumps({"status": status, "expid": expid})
            (base / name / file).write_text(text if file == "summary.json" else "x")
    found = faults.census(tmp_path)
    assert found.ok == {"1", "3"} and found.failed == {"2", "4"}
    assert sorted(found.partial) == [".1.new-abc123", "5", "6"]
    assert found.outcomes == {"1", "2", "3", "4"}
    assert found.duplicates == 2
    assert found.rows == 5 and found.rows_right == 0  # no read model: no row is right
