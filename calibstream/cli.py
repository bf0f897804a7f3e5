"""The ``calibstream`` command: one subcommand per job, thin over the core."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import CalibstreamError
from .runtime import reuse_freed_memory


def _simulate(args: argparse.Namespace) -> int:
    from .simulate import write_simulation

    paths = write_simulation(Path(args.outdir), n=args.n, size=tuple(args.size), seed=args.seed)
    for path in paths:
        print(path)
    return 0


def _measure(args: argparse.Namespace) -> int:
    from .config import load_config
    from .pipeline import measure_file

    result = measure_file(Path(args.exposure), Path(args.out), load_config(args.config))
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    print(f"{args.exposure}: {len(result.catalog['id'])} sources -> {result.out_dir} ({stages})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out), size=tuple(args.size), seed=args.seed)


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

    p = sub.add_parser("demo", help="simulate an exposure and measure it (the embedded default)")
    p.add_argument("--out", default="demo-output")
    p.add_argument("--size", type=int, nargs=2, default=(2048, 2048), metavar=("NX", "NY"))
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reuse_freed_memory()
    try:
        return int(args.func(args))
    except CalibstreamError as exc:
        print(f"calibstream: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
