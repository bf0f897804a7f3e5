"""Which shards of a HEALPix store a circle on the sky overlaps, and the great-circle
distance that decides it: what the store and a HATS catalogue's partitions share."""

from __future__ import annotations

import numpy as np
from astropy import units as u

from calibstream.astrometry.refcat_store import healpix


def shards_overlapping(manifest: dict, ra: float, dec: float, radius: float) -> list[int]:
    """The store's pixels that overlap the circle: all of them, and (nearly) only them.

    astropy_healpix's ``cone_search_lonlat`` misses pixels when the centre lies
    near a pixel edge (astropy/astropy-healpix#287; e.g. nside 1, (3.43, 37.55),
    2.47 deg returns [4] without pixel 0), so the test is done here: a cheap
    bound on each shard's centre distance (its radius, cached per manifest), then
    the pixel holding the centre plus every pixel whose boundary, sampled 16
    points per edge, comes within the radius, padded by the sample spacing so
    that no overlapping pixel can be missed.
    """
    pixels = np.fromiter(manifest["_by_pixel"], dtype=np.int64)
    if radius >= 180.0 or pixels.size == 0:
        return sorted(int(p) for p in pixels)
    hp = healpix(manifest["nside"])
    if "_geometry" not in manifest:
        lon, lat, extent, _ = _pixel_outline(hp, pixels, step=4)
        manifest["_geometry"] = (lon, lat, extent)
    lon, lat, extent = manifest["_geometry"]
    near = pixels[angular_separation(lon, lat, ra, dec) <= radius + extent]
    if near.size == 0:
        return []
    _, _, _, gap = _pixel_outline(hp, near, step=16, centre=(ra, dec))
    home = int(hp.lonlat_to_healpix(ra * u.deg, dec * u.deg))
    return sorted(int(p) for p in near[(gap <= radius) | (near == home)])


def _pixel_outline(hp, pixels: np.ndarray, step: int, centre=None):
    """Pixel centres, a bound on each pixel's extent from its centre, and (given a
    centre) a lower bound on the distance from it to each pixel's boundary (deg)."""
    lon_b, lat_b = hp.boundaries_lonlat(pixels, step=step)
    lon_b, lat_b = lon_b.to_value(u.deg), lat_b.to_value(u.deg)
    # A boundary point lies within half the spacing of samples (x 1.2 for the
    # curvature of HEALPix edges) of a sample.
    spacing = angular_separation(
        lon_b, lat_b, np.roll(lon_b, -1, axis=1), np.roll(lat_b, -1, axis=1)
    ).max(axis=1)
    pad = 0.6 * spacing + 1e-9
    lon_c, lat_c = hp.healpix_to_lonlat(pixels)
    lon_c, lat_c = lon_c.to_value(u.deg), lat_c.to_value(u.deg)
    extent = angular_separation(lon_b, lat_b, lon_c[:, None], lat_c[:, None]).max(axis=1) + pad
    gap = None
    if centre is not None:
        gap = angular_separation(lon_b, lat_b, centre[0], centre[1]).min(axis=1) - pad
    return lon_c, lat_c, extent, gap


def angular_separation(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance in degrees (Vincenty's formula: accurate at all separations)."""
    ra1, dec1, ra2, dec2 = (
        np.radians(np.asarray(v, dtype=np.float64)) for v in (ra1, dec1, ra2, dec2)
    )
    dra = ra2 - ra1
    sin_d1, cos_d1 = np.sin(dec1), np.cos(dec1)
    sin_d2, cos_d2 = np.sin(dec2), np.cos(dec2)
    num1 = cos_d2 * np.sin(dra)
    num2 = cos_d1 * sin_d2 - sin_d1 * cos_d2 * np.cos(dra)
    den = sin_d1 * sin_d2 + cos_d1 * cos_d2 * np.cos(dra)
    return np.degrees(np.arctan2(np.hypot(num1, num2), den))
