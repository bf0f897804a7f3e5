"""A pass-through stage declared by a test only: the zero-point event relayed unchanged to a
topic of its own, which the sink then reads. Run as a script, a worker of that topology.

While a file ``ROOT/hold-<EXPID>`` exists, the relay of that exposure stops on a fault of
the machine (as a read-only root would stop the sink), so a test can hold one exposure."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

from calibstream.failures import TransientFailure
from streams.topology import CALIBRATE, Stage, Topology


def step(ctx: Any, event: Mapping[str, Any]) -> dict:
    if (ctx.root / f"hold-{event['exposure_id']}").exists():
        raise TransientFailure("relay", f"held by {ctx.root}/hold-{event['exposure_id']}")
    return dict(event)


def topology() -> Topology:
    """CALIBRATE with ``relay`` between the photometry and the sink: one row, nothing else."""
    relay = Stage("relay", "zeropoints", "zeropoint", "relayed", "zeropoint", "passthrough_stage")
    stages: list[Stage] = []
    for stage in CALIBRATE:
        if stage.agent == "sink":
            stages += [relay, dataclasses.replace(stage, consumes="relayed")]
        else:
            stages.append(stage)
    return Topology(tuple(stages))


if __name__ == "__main__":
    from streams.settings import load_deployment
    from streams.worker import run_worker

    deployment = dataclasses.replace(load_deployment(sys.argv[1]), topology=topology())
    sys.exit(run_worker(deployment))
