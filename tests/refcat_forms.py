"""One reference catalogue (the contract's columns) written in the forms users hold it in:
Gaia DR3's own columns, an LSST stack HTM refcat, and a HATS catalogue written to the spec.

The simulated bands map to Gaia's as g -> phot_bp_mean, r -> phot_g_mean, i -> phot_rp_mean
(the same values under Gaia's names), so one colour-term library per name gives the same
zero-point.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy import units as u
from astropy.table import Table

GAIA_BANDS = {"g": "phot_bp_mean", "r": "phot_g_mean", "i": "phot_rp_mean"}
MAG_PER_RELATIVE_FLUX = 2.5 / np.log(10.0)
MJD_J2000, DAYS_PER_YEAR = 51544.5, 365.25


def contract_columns(table: Table) -> dict[str, np.ndarray]:
    return {name: _native(table[name]) for name in table.colnames}


def _native(column) -> np.ndarray:
    values = np.asarray(column)
    return values.astype(values.dtype.newbyteorder("="))


def gaia_dr3_table(cols: dict[str, np.ndarray]) -> Table:
    """Gaia DR3's own column names and units (and a few columns the ingest ignores)."""
    t = Table()
    t["source_id"] = cols["id"]
    t["ra"] = cols["ra"] * u.deg
    t["dec"] = cols["dec"] * u.deg
    t["ra_error"] = cols["ra_err"] * u.mas
    t["dec_error"] = cols["dec_err"] * u.mas
    t["parallax"] = np.full(len(t), 0.5) * u.mas
    t["pmra"] = cols["pmra"] * u.mas / u.yr
    t["pmdec"] = cols["pmdec"] * u.mas / u.yr
    t["pmra_error"] = cols["pmra_err"] * u.mas / u.yr
    t["pmdec_error"] = cols["pmdec_err"] * u.mas / u.yr
    t["ref_epoch"] = cols["epoch"] * u.yr
    t["ruwe"] = np.ones(len(t))
    for band, gaia in GAIA_BANDS.items():
        t[f"{gaia}_mag"] = cols[f"{band}_mag"] * u.mag
        # Gaia publishes no magnitude error: flux/error, from which the ingest derives it.
        t[f"{gaia}_flux_over_error"] = MAG_PER_RELATIVE_FLUX / cols[f"{band}_mag_err"]
    return t


def write_gaia_parquet(cols: dict[str, np.ndarray], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gaia_dr3_table(cols).write(path, format="parquet", overwrite=True)
    return path


# --------------------------------------------------------------------------- LSST HTM refcat


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


_V = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0], [0, 0, -1]], float)
#: The 8 root trixels (S0..S3 = 8..11, N0..N3 = 12..15) as vertex indices.
_ROOTS = {
    8: (1, 5, 2),
    9: (2, 5, 3),
    10: (3, 5, 4),
    11: (4, 5, 1),
    12: (1, 0, 4),
    13: (4, 0, 3),
    14: (3, 0, 2),
    15: (2, 0, 1),
}


def _inside(p, a, b, c) -> np.ndarray:
    eps = -1e-15
    return (
        (np.einsum("ij,ij->i", np.cross(a, b), p) >= eps)
        & (np.einsum("ij,ij->i", np.cross(b, c), p) >= eps)
        & (np.einsum("ij,ij->i", np.cross(c, a), p) >= eps)
    )


def htm_index(ra_deg: np.ndarray, dec_deg: np.ndarray, depth: int = 7) -> np.ndarray:
    """The HTM trixel id of each position at ``depth`` (the stack's refcats use 7)."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    p = np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])
    n = len(p)
    ids = np.zeros(n, np.int64)
    a, b, c = (np.zeros((n, 3)) for _ in range(3))
    todo = np.ones(n, bool)
    for tid, (i, j, k) in _ROOTS.items():
        hit = todo & _inside(p, *(np.broadcast_to(_V[m], (n, 3)) for m in (i, j, k)))
        ids[hit], a[hit], b[hit], c[hit] = tid, _V[i], _V[j], _V[k]
        todo &= ~hit
    for _ in range(depth):
        w0, w1, w2 = _unit(b + c), _unit(a + c), _unit(a + b)
        children = [(a, w2, w1), (b, w0, w2), (c, w1, w0), (w0, w1, w2)]
        new = [np.empty_like(a), np.empty_like(b), np.empty_like(c)]
        child = np.full(n, -1)
        for number, (x, y, z) in enumerate(children):
            hit = (child < 0) & _inside(p, x, y, z)
            child[hit] = number
            for slot, vertex in zip(new, (x, y, z), strict=True):
                slot[hit] = vertex[hit]
        assert (child >= 0).all()
        ids = ids * 4 + child
        a, b, c = new
    return ids


def lsst_table(cols: dict[str, np.ndarray]) -> Table:
    """The stack's refcat columns: radians, rad/yr, MJD TAI, nJy (and its packed flags)."""
    t = Table()
    t["id"] = cols["id"]
    t["coord_ra"] = np.radians(cols["ra"]) * u.rad
    t["coord_dec"] = np.radians(cols["dec"]) * u.rad
    t["coord_raErr"] = (cols["ra_err"] * u.mas).to(u.rad)
    t["coord_decErr"] = (cols["dec_err"] * u.mas).to(u.rad)
    t["pm_ra"] = (cols["pmra"] * u.mas / u.yr).to(u.rad / u.yr)
    t["pm_dec"] = (cols["pmdec"] * u.mas / u.yr).to(u.rad / u.yr)
    t["pm_raErr"] = (cols["pmra_err"] * u.mas / u.yr).to(u.rad / u.yr)
    t["pm_decErr"] = (cols["pmdec_err"] * u.mas / u.yr).to(u.rad / u.yr)
    t["epoch"] = (MJD_J2000 + (cols["epoch"] - 2000.0) * DAYS_PER_YEAR) * u.day
    for band in "gri":
        flux = (cols[f"{band}_mag"] * u.ABmag).to_value(u.nJy)
        t[f"{band}_flux"] = flux * u.nJy
        t[f"{band}_fluxErr"] = flux * cols[f"{band}_mag_err"] / MAG_PER_RELATIVE_FLUX * u.nJy
    t["flags"] = np.zeros((len(t), 3), dtype=bool)  # resolved, variable, photometric
    return t


def write_lsst_htm(cols: dict[str, np.ndarray], folder: Path, depth: int = 7) -> Path:
    """``<trixel>.fits`` per HTM trixel, and a zero-row ``master_schema.fits``."""
    folder.mkdir(parents=True, exist_ok=True)
    table = lsst_table(cols)
    trixel = htm_index(cols["ra"], cols["dec"], depth)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table[:0].write(folder / "master_schema.fits", overwrite=True)
        for tid in np.unique(trixel):
            table[trixel == tid].write(folder / f"{tid}.fits", overwrite=True)
    return folder


# --------------------------------------------------------------------------- HATS


def write_hats(table: Table, folder: Path, name: str = "gaia_dr3", order: int = 9) -> Path:
    """A HATS catalogue by the spec: ``_healpix_29``, ``Norder=/Dir=/Npix=`` partitions at
    ``order`` (the first order-``order - 1`` parent's pixels merged into one partition, so
    that orders are mixed), ``properties``, ``partition_info.csv`` and the Parquet metadata
    files (``hats`` writes them when it is installed; else pyarrow)."""
    from astropy_healpix import HEALPix

    hp29 = HEALPix(nside=2**29, order="nested")
    h29 = hp29.lonlat_to_healpix(table["ra"].to(u.deg), table["dec"].to(u.deg)).astype(np.int64)
    parts = h29 >> (2 * (29 - order))
    keys = [(order, int(p)) for p in parts]
    parent = int(np.min(parts)) >> 2
    keys = [
        (order - 1, parent) if p >> 2 == parent else k for k, p in zip(keys, parts, strict=True)
    ]
    arrow = pa.table({"_healpix_29": h29, **{c: _native(table[c]) for c in table.colnames}})
    for k, p in sorted(set(keys)):
        rows = np.flatnonzero([key == (k, p) for key in keys])
        rows = rows[np.argsort(h29[rows], kind="stable")]
        path = (
            folder / "dataset" / f"Norder={k}" / f"Dir={p // 10000 * 10000}" / f"Npix={p}.parquet"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(arrow.take(pa.array(rows)), path)
    (folder / "partition_info.csv").write_text(
        "Norder,Npix\n" + "".join(f"{k},{p}\n" for k, p in sorted(set(keys)))
    )
    (folder / "properties").write_text(
        f"obs_collection={name}\ndataproduct_type=object\nhats_nrows={len(table)}\n"
        "hats_col_ra=ra\nhats_col_dec=dec\nhats_col_healpix=_healpix_29\n"
        "hats_col_healpix_order=29\nhats_npix_suffix=.parquet\n"
        f"hats_order={order}\n"
    )
    try:
        from hats.io.parquet_metadata import write_parquet_metadata
    except ImportError:
        pq.write_metadata(arrow.schema, folder / "dataset" / "_common_metadata")
    else:
        write_parquet_metadata(folder)
    return folder
