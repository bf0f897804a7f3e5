"""The embedded default: simulate an exposure, measure it, and compare with the truth.

Needs no services: everything runs in this process and writes under one folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from .config import Config
from .pipeline import measure_file
from .simulate import read_truth, write_simulation


def run_demo(out: Path, size: tuple[int, int] = (2048, 2048), seed: int = 1) -> int:
    paths = write_simulation(out / "simulated", n=1, size=size, seed=seed)
    exposure_path = next(p for p in paths if p.name.startswith("exp_") and ".truth" not in p.name)
    truth = read_truth(exposure_path.with_name(exposure_path.stem + ".truth.fits"))
    print(f"simulated {size[0]}x{size[1]} exposure: {exposure_path}")

    result = measure_file(exposure_path, out / "measured" / str(truth.expid), Config())
    catalog, sources = result.catalog, truth.sources
    print(f"measured {len(catalog['id'])} sources -> {result.out_dir}/src.fits, background.fits")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))

    distance, index = cKDTree(np.column_stack([catalog["x"], catalog["y"]])).query(
        np.column_stack([sources["x"], sources["y"]])
    )
    found = distance < 1.5
    stars = sources["is_star"] & sources["in_chip"] & ~sources["saturated"]
    rows = [
        ("true sources on the chip", f"{int(sources['in_chip'].sum())}"),
        ("point sources S/N >= 20 found", _fraction(found[stars & (sources["snr"] >= 20)])),
        (
            "point sources S/N 4.5-5.5 found",
            _fraction(found[stars & _between(sources["snr"], 4.5, 5.5)]),
        ),
    ]
    bright = stars & found & (sources["snr"] > 100)
    if bright.any():
        ratio = catalog["psf_flux"][index[bright]] / sources["flux"][bright]
        offset = np.hypot(
            catalog["x"][index[bright]] - sources["x"][bright],
            catalog["y"][index[bright]] - sources["y"][bright],
        )
        rows += [
            ("PSF flux / true flux, S/N > 100 (median)", f"{np.median(ratio):.4f}"),
            ("centroid offset, S/N > 100 (median px)", f"{np.median(offset):.4f}"),
        ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return 0


def _between(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (values >= lo) & (values < hi)


def _fraction(hits: np.ndarray) -> str:
    return f"{hits.mean():.1%} of {hits.size}" if hits.size else "n/a"
