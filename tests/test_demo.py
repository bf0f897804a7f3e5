"""``calibstream demo`` as a new user runs it: services up, exposures calibrated, all stopped."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from calibstream.camera import grid_camera
from streams.kafka_admin import port_open
from streams.settings import load_deployment

pytestmark = pytest.mark.slow


def test_demo_streams_exposures_and_stops_what_it_started(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "demo",
            "--out",
            str(tmp_path),
            "--n",
            "4",
            "--size",
            "768",
            "768",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    broker = re.search(r"embedded broker \(Tansu\) at 127\.0\.0\.1:(\d+)", out)
    assert broker, out
    rows = re.findall(r"^\s+(\d+)\s+ok\s+(\d+\.\d+)±", out, flags=re.M)
    assert len(rows) == 3, out
    assert re.search(r"^\s+1003\s+failed\s+read: .*truncated", out, flags=re.M), out
    for expid, magzero in rows:
        summary = json.loads(
            (tmp_path / "results" / "exposures" / expid / "summary.json").read_text()
        )
        assert summary["status"] == "ok"
        assert f"{summary['header']['MAGZERO']:.4f}" == magzero
    assert not port_open("127.0.0.1", int(broker.group(1))), "the broker was left running"
    dashboard = re.search(r"dashboard at http://127\.0\.0\.1:(\d+)/", out)
    assert dashboard, out
    assert not port_open("127.0.0.1", int(dashboard.group(1))), "the dashboard was left running"
    redis = re.search(r"Redis at 127\.0\.0\.1:(\d+)", out)
    if redis:
        assert not port_open("127.0.0.1", int(redis.group(1))), "Redis was left running"


def test_demo_streams_whole_visits(tmp_path):
    """Two visits of the 3x3 camera: the camera in stream.toml, one detector truncated, each
    visit's summary written and printed beside its truth. ``run_demo(visits=...)`` is what
    ``calibstream demo --visits`` calls."""
    code = (
        "import sys; from pathlib import Path; from harness.demo import run_demo; "
        f"sys.exit(run_demo(Path({str(tmp_path)!r}), visits=2, seed=1, dashboard_port=0))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "2 visit(s) of camera sim3x3 (9 detectors of 1024x1024)" in out, out
    rows = re.findall(r"^\s+(\d+)\s+ok\s+(\d+\.\d+)±", out, flags=re.M)
    assert sorted(int(e) for e, _ in rows) == [*range(1000, 1009), *range(2000, 2008)], out
    assert re.search(r"^\s+2008\s+failed\s+read: .*truncated", out, flags=re.M), out
    camera = load_deployment(tmp_path / "stream.toml").science.camera
    assert camera == grid_camera(3, (1024, 1024), name="sim3x3")
    for visit, failed in ((1, []), (2, [8])):
        truth = json.loads((tmp_path / "simulated" / f"visit_{visit}.truth.json").read_text())
        folder = tmp_path / "results" / "visits" / str(visit)
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["failed"] == failed and summary["missing"] == []
        assert len(summary["ok"]) == 9 - len(failed)
        assert abs(summary["zeropoint"] - truth["magzero"]) < 0.005
        row = re.search(rf"^\s+{visit}\s+{9 - len(failed)}\s+{len(failed)}\s+0\s", out, re.M)
        assert row, out
    broker = re.search(r"embedded broker \(Tansu\) at 127\.0\.0\.1:(\d+)", out)
    assert broker and not port_open("127.0.0.1", int(broker.group(1))), out
