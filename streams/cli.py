"""The ``calibstream`` command: the core's subcommands plus the streaming service's.

Errors are answered in one line by the core's ``main`` (exit 2: usage, configuration; 1: a
runtime failure); here, the services a command needs are checked before it runs, and a Kafka
or Redis client's error is worded.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from calibstream import cli as core_cli
from calibstream.cli import camera_grid, chip_side, non_negative_int, port, positive_int
from streams.settings import Deployment, load_deployment
from streams.topology import CALIBRATE


def _deployment(args: argparse.Namespace) -> Deployment:
    return load_deployment(
        args.config,
        broker=args.broker,
        redis=args.redis,
        refcat=args.refcat,
        photometry_refcat=getattr(args, "photometry_refcat", None),
        output_root=args.out,
        science_processes=getattr(args, "processes", None),
    )


def _calibrate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from streams.batch import calibrate_file
    from streams.batch_report import IN_FULL, result_line
    from streams.readmodel import RedisReadModel
    from streams.runner import Context, finish

    deployment = load_deployment(
        args.config,
        refcat=args.refcat,
        photometry_refcat=args.photometry_refcat,
        output_root=args.out,
    )
    ctx = Context(
        deployment.stream, deployment.science, RedisReadModel(None), None, deployment.topology
    )
    failed = 0
    bar = tqdm(args.exposures, unit="exposure", disable=None)
    for offset, path in enumerate(bar):
        outcome = calibrate_file(Path(path), ctx, offset)
        bar.write(result_line(path, outcome.status, outcome.folder, outcome.reason))
        failed += outcome.status not in IN_FULL
    finish(ctx)  # the visits these files belong to, summarised as they stand
    if failed:
        print(
            f"{failed} of {len(args.exposures)} exposures not calibrated in full "
            "(partial, failed or not calibrated)",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _worker(args: argparse.Namespace) -> int:
    from streams.worker import run_worker

    return run_worker(_deployment(args), loglevel=args.loglevel)


def _submit(args: argparse.Namespace) -> int:
    from streams.worker import submit

    for path, expid in submit([Path(p) for p in args.exposures], _deployment(args).stream):
        print(f"{path}: submitted EXPID {expid}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from streams.replay import replay, start_point

    deployment = _deployment(args)
    report = replay(
        deployment,
        role=args.topic,
        start=start_point(args.from_offset, args.from_time),
        until=start_point(args.until_offset, args.until_time)
        if args.until_offset is not None or args.until_time
        else None,
        partitions=args.partition,
    )
    print(report.describe())
    return 0 if report.failed == 0 else 1


def _redrive(args: argparse.Namespace) -> int:
    from streams.redrive import redrive

    report = redrive(_deployment(args))
    print(report.describe())
    return 0 if not report.missing else 1


def _rebuild_read_model(args: argparse.Namespace) -> int:
    from streams.readmodel import RedisReadModel
    from streams.rebuild import rebuild_read_model

    stream = _deployment(args).stream
    readmodel = RedisReadModel(stream.redis)
    if readmodel.state != "up":
        print(f"Redis ({stream.redis}) is not reachable: nothing rebuilt", file=sys.stderr)
        return 1
    rows = rebuild_read_model(Path(stream.output_root), readmodel)
    print(f"read model rebuilt: {rows} exposures from {stream.output_root}/exposures")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from streams.dashboard import run_dashboard

    return run_dashboard(
        _deployment(args),
        host=args.host,
        port=args.port,
        token=args.token,
        token_file=args.token_file,
    )


def _demo(args: argparse.Namespace) -> int:
    from harness.demo import run_demo

    return run_demo(
        Path(args.out),
        n=args.n,
        size=None if args.size is None else tuple(args.size),
        seed=args.seed,
        dashboard_port=args.port,
        keep=args.keep,
        visits=args.visits or 0,
        camera_grid=args.camera_grid,
    )


def _service_options(p: argparse.ArgumentParser, out_default: str | None = None) -> None:
    p.add_argument("--config", default=None, help="TOML file: [stream] and the science tables")
    p.add_argument("--broker", default=None, help="broker URL, e.g. kafka://127.0.0.1:9092")
    p.add_argument("--redis", default=None, help="Redis URL (none: run without Redis)")
    p.add_argument("--refcat", default=None, help="reference catalog store")
    p.add_argument("--out", default=out_default, help="output root")


def build_parser() -> argparse.ArgumentParser:
    parser = core_cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))

    p = sub.add_parser("calibrate", help="the whole chain for each exposure, in one process")
    p.add_argument("exposures", nargs="+")
    p.add_argument(
        "--refcat",
        required=True,
        help="reference store (astrometry, and photometry unless --photometry-refcat is given)",
    )
    p.add_argument("--photometry-refcat", default=None, help="a separate photometric store")
    p.add_argument("--out", required=True, help="output root: ROOT/exposures/<EXPID>/")
    p.add_argument("--config", default=None, help="TOML configuration file")
    p.set_defaults(func=_calibrate)

    p = sub.add_parser("worker", help="run a streaming worker (workers of one app share the work)")
    _service_options(p)
    p.add_argument("--photometry-refcat", default=None, help="a separate photometric store")
    p.add_argument("--processes", type=positive_int, default=None, help="science processes")
    p.add_argument("--loglevel", default="info", type=str.lower, choices=LOG_LEVELS)
    p.set_defaults(func=_worker)

    p = sub.add_parser("submit", help="produce a characterized-exposure event per file")
    p.add_argument("exposures", nargs="+")
    _service_options(p)
    p.set_defaults(func=_submit)

    _add_replay(sub.add_parser("replay", help="re-process an archived topic from a point"))
    p = sub.add_parser("redrive", help="send parked records back once the fault is fixed")
    _service_options(p)
    p.set_defaults(func=_redrive)
    p = sub.add_parser("rebuild-read-model", help="rebuild Redis's read model from the folders")
    _service_options(p)
    p.set_defaults(func=_rebuild_read_model)
    _add_dashboard_and_demo(sub)
    return parser


def _add_replay(p: argparse.ArgumentParser) -> None:
    _service_options(p)
    p.add_argument(
        "--topic",
        default="exposures",
        choices=CALIBRATE.consumed,
        help="which topic to replay (the chain runs on from its stage)",
    )
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-offset", type=non_negative_int, default=None)
    start.add_argument("--from-time", type=iso_time, default=None, help="ISO (UTC if no zone)")
    until = p.add_mutually_exclusive_group()
    until.add_argument("--until-offset", type=non_negative_int, help="stop before this offset")
    until.add_argument("--until-time", type=iso_time, help="stop at records after this time")
    p.add_argument(
        "--partition",
        type=non_negative_int,
        action="append",
        default=None,
        help="only this partition (repeatable; default: all)",
    )
    p.set_defaults(func=_replay)


def _add_dashboard_and_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve the monitoring page, its JSON API and /metrics")
    _service_options(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (0.0.0.0: all; anything but loopback needs a token)",
    )
    p.add_argument("--port", type=port, default=8765, help="0: any free port (printed)")
    p.add_argument(
        "--token-file",
        default=None,
        help="file holding the token (a Docker secret); else --token, "
        "$CALIBSTREAM_DASHBOARD_TOKEN or [stream] dashboard_token",
    )
    p.add_argument("--token", default=None, help="the token itself (visible to ps: for trials)")
    p.set_defaults(func=_dashboard)

    p = sub.add_parser("demo", help="the embedded default: broker, Redis, a worker, exposures")
    p.add_argument("--out", default="demo-output")
    p.add_argument("--port", type=port, default=8765, help="the dashboard's port (0: any free)")
    p.add_argument(
        "--keep", action="store_true", help="keep everything running (and the dashboard) until ^C"
    )
    p.add_argument("--n", type=positive_int, default=6, help="exposures (one deliberately broken)")
    p.add_argument(
        "--size",
        type=chip_side,
        nargs=2,
        default=None,
        metavar=("NX", "NY"),
        help="an exposure's pixels (2048²) or a visit's detector's (1024²)",
    )
    p.add_argument(
        "--visits",
        type=positive_int,
        default=None,
        help="whole visits instead of --n exposures (one detector truncated)",
    )
    p.add_argument(
        "--camera-grid",
        type=camera_grid,
        default=3,
        metavar="G",
        help="with --visits: G×G detectors",
    )
    p.add_argument("--seed", type=non_negative_int, default=1)
    p.set_defaults(func=_demo)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def iso_time(text: str) -> str:
    """An argparse type: an ISO time (kept as text; ``replay.start_point`` reads it)."""
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None
    return text


#: The services a command cannot work without: each is checked (a TCP connect) before the
#: command runs, so that one that is down is one line naming its URL and setting, not a
#: traceback, nor faust's retries logged forever.
NEEDS = {
    "worker": ("broker",),
    "submit": ("broker",),
    "replay": ("broker",),
    "redrive": ("broker",),
    "rebuild-read-model": ("redis",),
}


def _setting(args: argparse.Namespace, name: str) -> str:
    """Where the ``[stream] name`` setting of this command line comes from, in words."""
    if getattr(args, name, None):
        return f"--{name}"
    if getattr(args, "config", None):
        return f"[stream] {name} in {args.config}, or --{name}"
    return f"[stream] {name} (in a --config file) or --{name}"


def _check_services(args: argparse.Namespace) -> None:
    needs = NEEDS.get(args.command, ())
    if not needs:
        return  # and asyncio, behind kafka_admin, is never imported (calibrate, measure)
    from streams.kafka_admin import require_broker, require_redis

    stream = _deployment(args).stream
    if "broker" in needs:
        require_broker(stream.broker, stream.bootstrap, _setting(args, "broker"))
    if "redis" in needs:
        require_redis(stream.redis, _setting(args, "redis"))


def _explain(exc: Exception, args: argparse.Namespace) -> str | None:
    """One line for a Kafka or Redis client's error (None: not one of theirs)."""
    from aiokafka.errors import KafkaError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, KafkaError):
        what, name = "the broker", "broker"
    elif isinstance(exc, RedisConnectionError | RedisTimeoutError):
        what, name = "Redis", "redis"
    else:
        return None
    url = getattr(args, name, None)
    with contextlib.suppress(Exception):
        url = url or getattr(_deployment(args).stream, name)
    return f"{what} at {url} failed ({exc}): check {_setting(args, name)}"


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return core_cli.main(argv, build_parser(), prepare=_check_services, explain=_explain)


#: Commands whose process ends when they return: nothing of theirs runs on.
ONE_SHOT = frozenset({"calibrate", "measure", "simulate", "ingest-refcat"})


def run() -> NoReturn:
    """The console script: :func:`main`; after a one-shot command the process then ends
    at once, its exit handlers run and its output flushed: the interpreter's teardown,
    freeing astropy's, scipy's and numpy's modules object by object, cost ~0.25 s of a
    4k exposure's 3.3 s ``calibstream calibrate``, and the kernel frees it all in one go."""
    argv = sys.argv[1:]
    code = main(argv)
    if argv and argv[0] in ONE_SHOT:
        atexit._run_exitfuncs()  # logging's shutdown among them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
