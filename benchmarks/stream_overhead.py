"""What the events cost: the core's stages in memory beside the runner's chain, in one process.

    python benchmarks/stream_overhead.py [--n 6] [--size 2048 2048] [--rounds 3] [--redis URL]

The stream, replay and ``calibstream calibrate`` run the same code: the runner
(``streams.runner.run_chain``) takes an exposure's characterized-exposure event through
every agent's step, each decoding its input event and encoding the next. What that costs
beside the science alone, per exposure, in CPU seconds:

* core: ``calibstream.stages`` called directly, the results passed on in memory:
  ``detect`` -> ``astrometry`` -> ``photometry`` (its ``Fitted`` built from the solution
  as the match event carries it: the matched reference rows only, in match order) ->
  ``calibstream.io.outputs.write_calibration``;
* runner: ``run_chain(ctx, "detect", Message(...))`` on the same exposure, every stage
  in-process (as replay and the batch command run it): the same science plus building,
  encoding (Avro, zlib-compressed columns) and decoding each of the events, the sink's
  exposure outcome and the visit stage's fold (which the batch command runs too), the
  read model's counters and, with ``--redis URL``, the stream's Redis (read model and
  reference-shard cache, as a science process builds its context,
  ``streams.science.context``). The input event is made beforehand, as ``submit`` makes
  it, and not counted.

The two alternate exposure by exposure in the same process (which goes first swaps every
round), each round writing to fresh output roots. This 2-vCPU machine's speed drifts by
10-25% over minutes, more than the difference measured here; two calls a second apart on
the same exposure see the same machine. Printed: the median CPU ms per exposure of each,
their difference in ms and % (and the median of the paired differences), and whether the
two folders of the first exposure hold the same bytes. The broker, the event loop and the
hops are not in this figure (see benchmarks/stream.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from calibstream import stages  # noqa: E402
from calibstream.astrometry.fit import fitted_header  # noqa: E402
from calibstream.astrometry.refcat import ingest_refcat  # noqa: E402
from calibstream.astrometry.solve import Matches  # noqa: E402
from calibstream.config import Config  # noqa: E402
from calibstream.io.outputs import write_calibration  # noqa: E402
from calibstream.runtime import reuse_freed_memory  # noqa: E402
from calibstream.simulate.survey import write_simulation  # noqa: E402
from streams import events, runner, science  # noqa: E402
from streams.settings import Deployment, StreamSettings  # noqa: E402
from streams.worker import characterized_exposure  # noqa: E402


def core(path: Path, store: Path, root: Path, config: Config) -> Path:
    """The core's stages on one exposure, in memory; the exposure's folder."""
    frame, measurement = stages.detect(path, config)
    solution = stages.astrometry_or_partial(frame, measurement.catalog, store, config)
    fit, matches = solution.astrometry, solution.matches
    fitted = stages.Fitted(  # what streams.events.fitted_from_event gives from the match event
        frame=dataclasses.replace(frame, wcs_header=fitted_header(fit)),
        catalog=solution.catalog,
        refs=solution.refs.take(matches.ref),
        matches=Matches(matches.source, np.arange(len(matches.ref)), matches.distance_mas),
        astrms_mas=float(fit.rms_mas),
        astnmatch=int(fit.n_matches),
        background=measurement.background,
    )
    _, calibrated, _ = stages.photometry(fitted, config)  # no separate photometric store
    return write_calibration(calibrated, root)


def message(path: Path, ctx: runner.Context) -> runner.Message:
    """The characterized-exposure event of a file, as ``submit`` sends it."""
    _, key, value = characterized_exposure(path)
    return runner.Message(ctx.topology.stages[0].consumes, 0, 0, key, value, events.now_ms())


def chain(ctx: runner.Context, msg: runner.Message) -> None:
    """The runner on one exposure, every stage in-process."""
    outputs = runner.run_chain(ctx, ctx.topology.stages[0].agent, msg)
    roles = [(o.role, o.handled) for o in outputs]
    # the sink's exposure outcome goes on to the visit stage (a summary once complete)
    expected = [("detections", True), ("matches", True), ("zeropoints", True), ("outcomes", True)]
    assert roles[:4] == expected and all(r == "visits" for r, _ in roles[4:]), roles


def same_files(a: Path, b: Path) -> str:
    names = sorted({p.name for p in a.iterdir()} | {p.name for p in b.iterdir()})
    differ = [n for n in names if not ((a / n).is_file() and (b / n).is_file())]
    differ += [n for n in names if n not in differ and (a / n).read_bytes() != (b / n).read_bytes()]
    return "same bytes" if not differ else f"DIFFERENT: {', '.join(differ)}"


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

        def context(root: Path) -> runner.Context:
            settings = StreamSettings(redis=args.redis, refcat=str(store), output_root=str(root))
            return science.context(Deployment(stream=settings, science=config))

        warm, measured = paths[0], paths[1:]
        # the first exposure of a process pays for its memory: not measured; its two
        # folders show that both paths compute the same thing
        folder = core(warm, store, work / "core-warm", config)
        ctx = context(work / "runner-warm")
        chain(ctx, message(warm, ctx))
        same = same_files(folder, ctx.root / folder.relative_to(work / "core-warm"))
        cpu: dict[str, list[float]] = {"core": [], "runner": []}
        for r in range(args.rounds):
            root = work / f"core{r}"
            ctx = context(work / f"runner{r}")
            for path in measured:
                msg = message(path, ctx)
                for label in ("core", "runner") if r % 2 == 0 else ("runner", "core"):
                    start = time.process_time()
                    if label == "core":
                        core(path, store, root, config)
                    else:
                        chain(ctx, msg)
                    cpu[label].append(time.process_time() - start)

    ms = {k: statistics.median(v) * 1000 for k, v in cpu.items()}
    extra = ms["runner"] - ms["core"]
    paired = statistics.median(s - c for s, c in zip(cpu["runner"], cpu["core"], strict=True))
    print(
        f"{len(measured)} exposures of {args.size[0]}x{args.size[1]} x {args.rounds} rounds, "
        f"Redis {'on' if args.redis else 'off'}; median CPU ms per exposure: core stages in "
        f"memory {ms['core']:.1f}, runner's chain {ms['runner']:.1f}: {extra:+.1f} ms = "
        f"{extra / ms['core']:+.1%} for the events (paired median {paired * 1000:+.1f} ms; "
        f"target < 10%); first exposure's folders: {same}"
    )


if __name__ == "__main__":
    main()
