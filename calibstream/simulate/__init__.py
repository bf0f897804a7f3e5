"""Simulated characterized exposures, their ground truth and one reference catalog.

This is the tests' ground truth, so each ingredient is there to catch a real
pipeline mistake: a TAN-SIP WCS with a first guess off by arcseconds
(astrometric fit), proper motions over ten years (epoch propagation), a colour
term and a per-exposure zero-point (photometric calibration), a truncated
PSF image with its aperture correction (flux scale), saturated stars, a bad
column, repaired cosmic rays and resolved galaxies (flags, star/galaxy
confusion), and noise exactly described by the variance plane.

All sources live on one patch of sky (:class:`~.sky.Sky`, made once per
survey), so overlapping exposures see the same stars and galaxies and one
reference catalog covers them all. Everything is vectorised numpy and
deterministic from the seed (one ``SeedSequence`` child per exposure and per
component, so switching cosmic rays off does not change the noise).

Conventions the pipeline must share (see also :class:`~.truth.Truth`):

* pixel coordinates are 0-based, pixel centres are integers;
* ``flux`` in the truth is the *total* flux in electrons; stars are rendered
  on stamps large enough to lose < 2e-4 of it; galaxies are Sérsic profiles
  truncated at 5 (n=1) or 8 (n=4) half-light radii, normalised so that the
  truncated profile holds exactly ``flux``;
* the PSF HDU is the pixel-integrated Moffat centred on a pixel, truncated to
  ``psf_size``² and normalised to sum 1; it holds the fraction ``f_in`` of a
  star's flux, and the APCORR ``psf_flux`` term is exactly ``1 / f_in``;
* ``MAGZERO``: ``m_ref_colour_corrected = MAGZERO - 2.5 log10(flux / EXPTIME)``
  with ``m_ref_colour_corrected = r + c0 + c1 (r-i) + c2 (r-i)²`` of the true
  magnitudes.

Import from the defining modules (this package re-exports nothing; it defines
:func:`write_visits` only, the night of whole visits ``calibstream simulate --visits``
and ``calibstream demo`` write):

* :mod:`.config` — :class:`SimConfig`, ``MASK_PLANES`` and shared constants;
* :mod:`.geometry` — epochs, TAN projection, proper motion, the WCSs;
* :mod:`.sky` — pointings and the survey's true stars and galaxies;
* :mod:`.refcat` — the Gaia/PS1-like reference catalog drawn from the stars;
* :mod:`.conditions` — one exposure's seeing, zero-point, airmass and time;
* :mod:`.sources` — one exposure's truth table (positions, fluxes, S/N);
* :mod:`.render` — the noiseless model (Moffat stars, Sérsic galaxies ⊗ PSF);
* :mod:`.pixels` — noise, detection and saturation masks, bad column, cosmic rays;
* :mod:`.icsrc` — characterization's bright-source catalog;
* :mod:`.truth` — :class:`Truth` and its FITS file (``write_truth``, ``read_truth``);
* :mod:`.exposure` — :func:`simulate_exposure`, one exposure and its truth;
* :mod:`.survey` — :func:`simulate_survey` and :func:`write_simulation`;
* :mod:`.visit` — :func:`~.visit.simulate_visit` and :func:`~.visit.write_visit`: one
  multi-detector visit of a camera (:mod:`calibstream.camera`) and its truth.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from calibstream.camera import Camera
    from calibstream.simulate.config import SimConfig

#: Minutes between visits (MJD-OBS), so a night's charts order them as taken.
VISIT_CADENCE_MIN = 1.0


def write_visits(
    outdir: Path,
    camera: Camera,
    visits: int,
    seed: int = 0,
    *,
    bad: Collection[int] = (),
    missing: Collection[int] = (),
    config: SimConfig | None = None,
) -> list[Path]:
    """``visits`` whole visits (1, 2, ...) of ``camera`` and one ``refcat.fits`` covering all.

    Each visit points at its own field (far enough apart that no star is in two), with its
    own transparency, seeing and pointing error drawn from ``seed``; ``bad`` detectors are
    truncated and ``missing`` ones not written in every visit (:func:`.visit.write_visit`).
    The fields' catalogues are stacked, each visit's reference ids shifted by its index (the
    simulator numbers every field's stars alike; ingest needs them unique), the truth too.
    Returns the paths written: exposures, truth files, visit truths, then the refcat.
    """
    import numpy as np
    from astropy.table import Table, vstack

    from calibstream.simulate.config import SimConfig
    from calibstream.simulate.visit import write_visit

    if visits < 1:
        raise ValueError(f"visits must be at least 1, got {visits}")
    outdir = Path(outdir)
    base = config or SimConfig()
    draw = np.random.default_rng(np.random.SeedSequence([seed, 19]))
    step = _field_spacing_deg(camera, base.pixel_scale)
    refcats: list[Table] = []
    paths: list[Path] = []
    for k in range(visits):
        ra0, dec0 = base.center
        center = ((ra0 + k * step / math.cos(math.radians(dec0))) % 360.0, dec0)
        minutes = k * VISIT_CADENCE_MIN / 1440.0
        field = dataclasses.replace(base, center=center, mjd_obs=base.mjd_obs + minutes)
        truth = write_visit(
            outdir, camera, field, seed=int(np.random.SeedSequence([seed, k]).generate_state(1)[0]),
            visit=k + 1, bad=set(bad), missing=set(missing),
            pointing_offset_arcsec=(float(draw.normal(0, 3)), float(draw.normal(0, 3))),
            rotation_arcsec=float(draw.normal(0, 20)), transparency=float(draw.uniform(0.7, 1)),
            seeing=float(base.fwhm * draw.uniform(0.85, 1.2)),
        )  # fmt: skip
        refcat = Table.read(outdir / "refcat.fits")
        refcat["id"] += k
        refcats.append(refcat)
        for expid in sorted(truth.expids.values()):
            exposure = outdir / f"exp_{expid}.fits"
            if exposure.exists():
                paths += [exposure, _shift_truth_ids(outdir / f"exp_{expid}.truth.fits", k)]
        paths.append(outdir / f"visit_{truth.visit}.truth.json")
    vstack(refcats).write(outdir / "refcat.fits", format="fits", overwrite=True)
    return [*paths, outdir / "refcat.fits"]


def _field_spacing_deg(camera: Camera, pixel_scale: float) -> float:
    """Degrees between visits' fields: the focal plane's width, each sky's margins, and 5'."""
    reach = max(
        math.hypot(d.x, d.y) + 0.5 * math.hypot(d.nx, d.ny) for d in camera.detectors
    )  # px from the boresight
    return (2.0 * reach * pixel_scale + 2 * 60.0 + 300.0) / 3600.0


def _shift_truth_ids(path: Path, shift: int) -> Path:
    """The truth's reference ids shifted as its field's refcat rows were."""
    if shift:
        from calibstream.simulate.truth import read_truth, write_truth

        truth = read_truth(path)
        ref_id = truth.sources["ref_id"]
        ref_id[ref_id >= 0] += shift
        write_truth(truth, path)
    return path
