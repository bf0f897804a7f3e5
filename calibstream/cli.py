"""The core's subcommands (no services): simulate, measure, ingest-refcat.

The ``calibstream`` console script is ``streams.cli``, which adds the streaming ones.
Every mistake is answered in one line, never a traceback: exit code 2 for a usage or
input error (bad arguments, a bad configuration, a typed calibstream error), 1 for a
runtime failure (a service unreachable, the file system).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from calibstream.errors import CalibstreamError
from calibstream.runtime import reuse_freed_memory


def _simulate(args: argparse.Namespace) -> int:
    problem = _simulate_arguments_problem(args)
    if problem:
        return _usage("simulate", problem)
    if args.visits is None:
        from calibstream.simulate.survey import write_simulation

        n = 1 if args.n is None else args.n
        paths = write_simulation(Path(args.outdir), n=n, size=tuple(args.size), seed=args.seed)
    else:
        paths = _simulate_visits(args)
    for path in paths:
        print(path)
    return 0


#: ``simulate``'s options that describe a visit: the flag, and its argparse name.
_VISIT_ONLY = {
    "--camera-grid": "camera_grid",
    "--bad-detectors": "bad_detectors",
    "--missing-detectors": "missing_detectors",
}


def _simulate_arguments_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``simulate``'s arguments taken together (argparse checks each)."""
    if args.visits is None:
        chosen = [flag for flag, name in _VISIT_ONLY.items() if getattr(args, name) is not None]
        return f"{', '.join(chosen)} only with --visits" if chosen else None
    if args.n is not None:
        return "--n (exposures) or --visits (whole visits), not both"
    grid = args.camera_grid or 3
    bad, missing = set(args.bad_detectors or ()), set(args.missing_detectors or ())
    for flag, ids in (("--bad-detectors", bad), ("--missing-detectors", missing)):
        unknown = sorted(i for i in ids if i >= grid * grid)
        if unknown:
            return f"{flag}: {unknown} not in the {grid}x{grid} camera (0..{grid * grid - 1})"
    if bad & missing:
        return f"detector(s) {sorted(bad & missing)} both bad and missing"
    return None


def _simulate_visits(args: argparse.Namespace) -> list[Path]:
    """Whole visits of a square camera and its ``[camera]`` table beside them (``camera.toml``):
    a worker's configuration needs it to expect these detectors."""
    from calibstream.camera import grid_camera
    from calibstream.config import camera_toml
    from calibstream.simulate import write_visits

    grid = args.camera_grid or 3
    camera = grid_camera(grid, size=tuple(args.size), name=f"sim{grid}x{grid}")
    out = Path(args.outdir)
    paths = write_visits(
        out,
        camera,
        args.visits,
        args.seed,
        bad=args.bad_detectors or (),
        missing=args.missing_detectors or (),
    )
    (out / "camera.toml").write_text(camera_toml(camera))
    return [*paths, out / "camera.toml"]


def _usage(command: str, message: str) -> int:
    """A usage error found after parsing, worded as the parser's own (exit code 2)."""
    print(f"calibstream {command}: {message} (see calibstream {command} --help)", file=sys.stderr)
    return USAGE


def _measure(args: argparse.Namespace) -> int:
    from calibstream.config import load_config
    from calibstream.detection.pipeline import measure_file

    result = measure_file(Path(args.exposure), Path(args.out), load_config(args.config))
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    print(f"{args.exposure}: {len(result.catalog['id'])} sources -> {result.out_dir} ({stages})")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from calibstream.astrometry.refcat import ingest_refcat

    report = ingest_refcat(
        [Path(p) for p in args.catalogs],
        Path(args.out),
        nside=args.nside,
        form=args.format,
        name=args.name,
    )
    for source in report.sources:
        how = "as given" if args.format else "recognised"
        print(f"{source.path}: {_FORM_WORDS.get(source.form, source.form)}, {how}")
    print(
        f"{report.rows} rows from {len(report.sources)} file(s) -> {report.shards} shards "
        f"(nside {report.nside}, bands {', '.join(report.bands) or 'none'}) in {report.store} "
        f"named {report.name!r}, "
        f"{report.seconds:.1f} s"
    )
    return 0


_FORM_WORDS = {
    "contract": "the contract's columns (contract)",
    "gaia-dr3": "Gaia DR3's columns (gaia-dr3)",
    "lsst": "an LSST stack refcat's columns (lsst)",
    "hats:contract": "a HATS catalogue (hats) with the contract's columns",
    "hats:gaia-dr3": "a HATS catalogue (hats) with Gaia DR3's columns",
    "hats:lsst": "a HATS catalogue (hats) with an LSST stack refcat's columns",
}

#: Exit codes: a usage or input error (argparse's own is 2 too), a runtime failure.
USAGE, RUNTIME = 2, 1

#: The smallest chip side ``simulate`` accepts: below ~80 px the simulator's first-guess SIP
#: inverse fails to converge for some seeds (64x64, seed 2); 16 is SimConfig's own floor.
MIN_CHIP_SIDE = 128
#: The largest ``--camera-grid``: an EXPID (VISIT x 1000 + DETECTOR) holds detectors 0..999.
MAX_CAMERA_GRID = 31


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        value = _whole(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"at_least_{minimum}"
    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {value}")
    return value


def chip_side(text: str) -> int:
    """An argparse type: a simulated chip's side in pixels (at least :data:`MIN_CHIP_SIDE`)."""
    value = _whole(text)
    if value < MIN_CHIP_SIDE:
        raise argparse.ArgumentTypeError(
            f"the simulator needs at least {MIN_CHIP_SIDE} pixels a side, got {value}"
        )
    return value


def camera_grid(text: str) -> int:
    """An argparse type: a square camera's side in detectors, 1 to :data:`MAX_CAMERA_GRID`."""
    value = positive_int(text)
    if value > MAX_CAMERA_GRID:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_CAMERA_GRID} (an EXPID holds detector ids below 1000), got {value}"
        )
    return value


def power_of_two(text: str) -> int:
    value = positive_int(text)
    if value & (value - 1) or value > 2**29:
        raise argparse.ArgumentTypeError(f"must be a power of 2 up to 2**29, got {value}")
    return value


def _visit_options(p: argparse.ArgumentParser) -> None:
    """``simulate``'s whole visits: a square camera of --size detectors (ids row-major)."""
    p.add_argument(
        "--visits", type=positive_int, default=None, help="whole visits instead of exposures"
    )
    p.add_argument(
        "--camera-grid", type=camera_grid, default=None, metavar="G", help="GxG detectors (3)"
    )
    for which, what in (("bad", "truncated in"), ("missing", "left out of")):
        p.add_argument(
            f"--{which}-detectors",
            type=non_negative_int,
            nargs="+",
            default=None,
            metavar="ID",
            help=f"detector ids {what} every visit",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="calibstream", description="Calibrate characterized telescope exposures."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write simulated exposures, truth files and a refcat")
    p.add_argument("outdir")
    p.add_argument("--n", type=positive_int, default=None, help="number of exposures (1)")
    p.add_argument(
        "--size",
        type=chip_side,
        nargs=2,
        default=(2048, 2048),
        metavar=("NX", "NY"),
        help=f"pixels of an exposure or a visit's detector (each at least {MIN_CHIP_SIDE})",
    )
    p.add_argument("--seed", type=non_negative_int, default=0)
    _visit_options(p)
    p.set_defaults(func=_simulate)

    p = sub.add_parser("measure", help="detect and measure deep; write src.fits, background.fits")
    p.add_argument("exposure")
    p.add_argument("--out", required=True, help="output folder for src.fits and background.fits")
    p.add_argument("--config", default=None, help="TOML configuration file")
    p.set_defaults(func=_measure)

    p = sub.add_parser(
        "ingest-refcat",
        help="shard reference catalogs (FITS, Parquet, CSV; contract, Gaia DR3, LSST, HATS)",
    )
    p.add_argument("catalogs", nargs="+", help="tables, LSST refcat folders or HATS catalogues")
    p.add_argument("--out", required=True, help="the store folder")
    p.add_argument(
        "--format",
        choices=("contract", "gaia-dr3", "lsst", "hats"),
        default=None,
        help="the inputs' form (default: recognised by their columns, and said)",
    )
    p.add_argument(
        "--name", default=None, help="the catalogue's name, for colour terms (default: --out's)"
    )
    p.add_argument(
        "--nside", type=power_of_two, default=32, help="HEALPix nside of the shards (a power of 2)"
    )
    p.set_defaults(func=_ingest)

    return parser


def main(
    argv: Sequence[str] | None = None,
    parser: argparse.ArgumentParser | None = None,
    *,
    prepare: Callable[[argparse.Namespace], None] | None = None,
    explain: Callable[[Exception, argparse.Namespace], str | None] | None = None,
) -> int:
    """Run a subcommand of ``parser`` (by default the core's); every expected error is one
    line on stderr: a typed calibstream error exits 2 (or its ``exit_code``: a service
    unreachable is 1), a file-system error 1.

    ``prepare(args)`` runs first (the streaming CLI checks there that the services the
    command needs answer); ``explain(exc, args)`` words an exception the core does not know
    (a Kafka or Redis client's: exit 1), or returns None and it propagates (a bug keeps its
    traceback)."""
    args = (parser or build_parser()).parse_args(argv)
    lone = hasattr(args, "exposure") or len(getattr(args, "exposures", None) or ()) == 1
    if not lone:
        # Freed planes kept for the next exposure; a lone exposure has no next one, and
        # glibc's own large blocks (mapped, returned when freed) peak ~150 MB lower.
        reuse_freed_memory()
    try:
        if prepare is not None:
            prepare(args)
        return int(args.func(args))
    except CalibstreamError as exc:
        return _fail(str(exc), getattr(exc, "exit_code", USAGE))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:
        message = explain(exc, args) if explain is not None else None
        if message is None and isinstance(exc, OSError):
            message = str(exc)
        if message is None:
            raise
        return _fail(message, RUNTIME)


def _fail(message: str, code: int) -> int:
    print(f"calibstream: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
