"""An exposure's observation metadata, from its primary header: below both the reader
(:mod:`calibstream.io.exposure`) and its checks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metadata:
    """Observation metadata from the primary header."""

    expid: int
    visit: int
    detector: int
    band: str
    mjd_obs: float
    exptime: float
    airmass: float | None = None
    bore_ra: float | None = None
    bore_dec: float | None = None
