"""The core's subcommands (no services): simulate, measure, ingest-refcat.

The ``calibstream`` console script is ``streams.cli``, which adds the streaming ones.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from calibstream.errors import CalibstreamError
from calibstream.runtime import reuse_freed_memory


def _simulate(args: argparse.Namespace) -> int:
    from calibstream.simulate.survey import write_simulation

    paths = write_simulation(Path(args.outdir), n=args.n, size=tuple(args.size), seed=args.seed)
    for path in paths:
        print(path)
    return 0


def _measure(args: argparse.Namespace) -> int:
    from calibstream.config import load_config
    from calibstream.detection.pipeline import measure_file

    result = measure_file(Path(args.exposure), Path(args.out), load_config(args.config))
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    print(f"{args.exposure}: {len(result.catalog['id'])} sources -> {result.out_dir} ({stages})")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from calibstream.astrometry.refcat import ingest_refcat

    report = ingest_refcat([Path(p) for p in args.catalogs], Path(args.out), nside=args.nside)
    print(
        f"{report.rows} rows from {len(report.sources)} file(s) -> {report.shards} shards "
        f"(nside {report.nside}, bands {', '.join(report.bands) or 'none'}) in {report.store}, "
        f"{report.seconds:.1f} s"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calibstream", description="Calibrate characterized telescope exposures."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write simulated exposures, truth files and a refcat")
    p.add_argument("outdir")
    p.add_argument("--n", type=int, default=1, help="number of exposures")
    p.add_argument("--size", type=int, nargs=2, default=(2048, 2048), metavar=("NX", "NY"))
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_simulate)

    p = sub.add_parser("measure", help="detect and measure deep; write src.fits, background.fits")
    p.add_argument("exposure")
    p.add_argument("--out", required=True, help="output folder for src.fits and background.fits")
    p.add_argument("--config", default=None, help="TOML configuration file")
    p.set_defaults(func=_measure)

    p = sub.add_parser("ingest-refcat", help="shard reference catalogs (FITS, Parquet, CSV)")
    p.add_argument("catalogs", nargs="+")
    p.add_argument("--out", required=True, help="the store folder")
    p.add_argument("--nside", type=int, default=32, help="HEALPix nside of the shards")
    p.set_defaults(func=_ingest)

    return parser


def main(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run a subcommand of ``parser`` (by default the core's); a typed error exits 2."""
    args = (parser or build_parser()).parse_args(argv)
    reuse_freed_memory()
    try:
        return int(args.func(args))
    except CalibstreamError as exc:
        print(f"calibstream: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
