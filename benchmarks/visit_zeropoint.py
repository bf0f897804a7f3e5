"""The visit zero-point against the simulated transparency, over many real-chain visits.

    python benchmarks/visit_zeropoint.py [--visits 24] [--grid 3] [--size 512]
        [--n-sources 16000] [--seed 0] [--processes 2] [--workdir DIR]

Each visit (``calibstream.simulate.visit.write_visit``: its own sky and reference catalog,
a transparency drawn in [0.5, 1], a seeing in [2.8, 4.6] px, a pointing error of a few
arcsec) is calibrated by the batch command in-process (``streams.cli.main calibrate``,
with a config holding the camera's ``[camera]`` table, so ROOT/visits/<V>/summary.json
is the visit agent's summary). Printed:

* per visit: Δ = zeropoint - truth (``VisitTruth.magzero``), zeropoint_err, the pull;
* over visits: mean Δ (and its error from the scatter), the pulls' mean and sd;
* per detector: MAGZERO - truth, and its pull against MAGZERO_ERR (mean, sd), so a bias
  shared by every detector (the single-exposure zero-point's) is told from one made by
  the visit combination;
* per star (the stars that fitted MAGZERO, matched to the simulator's truth by ref_id):
  ZP_i - truth split into the reference magnitude's error (m_ref - m_true) and the
  measured flux's (2.5 log10(psf_flux / true flux)), weighted as the fit weights them,
  and the flux term's mean by S/N, so a bias is placed in the reference catalogue, the
  photometry, or the weighting.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402

from calibstream.camera import grid_camera  # noqa: E402
from calibstream.config import camera_toml  # noqa: E402
from calibstream.simulate.config import SimConfig  # noqa: E402
from calibstream.simulate.visit import VisitTruth, write_visit  # noqa: E402

#: S/N bins of the per-star flux term.
SNR_EDGES = (0.0, 20.0, 40.0, 80.0, 160.0, 320.0, math.inf)


@dataclass(frozen=True)
class Plan:
    """One visit's knobs."""

    visit: int
    size: int
    grid: int
    n_sources: float
    transparency: float
    seeing: float
    offset: tuple[float, float]


@dataclass(frozen=True)
class VisitResult:
    """What one visit gave: the summary's zero-point, each detector's, each star's terms."""

    plan: Plan
    truth: float
    zeropoint: float
    err: float
    detectors: np.ndarray  # (n, 3): MAGZERO - truth, MAGZERO_ERR, mean background e-/px
    stars: np.ndarray  # (n, 5): m_ref - m_true, 2.5 log10(psf/true), σ_i, psf - true, true S/N


def plans(args: argparse.Namespace) -> list[Plan]:
    """The visits' knobs, drawn from --seed."""
    rng = np.random.default_rng(args.seed)
    return [
        Plan(
            visit=v + 1,
            size=args.size,
            grid=args.grid,
            n_sources=args.n_sources,
            transparency=float(rng.uniform(0.5, 1.0)),
            seeing=float(rng.uniform(2.8, 4.6)),
            offset=(float(rng.uniform(-5, 5)), float(rng.uniform(-5, 5))),
        )
        for v in range(args.visits)
    ]


def run_visit(plan: Plan, workdir: str) -> VisitResult:
    """Simulate, ingest and calibrate one visit; read back what the chain wrote."""
    from streams.cli import main

    root = Path(workdir) / f"visit{plan.visit}"
    camera = grid_camera(plan.grid, (plan.size, plan.size), gap=100)
    config = SimConfig(size=(plan.size, plan.size), n_sources=plan.n_sources)
    truth = write_visit(
        root / "sim", camera, config, seed=1000 + plan.visit, visit=plan.visit,
        transparency=plan.transparency, seeing=plan.seeing, pointing_offset_arcsec=plan.offset,
    )  # fmt: skip
    (root / "camera.toml").write_text(camera_toml(camera))
    store, out = root / "store", root / "out"
    _quiet(main, ["ingest-refcat", str(root / "sim" / "refcat.fits"), "--out", str(store)])
    inputs = sorted(str(p) for p in (root / "sim").glob("exp_*[0-9].fits"))
    args = ["calibrate", "--config", str(root / "camera.toml"), "--refcat", str(store)]
    _quiet(main, [*args, "--out", str(out), *inputs])
    summary = json.loads((out / "visits" / str(plan.visit) / "summary.json").read_text())
    return VisitResult(
        plan=plan,
        truth=truth.magzero,
        zeropoint=summary["zeropoint"],
        err=summary["zeropoint_err"],
        detectors=_detectors(out, truth),
        stars=_stars(out, root / "sim", truth),
    )


def _quiet(main, argv: list[str]) -> int:
    """``main(argv)`` with its stdout and stderr thrown away."""
    with open(os.devnull, "w") as null:
        saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = null
        try:
            return main(argv)
        finally:
            sys.stdout, sys.stderr = saved


def _detectors(out: Path, truth: VisitTruth) -> np.ndarray:
    """(MAGZERO - truth, MAGZERO_ERR, the subtracted background's mean) per calibrated
    detector; the simulated sky is already subtracted, so the true background is 0 plus the
    light of the sources (~0.25 e-/px from those below S/N 5 at n_sources 16000)."""
    rows = []
    for expid in sorted(truth.expids.values()):
        folder = out / "exposures" / str(expid)
        header = json.loads((folder / "summary.json").read_text()).get("header") or {}
        if "MAGZERO" in header:
            background = float(np.mean(fits.getdata(folder / "background.fits", "BACKGROUND")))
            rows.append((header["MAGZERO"] - truth.magzero, header["MAGZERO_ERR"], background))
    return np.array(rows).reshape(-1, 3)


def _stars(out: Path, sim: Path, truth: VisitTruth) -> np.ndarray:
    """Per used star: (m_ref - m_true, 2.5 log10(psf_flux / true flux), σ_i,
    psf_flux - true flux in e-, true flux / psf_flux_err)."""
    c0, c1, c2 = SimConfig().colorterm
    rows = []
    for expid in sorted(truth.expids.values()):
        folder = out / "exposures" / str(expid)
        if not (folder / "matches.fits").exists():
            continue
        matches = Table.read(folder / "matches.fits")
        matches = matches[np.asarray(matches["calib_photometry_used"], bool)]
        src = Table.read(folder / "src.fits")
        true = Table.read(sim / f"exp_{expid}.truth.fits")
        si = np.searchsorted(src["id"], matches["src_id"])
        order = np.argsort(true["ref_id"])
        ti = order[np.searchsorted(true["ref_id"], matches["ref_id"], sorter=order)]
        r, i = np.asarray(matches["ref_r_mag"]), np.asarray(matches["ref_i_mag"])
        m_ref = r + c0 + c1 * (r - i) + c2 * (r - i) ** 2
        ref_err = np.hypot(1 + c1, c1) * np.asarray(matches["ref_r_mag_err"])  # ~equal errors
        flux, flux_err = np.asarray(src["psf_flux"][si]), np.asarray(src["psf_flux_err"][si])
        true_flux = np.asarray(true["flux"][ti])
        sigma = np.hypot(ref_err, 1.0857 * flux_err / flux)
        rows.append(
            np.column_stack([
                m_ref - np.asarray(true["mag"][ti]),
                2.5 * np.log10(flux / true_flux),
                sigma,
                flux - true_flux,
                true_flux / flux_err,
            ])
        )  # fmt: skip
    return np.concatenate(rows) if rows else np.empty((0, 5))


def _mmag(x: float) -> str:
    return f"{x * 1e3:+7.3f}"


def report(results: list[VisitResult]) -> None:
    """The figures this benchmark exists for (see this module)."""
    print(" visit  transp  seeing  ndet    Δ mmag   err mmag   pull")
    for r in results:
        delta = r.zeropoint - r.truth
        print(
            f"{r.plan.visit:6d}  {r.plan.transparency:6.3f}  {r.plan.seeing:6.2f}  "
            f"{len(r.detectors):4d}  {_mmag(delta)}  {r.err * 1e3:8.3f}  {delta / r.err:+6.2f}"
        )
    delta = np.array([r.zeropoint - r.truth for r in results])
    pull = delta / np.array([r.err for r in results])
    n = delta.size
    print(
        f"visits {n}: mean Δ {_mmag(delta.mean())} ± {delta.std(ddof=1) / math.sqrt(n) * 1e3:.3f}"
        f" mmag, sd {delta.std(ddof=1) * 1e3:.3f} mmag, max |Δ| {np.abs(delta).max() * 1e3:.3f};"
        f" pulls mean {pull.mean():+.3f} ± {1 / math.sqrt(n):.3f}, sd {pull.std(ddof=1):.3f}"
    )
    det = np.concatenate([r.detectors for r in results])
    dpull = det[:, 0] / det[:, 1]
    print(
        f"detectors {len(det)}: MAGZERO - truth mean {_mmag(det[:, 0].mean())} ± "
        f"{det[:, 0].std(ddof=1) / math.sqrt(len(det)) * 1e3:.3f} mmag, sd "
        f"{det[:, 0].std(ddof=1) * 1e3:.3f}; pulls mean {dpull.mean():+.3f}, "
        f"sd {dpull.std(ddof=1):.3f}; median MAGZERO_ERR {np.median(det[:, 1]) * 1e3:.3f} mmag;"
        f" background subtracted {det[:, 2].mean():.3f} e-/px"
    )
    _star_report(np.concatenate([r.stars for r in results]))


def _star_report(stars: np.ndarray) -> None:
    """The per-star split of ZP_i - truth, weighted 1/σ_i² as the fit does."""
    ref, flux, sigma, deficit, snr = stars.T
    w = 1.0 / sigma**2

    def wmean(x: np.ndarray, weights: np.ndarray) -> str:
        mean = np.sum(weights * x) / np.sum(weights)
        err = math.sqrt(np.sum(weights**2 * (x - mean) ** 2)) / np.sum(weights)
        return f"{mean * 1e3:+.3f} ± {err * 1e3:.3f}"

    print(
        f"stars {len(stars)} (weighted 1/σ²): m_ref - m_true {wmean(ref, w)} mmag, "
        f"2.5 log10(psf/true) {wmean(flux, w)} mmag, sum {wmean(ref + flux, w)} mmag"
    )
    for lo, hi in itertools.pairwise(SNR_EDGES):  # by true S/N: no selection on the noise
        sel = (snr >= lo) & (snr < hi)
        if sel.sum() > 1:
            one = np.ones(int(sel.sum()))
            print(
                f"  true S/N {lo:4.0f}-{hi:<4.0f} {int(sel.sum()):5d} stars: flux term "
                f"{wmean(flux[sel], one)} mmag, psf - true {np.mean(deficit[sel]):+6.1f} ± "
                f"{np.std(deficit[sel]) / math.sqrt(sel.sum()):.1f} e-, ref term "
                f"{wmean(ref[sel], one)} mmag"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visits", type=int, default=24)
    parser.add_argument("--grid", type=int, default=3, help="G×G detectors per visit")
    parser.add_argument("--size", type=int, default=512, help="detector side, px")
    parser.add_argument("--n-sources", type=float, default=16000.0, help="per 4096² px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workdir", default=None, help="keep the files here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or scratch
        with ProcessPoolExecutor(args.processes) as pool:
            results = list(pool.map(run_visit, plans(args), [workdir] * args.visits))
    report(results)
    print(f"{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
