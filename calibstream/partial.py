"""Partial calibrations: what a stage that could not fit leaves for the folder (pure).

When astrometry or photometry fails for the data's fault (a calibstream error: no reference
stars, no pattern solution, too few calibration stars, no reference band, an implausible
zero-point...), the exposure is not lost: the stage hands on what was fitted with the
quantities it could not fit nulled, and says why (:class:`~calibstream.verdicts.Partial`).
Any other exception (a bug, a singular matrix) stays a failure, and a fault of the machine
is retried (:mod:`calibstream.failures`).

* astrometry did not fit: the catalogue keeps its first-guess positions, every source
  flagged ``flag_radec_first_guess``, none ``calib_astrometry_used``;
* photometry did not fit (or could not run): ``psf_mag``, ``psf_mag_err`` NaN and no star
  ``calib_photometry_used`` or ``calib_photometry_reserved``.
"""

from __future__ import annotations

import numpy as np

from calibstream.failures import failure_of
from calibstream.verdicts import Partial

#: The catalogue's flag: its ra, dec are the first-guess WCS's (astrometry did not fit).
FIRST_GUESS_FLAG = "flag_radec_first_guess"


def partial_of(error: BaseException, stage: str) -> Partial:
    """What ``error``, raised while fitting ``stage``, leaves undone: its stage, kind and
    reason, as the failure policy words them."""
    failure = failure_of(error, stage)
    return Partial(failure.stage, failure.kind, failure.reason)


def fitted_positions(catalog: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``catalog`` (sky positions from the fitted WCS) with the first-guess flag down."""
    return {**catalog, FIRST_GUESS_FLAG: np.zeros(len(catalog["id"]), dtype=bool)}


def first_guess_positions(catalog: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``catalog`` as detection left it (first-guess sky positions), flagged so, with no
    source used in an astrometric fit."""
    n = len(catalog["id"])
    return {
        **catalog,
        "calib_astrometry_used": np.zeros(n, dtype=bool),
        FIRST_GUESS_FLAG: np.ones(n, dtype=bool),
    }


def without_photometry(catalog: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``catalog`` with the photometric columns present and nulled: no calibrated
    magnitude, no star used or reserved."""
    n = len(catalog["id"])
    return {
        **catalog,
        "calib_photometry_used": np.zeros(n, dtype=bool),
        "calib_photometry_reserved": np.zeros(n, dtype=bool),
        "psf_mag": np.full(n, np.nan),
        "psf_mag_err": np.full(n, np.nan),
    }
