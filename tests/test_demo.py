"""``calibstream demo`` as a new user runs it: services up, exposures calibrated, all stopped."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from streams.kafka_admin import port_open

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
