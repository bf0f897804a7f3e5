"""The per-exposure quality plots' data, from the exposure's folder (the persisted truth).

What an astronomer checks after a calibration: the astrometric residuals over the chip
(a pattern means the distortion model is wrong), the photometric residuals against
magnitude (non-linearity, a bad aperture correction) and against colour (a wrong colour
term), with the reserved stars, which the fit never saw, marked; and the fitted distortion
itself; and the PSF stars' ellipticities over the chip, against the PSF model's (whiskers).
A partial calibration shows what it has: no residuals where nothing was matched or fitted.
Pure functions of arrays and headers; :func:`exposure_quality` reads the files.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from numpy.polynomial.polynomial import polyval2d

from calibstream.config import ColorTerm
from calibstream.io.outputs import exposure_dir, read_summary
from calibstream.photometry.photocal import reference_magnitudes
from calibstream.verdicts import CALIBRATED

__all__ = [
    "astrometric_residuals",
    "distortion_grid",
    "exposure_quality",
    "photometric_residuals",
    "psf_whiskers",
]

MAS_PER_DEG = 3.6e6


def _json_floats(values: np.ndarray, digits: int = 3) -> list[float | None]:
    """Rounded floats for the browser; NaN as null (strict JSON)."""
    rounded = np.round(np.asarray(values, dtype=float), digits)
    return [None if not np.isfinite(v) else float(v) for v in rounded]


def astrometric_residuals(matches: Mapping[str, np.ndarray]) -> dict:
    """Source minus reference position (mas, east and north) at each match's pixel position."""
    dec = np.deg2rad(np.asarray(matches["ref_dec"], dtype=float))
    dra = np.asarray(matches["src_ra"], dtype=float) - np.asarray(matches["ref_ra"], dtype=float)
    dra = (dra + 180.0) % 360.0 - 180.0  # across RA = 0
    ddec = np.asarray(matches["src_dec"], dtype=float) - np.asarray(matches["ref_dec"], dtype=float)
    return {
        "available": True,
        "x": _json_floats(matches["x"], 1),
        "y": _json_floats(matches["y"], 1),
        "east_mas": _json_floats(dra * np.cos(dec) * MAS_PER_DEG, 2),
        "north_mas": _json_floats(ddec * MAS_PER_DEG, 2),
        "used": np.asarray(matches["calib_astrometry_used"], dtype=bool).tolist(),
    }


def photometric_residuals(
    matches: Mapping[str, np.ndarray], colorterm: ColorTerm | None, header: Mapping
) -> dict:
    """Calibrated PSF magnitude minus the colour-term-corrected reference magnitude, with
    the reference colour (primary - secondary) and the used / reserved flags of each star.
    The colour-term coefficients are the header's (``COLORTERM1..3``: those applied)."""
    if colorterm is None:
        return {"available": False, "reason": "no colour term configured for this band"}
    bands = (colorterm.primary, colorterm.secondary)
    columns = [f"ref_{band}_mag{s}" for band in bands for s in ("", "_err")]
    missing = [c for c in columns if c not in matches]
    if missing:
        return {"available": False, "reason": f"matches.fits lacks {', '.join(missing)}"}
    applied = ColorTerm(
        colorterm.primary,
        colorterm.secondary,
        *(float(header.get(f"COLORTERM{i}", 0.0)) for i in (1, 2, 3)),
    )
    ref_mag, _, colour = reference_magnitudes(applied, *(matches[c] for c in columns))
    psf_mag = np.asarray(matches["psf_mag"], dtype=float)
    return {
        "available": True,
        "mag": _json_floats(psf_mag, 4),
        "colour": _json_floats(colour, 4),
        "colour_name": f"{colorterm.primary} - {colorterm.secondary}",
        "residual": _json_floats(psf_mag - ref_mag, 4),
        "used": np.asarray(matches["calib_photometry_used"], dtype=bool).tolist(),
        "reserved": np.asarray(matches["calib_photometry_reserved"], dtype=bool).tolist(),
    }


def distortion_grid(header: fits.Header, width: int, height: int, n: int = 9) -> dict:
    """The fitted SIP distortion on an ``n`` × ``n`` grid over the chip: the pixel offset
    (px) the polynomial adds to the linear TAN model, at each grid point."""
    with warnings.catch_warnings():  # a header without pixels: astropy notes NAXIS = 0
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, relax=True)
    gx, gy = np.meshgrid(np.linspace(0, width - 1, n), np.linspace(0, height - 1, n))
    pixels = np.column_stack([gx.ravel(), gy.ravel()])
    offsets = np.zeros_like(pixels)
    if wcs.sip is not None:  # SIP: u = x - (CRPIX1 - 1) for 0-based x; offset = A(u, v), B(u, v)
        u, v = (pixels - (wcs.sip.crpix - 1.0)).T
        offsets = np.column_stack([polyval2d(u, v, wcs.sip.a), polyval2d(u, v, wcs.sip.b)])
    return {
        "x": _json_floats(pixels[:, 0], 1),
        "y": _json_floats(pixels[:, 1], 1),
        "dx": _json_floats(offsets[:, 0], 4),
        "dy": _json_floats(offsets[:, 1], 4),
        "sip_order": None if wcs.sip is None else int(wcs.sip.a_order),
    }


def psf_whiskers(src: Mapping[str, np.ndarray], header: Mapping) -> dict:
    """The PSF stars (``calib_psf_used``, ``adaptive_*`` moments measured) over the chip: each
    one's ellipticity e1 = (xx-yy)/(xx+yy), e2 = 2xy/(xx+yy), the PSF model's (the header's
    PSFIXX, PSFIYY, PSFIXY) and star minus model (what psfStarDeltaE1/E2 summarise)."""
    if "adaptive_xx" not in src:
        return {"available": False, "reason": "src.fits has no PSF-star shapes"}
    chosen = np.asarray(src["calib_psf_used"], bool) & ~np.asarray(src["adaptive_flag"], bool)
    xx, yy, xy = (np.asarray(src[f"adaptive_{k}"], float)[chosen] for k in ("xx", "yy", "xy"))
    e1, e2 = (xx - yy) / (xx + yy), 2.0 * xy / (xx + yy)
    model = [header.get(k) for k in ("PSFIXX", "PSFIYY", "PSFIXY")]
    psf_e1 = psf_e2 = 0.0
    if None not in model:
        mxx, myy, mxy = (float(v) for v in model)
        psf_e1, psf_e2 = (mxx - myy) / (mxx + myy), 2.0 * mxy / (mxx + myy)
    return {
        "available": True,
        "x": _json_floats(np.asarray(src["x"])[chosen], 1),
        "y": _json_floats(np.asarray(src["y"])[chosen], 1),
        "e1": _json_floats(e1, 5),
        "e2": _json_floats(e2, 5),
        "de1": _json_floats(e1 - psf_e1, 5),
        "de2": _json_floats(e2 - psf_e2, 5),
        "psf_e1": round(psf_e1, 5),
        "psf_e2": round(psf_e2, 5),
    }


def _table(path: Path) -> dict[str, np.ndarray]:
    with fits.open(path, memmap=False) as hdul:
        data = hdul[1].data
        return {name: np.asarray(data[name]) for name in data.columns.names}


def exposure_quality(root: Path, expid: int, colorterms: Mapping[str, ColorTerm]) -> dict | None:
    """Everything the per-exposure page draws, from the folder; None when there is none. A
    partial calibration has no astrometric residuals when astrometry did not fit (nothing
    was matched) and no photometric ones when photometry did not."""
    folder = exposure_dir(root, expid)
    summary = read_summary(folder)
    if summary is None:
        return None
    if summary.get("status") not in CALIBRATED:
        return {"summary": summary}
    with fits.open(folder / "calexp.fits", memmap=False) as hdul:
        header = hdul[0].header.copy()
    with fits.open(folder / "background.fits", memmap=False) as hdul:
        width, height = int(hdul[1].header["IMGWIDTH"]), int(hdul[1].header["IMGHEIGH"])
    why = (summary.get("partial") or {}).get("reason", "")
    astrometry = photometry = {"available": False, "reason": f"not fitted: {why}"}
    if (folder / "matches.fits").exists():
        matches = _table(folder / "matches.fits")
        astrometry = astrometric_residuals(matches)
        if "MAGZERO" in header:
            photometry = photometric_residuals(matches, colorterms.get(summary["band"]), header)
    return {
        "summary": summary,
        "width": width,
        "height": height,
        "astrometry": astrometry,
        "photometry": photometry,
        "distortion": distortion_grid(header, width, height),
        "first_guess": bool(header.get("WCSGUESS", False)),
        "whiskers": psf_whiskers(_table(folder / "src.fits"), header),
    }
