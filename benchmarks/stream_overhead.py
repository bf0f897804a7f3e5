"""The streaming steps' own cost beside the batch's, exposure by exposure, in one process.

    python benchmarks/stream_overhead.py [--n 6] [--size 2048 2048] [--rounds 3] [--redis URL]

What a science process does per exposure in the stream (decode each event, the science,
encode the next event, the chain's four steps, the sink's folder) against what
``calibstream calibrate`` does (the science and the folder), in CPU seconds, the two
alternating exposure by exposure in the same process. This 2-vCPU machine's speed drifts
by 10-25% over minutes, more than the difference measured here; end-to-end runs
(``benchmarks/stream.py``) a minute apart disagree by that much, while two calls a second
apart on the same exposure see the same machine. The broker, the event loop and the hops
are not in this figure (they run beside the science process, see benchmarks/stream.py).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from calibstream.astrometry.refcat import ingest_refcat  # noqa: E402
from calibstream.batch import calibrate_file  # noqa: E402
from calibstream.config import Config  # noqa: E402
from calibstream.runtime import reuse_freed_memory  # noqa: E402
from calibstream.simulate.simulate import write_simulation  # noqa: E402
from streams import steps  # noqa: E402
from streams.readmodel import RedisReadModel  # noqa: E402
from streams.settings import StreamSettings  # noqa: E402
from streams.worker import characterized_exposure  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6, help="exposures")
    parser.add_argument("--size", type=int, nargs=2, default=(2048, 2048), metavar=("NX", "NY"))
    parser.add_argument("--rounds", type=int, default=3, help="passes over the exposures")
    parser.add_argument("--redis", default=None, help="the stream's Redis (default: none)")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    reuse_freed_memory()  # as a worker's science process and the calibrate command do

    with tempfile.TemporaryDirectory(prefix="calibstream-overhead-") as tmp:
        work = Path(tmp)
        write_simulation(work / "sim", n=args.n + 1, size=tuple(args.size), seed=args.seed)
        paths = sorted((work / "sim").glob("exp_*[0-9].fits"))
        store = work / "store"
        ingest_refcat([work / "sim" / "refcat.fits"], store)
        config = Config()
        settings = StreamSettings(refcat=str(store), output_root=str(work / "stream"))
        ctx = steps.Context(settings, config, RedisReadModel(args.redis))
        onward = frozenset(steps.NEXT_AGENT.values())

        def batch(path: Path) -> None:
            calibrate_file(path, store, work / "batch", config)

        def stream(path: Path) -> None:
            _, key, value = characterized_exposure(path)
            outputs = steps.run_chained(
                ctx, "detect", steps.Message("exposures", 0, 0, key, value), onward
            )
            assert [o.handled for o in outputs] == [True, True, True], [o.role for o in outputs]

        warm, measured = paths[0], paths[1:]
        batch(warm)  # the first exposure of a process pays for its memory: not measured
        stream(warm)
        cpu = {"batch": 0.0, "stream": 0.0}
        for r in range(args.rounds):
            order = (("batch", batch), ("stream", stream))
            for path in measured:
                for label, run in order if r % 2 == 0 else order[::-1]:
                    start = time.process_time()
                    run(path)
                    cpu[label] += time.process_time() - start

    n = args.rounds * len(measured)
    per = {k: v / n * 1000 for k, v in cpu.items()}
    extra = per["stream"] - per["batch"]
    print(
        f"{len(measured)} exposures of {args.size[0]}x{args.size[1]} x {args.rounds} rounds, "
        f"Redis {'on' if args.redis else 'off'}; CPU ms per exposure: batch {per['batch']:.1f}, "
        f"stream steps {per['stream']:.1f}: {extra:+.1f} ms = {extra / per['batch']:+.1%} "
        "(target < 10%)"
    )


if __name__ == "__main__":
    main()
