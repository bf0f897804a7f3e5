"""Aperture-correction maps: 2-D Chebyshev fields over the chip.

The contract stores one row per flux algorithm: ``ORDER`` and ``COEFFS`` of
length (ORDER+1)², where coefficient ``i*(ORDER+1)+j`` multiplies
T_i(y')·T_j(x'), and x', y' map the pixel-centre range [0, W-1], [0, H-1]
linearly onto [-1, 1]. The corrected flux is ``flux * apcorr(x, y)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.polynomial import chebyshev


@dataclass(frozen=True)
class ApCorrTerm:
    """One row of the APCORR table: the correction of one flux algorithm."""

    name: str
    order: int
    coeffs: np.ndarray  # shape (order+1, order+1): [i, j] multiplies T_i(y') T_j(x')
    err: float


@dataclass(frozen=True)
class ApCorrMap:
    """All aperture corrections of an exposure, evaluated at pixel positions."""

    terms: Mapping[str, ApCorrTerm]
    width: int
    height: int

    def __contains__(self, name: str) -> bool:
        return name in self.terms

    def evaluate(self, name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The multiplicative correction of flux algorithm ``name`` at 0-based (x, y)."""
        term = self.terms[name]
        xn = _to_unit(np.asarray(x, dtype=float), self.width)
        yn = _to_unit(np.asarray(y, dtype=float), self.height)
        # chebval2d(a, b, c) sums c[i, j] T_i(a) T_j(b): a is y', b is x'.
        return chebyshev.chebval2d(yn, xn, term.coeffs)


def _to_unit(u: np.ndarray, n: int) -> np.ndarray:
    """Map pixel centres 0..n-1 onto [-1, 1]."""
    return 2.0 * u / max(n - 1, 1) - 1.0


def apply_apcorr(
    flux: np.ndarray, flux_err: np.ndarray, correction: np.ndarray, correction_err: float
) -> tuple[np.ndarray, np.ndarray]:
    """Corrected flux and its error, the map's own uncertainty added in quadrature."""
    corrected = flux * correction
    err = np.hypot(flux_err * correction, flux * correction_err)
    return corrected, err
