"""The reference catalog: a Gaia/PS1-like view of the bright stars, with quoted errors."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
from astropy.table import Table

from calibstream.simulate.config import MAS_PER_DEG, SimConfig

#: Units of the astrometric columns (the magnitudes and their errors are in mag).
_UNITS = MappingProxyType(
    {
        "ra": "deg",
        "dec": "deg",
        "ra_err": "mas",
        "dec_err": "mas",
        "pmra": "mas / yr",
        "pmdec": "mas / yr",
        "pmra_err": "mas / yr",
        "pmdec_err": "mas / yr",
        "epoch": "yr",
    }
)
_BANDS = ("r", "i", "g")


def _mag_err(mag: np.ndarray, limit: float) -> np.ndarray:
    """PS1-like photometric errors: 2 mmag floor, ~0.03 mag at the catalog limit."""
    return 0.002 + 0.03 * 10.0 ** (0.4 * (mag - limit))


def make_refcat(stars: Table, rng: np.random.Generator, config: SimConfig) -> Table:
    """A Gaia/PS1-like catalog: every value is the truth plus a draw of its quoted error."""
    n = len(stars)
    r = np.asarray(stars["r_mag"])
    pos_err = 0.05 * 10.0 ** (0.217 * np.clip(r - 15.0, 0.0, None))  # mas: 0.05 → ~1 at r=21
    pm_err = 1.1 * pos_err  # mas/yr
    dec = np.asarray(stars["dec"])
    cos_dec = np.cos(np.radians(dec))
    table = Table()
    table["id"] = np.asarray(stars["ref_id"], dtype=np.int64)
    table["ra"] = stars["ra"] + pos_err * rng.standard_normal(n) / (MAS_PER_DEG * cos_dec)
    table["dec"] = dec + pos_err * rng.standard_normal(n) / MAS_PER_DEG
    table["ra_err"] = pos_err
    table["dec_err"] = pos_err
    table["pmra"] = stars["pmra"] + pm_err * rng.standard_normal(n)
    table["pmdec"] = stars["pmdec"] + pm_err * rng.standard_normal(n)
    table["pmra_err"] = pm_err
    table["pmdec_err"] = pm_err
    table["epoch"] = np.full(n, config.refcat_epoch)
    limit = config.refcat_mag_limit
    for band in _BANDS:
        mag = np.asarray(stars[f"{band}_mag"])
        err = _mag_err(mag, limit)
        table[f"{band}_mag"] = mag + err * rng.standard_normal(n)
        table[f"{band}_mag_err"] = err
    for name, unit in _UNITS.items():
        table[name].unit = unit
    for band in _BANDS:
        table[f"{band}_mag"].unit = table[f"{band}_mag_err"].unit = "mag"
    return table
