"""A worker that skips records on demand, as faust can at an assignment: run as a script,
``python tests/skipping_worker.py STREAM.TOML``, it is ``calibstream worker`` plus a
timer watching the output root for two files:

- ``ROOT/pause``: the exposures topic's partition 0 stops being fetched (``ROOT/paused``
  says so), so what is sent to it next waits in the broker;
- ``ROOT/skip``: partition 0 is sought to its end offset, past those records, and fetched
  again (``ROOT/skipped``): they are neither taken nor acknowledged, as a record faust
  skipped. Only the stall watch (streams/stall.py) brings them back.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from faust.types import TP

import streams.worker
from streams.settings import load_deployment

_build = streams.worker.build_service


def build_service(deployment: Any) -> Any:
    service = _build(deployment)
    root = Path(deployment.stream.output_root)
    tp = TP(deployment.stream.topic("exposures"), 0)

    @service.app.timer(0.2)
    async def skip_on_demand() -> None:
        consumer = service.app.consumer
        if (root / "pause").exists() and not (root / "paused").exists():
            consumer.pause_partitions([tp])
            (root / "paused").touch()
        if (root / "skip").exists() and not (root / "skipped").exists():
            end = (await consumer.highwaters(tp))[tp]
            await consumer.seek(tp, end)
            consumer.resume_partitions([tp])
            (root / "skipped").write_text(str(end))

    return service


if __name__ == "__main__":
    streams.worker.build_service = build_service
    sys.exit(streams.worker.run_worker(load_deployment(sys.argv[1])))
