"""Where a bit mask has any of given bits set, without holding the boolean plane.

Detection's S/N image reads its invalid pixels a band of rows at a time; a
:class:`MaskBits` answers each band from the mask itself, so the 16 MB plane of a
4k×4k exposure is not held beside the S/N's two padded planes (issue 17).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Rows of a mask tested at once (no full-size integer temporary).
BAND_ROWS = 256


@dataclass(frozen=True, eq=False)
class MaskBits:
    """The pixels of ``mask`` with any of ``bits`` set, tested where they are read."""

    mask: np.ndarray
    bits: int

    @property
    def shape(self) -> tuple[int, ...]:
        return self.mask.shape

    def _bits(self) -> np.ndarray:
        # bit 31 of an int32 mask too
        return np.asarray(self.bits, dtype=np.uint64).astype(self.mask.dtype)

    def rows(self, band: slice) -> np.ndarray:
        """The boolean plane's rows ``band``."""
        return (self.mask[band] & self._bits()) != 0

    def plane(self) -> np.ndarray:
        """The whole boolean plane."""
        out = np.empty(self.mask.shape, dtype=bool)
        bits = self._bits()
        for start in range(0, self.mask.shape[0], BAND_ROWS):
            band = slice(start, start + BAND_ROWS)
            np.not_equal(self.mask[band] & bits, 0, out=out[band])
        return out

    def count(self) -> int:
        """How many pixels have any of the bits."""
        bits = self._bits()
        return sum(
            int(np.count_nonzero(self.mask[start : start + BAND_ROWS] & bits))
            for start in range(0, self.mask.shape[0], BAND_ROWS)
        )


#: Invalid pixels: a boolean plane, or the mask bits that mark them.
Invalid = np.ndarray | MaskBits


def rows_of(invalid: Invalid, band: slice) -> np.ndarray:
    """Rows ``band`` of the boolean plane."""
    return invalid.rows(band) if isinstance(invalid, MaskBits) else invalid[band]


def plane_of(invalid: Invalid) -> np.ndarray:
    """The boolean plane (made, for mask bits)."""
    return invalid.plane() if isinstance(invalid, MaskBits) else invalid


def count_of(invalid: Invalid) -> int:
    """How many pixels are invalid."""
    return invalid.count() if isinstance(invalid, MaskBits) else int(np.count_nonzero(invalid))
