"""The fault suite: N exposures, some bad on purpose, streamed while each fault is injected in
turn; a row per fault of what came out.

    python benchmarks/faults.py [--n 20] [--size 1024] [--faults worker-kill,read-only,...]
                                [--redrive] [--hold 8] [--stall 90] [--work DIR]

Each fault gets a fresh deployment: its own topic prefix and consumer group on the broker,
its own redis-server, its own output root (a tmpfs, so that it can be made read-only or full)
and one ``calibstream worker`` subprocess with one science process. The N exposures (N - 3
good ones, a truncated file, one without its PSF HDU, one 10 degrees from every reference
star) are submitted at once; once the first good one is persisted (mid-stream: the others
queued), the fault is injected (and lasts as long as it lasts: ``--hold`` seconds for a
read-only or full output root); then the run waits until every exposure has its folder or
nothing new (folder or parked record) has come for ``--stall`` seconds. With ``--redrive``,
``calibstream redrive`` then sends the parked records back and the run waits again.

Faults (harness/faults.py injects them): none (the baseline), worker-kill (kill -9 of the
worker, a new one started), science-kill (kill -9 of a busy science process), kafka-restart
(kill -9 of Apache Kafka, 3 s down, started again on its data), redis-restart (kill -9 of
redis-server, 3 s down, started empty), read-only (the output root remounted read-only),
disk-full (the output root's tmpfs filled: real ENOSPC), tombstones (20 records with no
value on the exposures topic), oversized (one record of garbage as large as the topic
allows), crowded (an exposure of ~1,650 sources whose events are over the record limit,
in a deployment whose ``max_message_bytes`` is 256 KiB).

Columns: submitted (exposures), bad (on purpose), persisted (complete folders calibrated in
full, status ok or warning; target submitted - bad), failed (failure summaries and partial
calibrations, status partial; target bad), parked (records on the
``<prefix>parked`` topic), dupl (entries beyond one per EXPID: folders and staging
leftovers), partial (a folder without summary.json or files, or a ``.X.new-*`` leftover),
rows (read-model rows with their folder's status / folders), recover (seconds from the end
of the fault to the first folder after it), done (… to the last one), verdict.

Runs on Apache Kafka (the jars from ``python -m harness.cli fetch-kafka``); without it on the
embedded broker, kafka-restart then skipped. Mounting needs root: without it read-only and
disk-full are skipped (the other faults run on a plain folder).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # the workers inherit it: 2 cores, one science process

from astropy.io import fits  # noqa: E402

from calibstream.astrometry.refcat import ingest_refcat  # noqa: E402
from calibstream.io.outputs import read_summary  # noqa: E402
from calibstream.simulate.config import SimConfig  # noqa: E402
from calibstream.simulate.survey import write_simulation  # noqa: E402
from harness import faults  # noqa: E402
from harness.kafka import KafkaBroker  # noqa: E402
from harness.processes import ServiceProcess, ServiceUnavailable, sigterm_exits  # noqa: E402
from harness.redis_server import RedisServer  # noqa: E402
from harness.tansu import TansuBroker  # noqa: E402
from harness.workers import WorkerProcess  # noqa: E402
from streams.readmodel import RedisReadModel  # noqa: E402
from streams.settings import load_deployment, write_stream_config  # noqa: E402
from streams.worker import submit  # noqa: E402

BAD_IDS = (997, 998, 999)
CROWDED_ID = 996
CROWDED_MAX_MESSAGE_BYTES = 256 * 1024


# ---------------------------------------------------------------- the exposures


@dataclass(frozen=True)
class Survey:
    exposures: list[Path]  # good and bad, all submitted
    bad: frozenset[int]
    refcat: Path
    crowded: Path | None


def make_survey(
    root: Path, n: int, size: int = 1024, seed: int = 5, *, crowded: bool = True
) -> Survey:
    """``n`` exposures (three of them bad on purpose), a crowded one (unless not
    ``crowded``), their references."""
    if n < 6:
        raise ValueError("n >= 6: three bad exposures are made from three good ones")
    good = sorted(
        p
        for p in write_simulation(root / "sim", n=n - 3, size=(size, size), seed=seed)
        if p.name.startswith("exp_") and ".truth" not in p.name
    )
    bad = [
        _variant(good[0], root / "truncated.fits", BAD_IDS[0], truncate=True),
        _variant(good[1], root / "missing_hdu.fits", BAD_IDS[1], drop="PSF"),
        _variant(good[2], root / "no_refs.fits", BAD_IDS[2], shift_dec=10.0),
    ]
    refcats = [root / "sim" / "refcat.fits"]
    crowd = _crowded_exposure(root / "crowded", seed + 1) if crowded else None
    if crowd is not None:
        refcats.append(root / "crowded" / "refcat.fits")
    ingest_refcat(refcats, root / "refcat")
    return Survey([*good, *bad], frozenset(BAD_IDS), root / "refcat", crowd)


def _crowded_exposure(sim: Path, seed: int) -> Path:
    """A 1024² exposure of a field 4 degrees away with 33 times the usual sources (~1,650
    detected: a zero-point event of ~450 KB); its stars' ids moved past the survey's."""
    config = SimConfig(n_sources=100_000, center=(150.0, 6.0))
    written = write_simulation(sim, n=1, size=(1024, 1024), seed=seed, config=config)
    with fits.open(sim / "refcat.fits", mode="update") as hdul:
        hdul[1].data["id"] += 10**9  # both surveys number their stars from the same id
    return _variant(written[0], sim.parent / "crowded.fits", CROWDED_ID)


def _variant(
    source: Path,
    target: Path,
    expid: int,
    *,
    truncate: bool = False,
    drop: str | None = None,
    shift_dec: float = 0.0,
) -> Path:
    with fits.open(source) as hdul:
        hdul[0].header["EXPID"] = expid
        if drop:
            del hdul[drop]
        hdul["IMAGE"].header["CRVAL2"] += shift_dec
        hdul.writeto(target, overwrite=True)
    if truncate:
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    return target


# ---------------------------------------------------------------- one deployment per fault


@dataclass
class Bench:
    work: Path
    survey: Survey
    broker: ServiceProcess  # Apache Kafka, or the embedded broker
    restartable: bool  # the broker keeps its data over a restart (Apache Kafka)
    can_mount: bool
    hold_s: float = 8.0
    stall_s: float = 90.0
    redrive: bool = False
    stream: dict = field(default_factory=dict)  # [stream] settings for every run


class Run(contextlib.ExitStack):
    """A fault's deployment: Redis, an output root, a configuration, its workers."""

    def __init__(self, bench: Bench, fault: Fault) -> None:
        super().__init__()
        self.bench, self.fault = bench, fault
        self.dir = bench.work / fault.name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.out = self.dir / "out"
        self.prefix = f"f{uuid.uuid4().hex[:8]}."
        self.workers: list[WorkerProcess] = []
        self.expected: set[str] = set()
        self.notes: list[str] = []

    def __enter__(self) -> Run:
        super().__enter__()
        try:
            self.redis = self.enter_context(RedisServer(self.dir / "redis"))
            if self.bench.can_mount:
                self.enter_context(faults.tmpfs(self.out, "512m"))
            self.out.mkdir(exist_ok=True)
            settings = {"session_timeout_s": 6.0, "science_processes": 1}
            settings.update(self.bench.stream, **self.fault.stream)
            settings.update(
                broker=self.broker.url,
                redis=self.redis.url,
                app_id=self.prefix + "app",
                topic_prefix=self.prefix,
                refcat=str(self.bench.survey.refcat),
                output_root=str(self.out),
            )
            self.config = write_stream_config(self.dir / "stream.toml", **settings)
            self.stream = load_deployment(self.config).stream
            self.start_worker()
        except BaseException:
            self.close()
            raise
        return self

    @property
    def broker(self) -> ServiceProcess:
        return self.bench.broker

    @property
    def worker(self) -> WorkerProcess:
        return self.workers[-1]

    def topic(self, role: str) -> str:
        return self.prefix + role

    def start_worker(self) -> WorkerProcess:
        worker = WorkerProcess(self.config, self.dir / f"worker-{len(self.workers) + 1}")
        self.workers.append(self.enter_context(worker))
        return worker

    def submit(self, paths: list[Path]) -> None:
        self.expected |= {str(expid) for _, expid in submit(paths, self.stream)}

    def census(self) -> faults.Census:
        return faults.census(self.out, RedisReadModel(self.redis.url))


# ---------------------------------------------------------------- the faults


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[Run], str]  # returns once the fault is over; a note for the table
    restart: bool = False  # restarts the broker: Apache Kafka only
    mount: bool = False  # needs a mounted output root
    stream: dict = field(default_factory=dict)  # [stream] settings of its deployment


def _worker_kill(run: Run) -> str:
    orphans = faults.kill_worker(run.worker)
    worker = run.start_worker()
    note = f"new worker ready in {worker.started_in:.1f} s"
    return note + (f"; ORPHANS left: {orphans}" if orphans else "")


def _science_kill(run: Run) -> str:
    return f"killed science process {faults.kill_science_process(run.worker)}"


def _kafka_restart(run: Run) -> str:
    return f"3 s down, ready again in {faults.restart_kafka(run.broker, 3.0):.1f} s"


def _redis_restart(run: Run) -> str:
    return f"3 s down, ready again in {faults.restart_redis(run.redis, 3.0):.1f} s"


def _read_only(run: Run) -> str:
    with faults.read_only(run.out):
        time.sleep(run.bench.hold_s)
    return f"read-only for {run.bench.hold_s:.0f} s"


def _disk_full(run: Run) -> str:
    with faults.full_disk(run.out):
        time.sleep(run.bench.hold_s)
    return f"ENOSPC for {run.bench.hold_s:.0f} s"


def _tombstones(run: Run) -> str:
    faults.produce_tombstones(run.stream.bootstrap, run.topic("exposures"), 20)
    return "20 tombstones on the exposures topic"


def _oversized(run: Run) -> str:
    nbytes = run.stream.max_message_bytes - 16 * 1024
    faults.produce_oversized(run.stream.bootstrap, run.topic("exposures"), nbytes)
    return f"a {nbytes / 2**20:.1f} MiB record of garbage on the exposures topic"


def _crowded(run: Run) -> str:
    if run.bench.survey.crowded is None:
        raise ValueError("the survey was made without its crowded exposure")
    run.submit([run.bench.survey.crowded])
    return f"EXPID {CROWDED_ID}, max_message_bytes {CROWDED_MAX_MESSAGE_BYTES // 1024} KiB"


FAULTS = {
    fault.name: fault
    for fault in (
        Fault("none", lambda run: "baseline"),
        Fault("worker-kill", _worker_kill),
        Fault("science-kill", _science_kill),
        Fault("kafka-restart", _kafka_restart, restart=True),
        Fault("redis-restart", _redis_restart),
        Fault("read-only", _read_only, mount=True),
        Fault("disk-full", _disk_full, mount=True),
        Fault("tombstones", _tombstones),
        Fault("oversized", _oversized),
        Fault("crowded", _crowded, stream={"max_message_bytes": CROWDED_MAX_MESSAGE_BYTES}),
    )
}


# ---------------------------------------------------------------- a row per fault


@dataclass
class Row:
    fault: str
    submitted: int = 0
    bad: int = 0
    persisted: int = 0
    failed: int = 0
    parked: int = 0
    duplicates: int = 0
    partial: int = 0
    rows_right: int = 0
    rows: int = 0
    recover_s: float | None = None
    done_s: float | None = None
    note: str = ""
    skipped: bool = False
    error: bool = False  # the run itself broke (a worker that did not start, ...)

    @property
    def passed(self) -> bool:
        return (
            not self.skipped
            and not self.error
            and self.persisted == self.submitted - self.bad
            and self.failed == self.bad
            and self.duplicates == 0
            and self.partial == 0
            and self.rows_right == self.rows == self.persisted + self.failed
        )


def run_fault(bench: Bench, fault: Fault) -> Row:
    """One fault's run, start to finish; its row."""
    if fault.restart and not bench.restartable:
        return Row(fault.name, note="skipped: needs Apache Kafka (a restart)", skipped=True)
    if fault.mount and not bench.can_mount:
        return Row(fault.name, note="skipped: cannot mount here (root needed)", skipped=True)
    with Run(bench, fault) as run:
        run.submit(bench.survey.exposures)
        # Mid-stream: one persisted, more to come (or all in already: a broken stream).
        _wait(run, lambda found: bool(found.ok) or run.expected <= found.outcomes, 180.0)
        note = fault.inject(run)
        end = time.monotonic()
        times = _settle(run, end)
        if bench.redrive:
            seen = len(faults.census(run.out).outcomes)
            note += "; " + _redrive(run)
            times += _settle(run, end, seen)
        row = _row(run, note, end, times)
        if not row.passed:  # keep what it left (the output root may be a tmpfs, unmounted next)
            shutil.copytree(run.out, run.dir / "out-after", symlinks=True, dirs_exist_ok=True)
        return row


def _wait(run: Run, done: Callable[[faults.Census], bool], timeout: float) -> faults.Census:
    deadline = time.monotonic() + timeout
    while not done(found := faults.census(run.out)):
        if time.monotonic() > deadline or not run.worker.running:
            raise RuntimeError(f"{run.fault.name}: the stream stalled\n{run.worker.log_tail()}")
        time.sleep(0.2)
    return found


def _settle(run: Run, since: float, seen: int | None = None) -> list[float]:
    """Until every expected exposure has its folder, or nothing new (folder or parked record)
    came for ``stall_s`` (5 s once a parked record stands for each missing folder); the times
    (from ``since``) at which folders appeared beyond the first ``seen`` (default: now's)."""
    if seen is None:
        seen = len(faults.census(run.out).outcomes)
    times: list[float] = []
    parked, last, checked = 0, time.monotonic(), time.monotonic()
    while True:
        outcomes = faults.census(run.out).outcomes
        if len(outcomes) > seen:
            times += [time.monotonic() - since] * (len(outcomes) - seen)
            seen, last = len(outcomes), time.monotonic()
        if run.expected <= outcomes:
            return times
        if time.monotonic() - checked > 2.0:  # a parked record is progress too
            checked = time.monotonic()
            now = faults.count_records(run.stream.bootstrap, run.topic("parked"))
            if now > parked:
                parked, last = now, time.monotonic()
        accounted = len(outcomes) + parked >= len(run.expected)
        if time.monotonic() - last >= (5.0 if accounted else run.bench.stall_s):
            return times
        time.sleep(0.25)


def _redrive(run: Run) -> str:
    cli = [sys.executable, "-m", "streams.cli", "redrive"]
    if subprocess.run([*cli, "--help"], capture_output=True).returncode != 0:
        return "no `calibstream redrive` command yet: not redriven"
    done = subprocess.run([*cli, "--config", str(run.config)], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines() or done.stderr.strip().splitlines()
    return f"redrive (exit {done.returncode}): {lines[-1] if lines else ''}"


def _row(run: Run, note: str, end: float, times: list[float]) -> Row:
    deadline = time.monotonic() + 5.0  # a read-model row follows its folder by a moment
    while (found := run.census()).rows_right < found.rows and time.monotonic() < deadline:
        time.sleep(0.2)
    if run.worker.proc is not None and run.worker.proc.poll() is not None:
        note += f"; the worker exited ({run.worker.proc.returncode})"
    bad = {str(expid) for expid in run.bench.survey.bad}
    missing = run.expected - found.outcomes
    if missing:
        note += f"; no folder for {sorted(missing)}"
    if found.partial:
        note += f"; incomplete: {sorted(found.partial)[:3]}"
    for expid in sorted(found.failed - bad)[:2]:  # good exposures that did not calibrate
        summary = read_summary(run.out / "exposures" / expid) or {}
        reason = str(summary.get("reason") or summary.get("partial") or "")[:100]
        note += f"; {expid} {summary.get('status')}: {summary.get('stage')}: {reason}"
    claims = list((run.out / "claims").rglob("*.bin"))
    if claims:
        note += f"; {len(claims)} claim file(s)"
    return Row(
        run.fault.name,
        submitted=len(run.expected),
        bad=len(bad & run.expected),
        persisted=len(found.ok),
        failed=len(found.failed),
        parked=faults.count_records(run.stream.bootstrap, run.topic("parked")),
        duplicates=found.duplicates,
        partial=len(found.partial),
        rows_right=found.rows_right,
        rows=found.rows,
        recover_s=times[0] if times else (0.0 if not missing else None),
        done_s=times[-1] if times and not missing else (0.0 if not missing else None),
        note=note,
    )


def error_row(fault: Fault, exc: Exception) -> Row:
    """The row of a run that broke: the error's first line and its last (a log's tail)."""
    lines = [line for line in str(exc).splitlines() if line.strip()] or [""]
    text = lines[0] + (f" … {lines[-1].strip()}" if len(lines) > 1 else "")
    return Row(fault.name, note=f"{type(exc).__name__}: {text}", error=True)


HEADER = (
    f"{'fault':<14}{'submitted':>9} {'bad':>4} {'persisted':>9} {'failed':>6} {'parked':>6} "
    f"{'dupl':>4} {'partial':>7} {'rows':>7} {'recover':>8} {'done':>7}  verdict  note"
)


def format_row(row: Row) -> str:
    if row.skipped or row.error:
        return f"{row.fault:<14}{'':>73}  {'skipped' if row.skipped else 'ERROR':<7}  {row.note}"

    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.1f}s"

    return (
        f"{row.fault:<14}{row.submitted:>9} {row.bad:>4} {row.persisted:>9} {row.failed:>6} "
        f"{row.parked:>6} {row.duplicates:>4} {row.partial:>7} "
        f"{f'{row.rows_right}/{row.rows}':>7} {seconds(row.recover_s):>8} "
        f"{seconds(row.done_s):>7}  {'PASS' if row.passed else 'FAIL':<7}  {row.note}"
    )


# ---------------------------------------------------------------- the command


def can_mount(work: Path) -> bool:
    try:
        with faults.tmpfs(work / ".mount-probe", "1m"):
            return True
    except (OSError, faults.FaultUnavailable):
        return False


def start_broker(stack: contextlib.ExitStack, work: Path) -> tuple[ServiceProcess, bool]:
    try:
        return stack.enter_context(KafkaBroker(work / "kafka")), True
    except ServiceUnavailable as exc:
        print(f"no Apache Kafka ({exc}): the embedded broker, kafka-restart skipped")
        return stack.enter_context(TansuBroker(work / "tansu")), False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="exposures (3 of them bad), >= 6")
    parser.add_argument("--size", type=int, default=1024, help="exposure side (px)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated")
    parser.add_argument("--redrive", action="store_true", help="calibstream redrive after")
    parser.add_argument("--hold", type=float, default=8.0, help="s read-only or full")
    parser.add_argument("--stall", type=float, default=90.0, help="s without progress: stop")
    parser.add_argument("--work", type=Path, default=None, help="(default: a temporary one)")
    args = parser.parse_args(argv)
    chosen = [FAULTS[name.strip()] for name in args.faults.split(",") if name.strip()]
    work = args.work or Path(tempfile.mkdtemp(prefix="calibstream-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    with sigterm_exits(), contextlib.ExitStack() as stack:  # SIGTERM too unmounts, stops all
        t0 = time.monotonic()
        survey = make_survey(work / "survey", args.n, args.size, args.seed)
        print(f"{args.n} exposures of {args.size}² simulated in {time.monotonic() - t0:.0f} s")
        broker, restartable = start_broker(stack, work)
        bench = Bench(work, survey, broker, restartable, can_mount(work), args.hold, args.stall)
        bench.redrive = args.redrive
        print(f"broker: {type(broker).__name__} at {broker.bootstrap}; work: {work}\n\n{HEADER}")
        rows = []
        for fault in chosen:
            t0 = time.monotonic()
            try:
                rows.append(run_fault(bench, fault))
            except Exception as exc:
                rows.append(error_row(fault, exc))
            print(format_row(rows[-1]) + f"  [{time.monotonic() - t0:.0f} s]", flush=True)
    ran = [row for row in rows if not row.skipped]
    print(f"\n{sum(row.passed for row in ran)} of {len(ran)} faults passed")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(row.passed for row in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
