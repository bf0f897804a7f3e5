"""Reference catalogs: ingest into a sky-sharded store, load a circle, move to an epoch.

    ingest_refcat([Path("gaia.parquet")], Path("refcat/gaia"))      # once
    ra, dec, radius = footprint_circle(wcs, image.shape, margin_deg=0.05)
    ref = load_refcat(Path("refcat/gaia"), ra, dec, radius, shard_cache=cache)
    ref = propagate_to_epoch(ref, mjd_obs)

The store's layout is described in :mod:`.refcat_store`, the input rules in
:mod:`.refcat_inputs`, the ingest in :mod:`.refcat_ingest`; the proper-motion
model in :mod:`.propermotion`. ``shard_cache`` is anything with
``get(key) -> bytes | None`` and ``set(key, bytes)`` (Redis in the streaming
service; nothing here imports it). Keys are
``calibstream:refcat:<sha256 of the shard>``: content addresses, so a re-ingest
can never serve a stale shard, and a cached value is checked against its hash
before use.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from calibstream.astrometry.propermotion import grow_errors, julian_year, propagate_positions
from calibstream.astrometry.refcat_hats import is_hats, open_catalog
from calibstream.astrometry.refcat_hats import load_columns as load_hats_columns
from calibstream.astrometry.refcat_ingest import ingest_refcat
from calibstream.astrometry.refcat_store import (
    BASE_COLUMNS,
    FILL,
    MANIFEST,
    IngestReport,
    SourceReport,
    bands_of,
    read_manifest,
    read_shard,
    shard_name,
)
from calibstream.astrometry.sky_cover import angular_separation, shards_overlapping
from calibstream.errors import RefcatError

__all__ = [
    "IngestReport",
    "LoadStats",
    "RefCatalog",
    "ShardCache",
    "SourceReport",
    "footprint_circle",
    "ingest_refcat",
    "load_refcat",
    "propagate_to_epoch",
    "store_name",
]

CACHE_PREFIX = "calibstream:refcat:"


class ShardCache(Protocol):
    """Bytes by key; Redis in the streaming service. Failures are tolerated."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes) -> None: ...


@dataclass(frozen=True)
class LoadStats:
    """What a load read: shards and rows, and how the shard cache served it."""

    shards: int = 0  # shards overlapping the circle
    rows_read: int = 0  # rows in those shards, before the exact cut
    cache_hits: int = 0
    cache_misses: int = 0  # shards read from their file while a cache was given
    cache_errors: int = 0  # cache calls that raised, or cached bytes failing their hash


@dataclass(frozen=True, eq=False)
class RefCatalog:
    """Reference rows as arrays (units of the contract: deg, mas, mas/yr, Julian year, AB mag).

    Columns the store does not hold are filled: proper motions with 0 (the
    contract), every other value with NaN (unknown). ``columns`` names those
    the store does hold.
    """

    id: np.ndarray  # int64
    ra: np.ndarray  # deg, ICRS, at ``epoch``
    dec: np.ndarray  # deg
    ra_err: np.ndarray  # mas, includes cos dec
    dec_err: np.ndarray  # mas
    pmra: np.ndarray  # mas/yr, includes cos dec
    pmdec: np.ndarray  # mas/yr
    pmra_err: np.ndarray  # mas/yr
    pmdec_err: np.ndarray  # mas/yr
    epoch: np.ndarray  # Julian year
    bands: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # mag, err
    columns: tuple[str, ...] = ()
    stats: LoadStats | None = None
    #: The reference catalogue's name (its store's, :func:`store_name`): colour terms are
    #: chosen by it (``[colorterms.<name>.<band>]``).
    name: str = ""

    def __len__(self) -> int:
        return len(self.id)

    @classmethod
    def from_columns(
        cls, columns: Mapping[str, np.ndarray], *, stats: LoadStats | None = None, name: str = ""
    ) -> RefCatalog:
        """From contract-named columns (``id``, ``ra``, ``g_mag``…); absent ones filled."""
        if "id" not in columns:
            raise RefcatError("required column 'id' is missing", where="id")
        n = len(columns["id"])

        def get(name: str) -> np.ndarray:
            if name in columns:
                return np.asarray(columns[name], dtype=np.int64 if name == "id" else np.float64)
            return np.full(n, FILL.get(name, np.nan))

        bands = {}
        for band in bands_of(list(columns)):
            bands[band] = (get(f"{band}_mag"), get(f"{band}_mag_err"))
        return cls(
            **{name: get(name) for name in BASE_COLUMNS},
            bands=bands,
            columns=tuple(columns),
            stats=stats,
            name=name,
        )

    def take(self, index: np.ndarray) -> RefCatalog:
        """The rows at ``index`` (integer indices or a boolean mask)."""
        arrays = {name: getattr(self, name)[index] for name in BASE_COLUMNS}
        bands = {b: (m[index], e[index]) for b, (m, e) in self.bands.items()}
        return dataclasses.replace(self, **arrays, bands=bands)


# --------------------------------------------------------------------------- loading


class _ShardVanished(Exception):
    """A shard named by the manifest is gone: the store was re-ingested meanwhile."""


@dataclass
class _CacheState:
    cache: ShardCache | None
    hits: int = 0
    misses: int = 0
    errors: int = 0


def load_refcat(
    store: Path,
    center_ra: float,
    center_dec: float,
    radius_deg: float,
    *,
    shard_cache: ShardCache | None = None,
) -> RefCatalog:
    """The rows of ``store`` within ``radius_deg`` of (``center_ra``, ``center_dec``), ICRS deg.

    Only the shards overlapping the circle are read (from ``shard_cache`` when
    it has them, else from their files, filling the cache); rows are then cut
    exactly to the circle. Rows come in shard order: HEALPix pixel, then id.
    """
    center_ra, center_dec, radius_deg = float(center_ra), float(center_dec), float(radius_deg)
    if not (np.isfinite(center_ra) and np.isfinite(center_dec) and abs(center_dec) <= 90.0):
        raise RefcatError(f"bad circle centre ({center_ra}, {center_dec})", where="center")
    if not (np.isfinite(radius_deg) and radius_deg >= 0.0):
        raise RefcatError(f"bad circle radius {radius_deg}", where="radius_deg")
    store = Path(store)
    if not (store / MANIFEST).exists() and is_hats(store):  # a HATS catalogue, in place
        columns, stats, name = load_hats_columns(
            store, center_ra, center_dec, radius_deg, shard_cache
        )
        return RefCatalog.from_columns(columns, stats=LoadStats(**stats), name=name)
    for attempt in range(2):
        manifest = read_manifest(store)
        try:
            return _load(store, manifest, center_ra, center_dec, radius_deg, shard_cache)
        except _ShardVanished as exc:
            if attempt:
                raise RefcatError(
                    "a shard named by the manifest is missing", where=str(exc)
                ) from None
    raise AssertionError("unreachable")


def _load(store, manifest, ra, dec, radius, cache) -> RefCatalog:
    nside = manifest["nside"]
    by_pixel = manifest["_by_pixel"]
    wanted = shards_overlapping(manifest, ra, dec, radius)
    columns = manifest["columns"]
    state = _CacheState(cache)
    parts = []
    for pixel in wanted:
        data = _shard_bytes(store, manifest, by_pixel[pixel], state)
        parts.append(read_shard(data, columns, where=f"{store}:{shard_name(pixel, nside)}"))
    if parts:
        merged = {c: np.concatenate([p[c] for p in parts]) for c in columns}
    else:
        merged = {c: np.empty(0, np.int64 if c == "id" else np.float64) for c in columns}
    rows_read = len(merged["id"])
    inside = angular_separation(merged["ra"], merged["dec"], ra, dec) <= radius
    merged = {c: v[inside] for c, v in merged.items()}
    stats = LoadStats(
        shards=len(wanted),
        rows_read=rows_read,
        cache_hits=state.hits,
        cache_misses=state.misses,
        cache_errors=state.errors,
    )
    return RefCatalog.from_columns(merged, stats=stats, name=manifest_name(store, manifest))


def manifest_name(store: Path, manifest: Mapping) -> str:
    """A store's name: the manifest's (``ingest-refcat --name``), else its folder's."""
    return str(manifest.get("name") or Path(store).resolve().name)


def store_name(store: Path) -> str:
    """The name of the reference catalogue at ``store`` (a store or a HATS catalogue)."""
    store = Path(store)
    if not (store / MANIFEST).exists() and is_hats(store):
        return open_catalog(store).name
    return manifest_name(store, read_manifest(store))


def _shard_bytes(store: Path, manifest: dict, entry: dict, state: _CacheState) -> bytes:
    sha = entry["sha256"]
    key = CACHE_PREFIX + sha
    if state.cache is not None:
        try:
            value = state.cache.get(key)
            if value is not None:
                value = bytes(value)
                if hashlib.sha256(value).hexdigest() == sha:
                    state.hits += 1
                    return value
                state.errors += 1  # corrupt or foreign value: read the file and overwrite it
        except Exception:
            state.errors += 1
            state.cache = None  # a failing cache is not asked again during this load
        state.misses += 1
    path = store / manifest["shard_dir"] / shard_name(entry["pixel"], manifest["nside"])
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _ShardVanished(str(path)) from None
    except OSError as exc:
        raise RefcatError(f"cannot read shard ({exc})", where=str(path)) from exc
    if hashlib.sha256(data).hexdigest() != sha:
        raise RefcatError("shard does not match its manifest entry (sha256)", where=str(path))
    if state.cache is not None:
        try:
            state.cache.set(key, data)
        except Exception:
            state.errors += 1
            state.cache = None
    return data


def footprint_circle(wcs, shape: tuple[int, ...], margin_deg: float) -> tuple[float, float, float]:
    """(ra, dec, radius) in ICRS degrees of a circle covering a chip, plus ``margin_deg``.

    ``shape`` is the image's numpy shape (ny, nx). The centre is the chip's
    centre pixel; the radius reaches the farthest of points along the chip's
    outer pixel edges (corners and 7 points between them per edge, origin 0,
    through ``wcs.pixel_to_world``, so distortions and non-ICRS frames count).
    """
    from astropy.coordinates import ICRS

    ny, nx = int(shape[0]), int(shape[1])
    celestial = wcs.celestial if hasattr(wcs, "celestial") else wcs
    xs = np.linspace(-0.5, nx - 0.5, 9)
    ys = np.linspace(-0.5, ny - 0.5, 9)
    x = np.concatenate([xs, xs, np.full(9, -0.5), np.full(9, nx - 0.5)])
    y = np.concatenate([np.full(9, -0.5), np.full(9, ny - 0.5), ys, ys])
    edge = celestial.pixel_to_world(x, y).transform_to(ICRS())
    centre = celestial.pixel_to_world((nx - 1) / 2.0, (ny - 1) / 2.0).transform_to(ICRS())
    ra0, dec0 = float(centre.ra.deg), float(centre.dec.deg)
    seps = angular_separation(edge.ra.deg, edge.dec.deg, ra0, dec0)
    if not (np.isfinite(ra0) and np.isfinite(dec0) and np.all(np.isfinite(seps))):
        raise RefcatError("the WCS does not map the chip's edges to the sky", where="wcs")
    return ra0, dec0, float(seps.max()) + float(margin_deg)


# --------------------------------------------------------------------------- proper motion


def propagate_to_epoch(ref: RefCatalog, mjd: float) -> RefCatalog:
    """``ref`` moved to the epoch of ``mjd`` (TAI): positions by proper motion, errors grown.

    Each row moves by its pm over (epoch(mjd) - its epoch) Julian years; ra_err
    and dec_err grow in quadrature by pmra_err·|Δt| and pmdec_err·|Δt|
    (correlations, parallax and radial velocity are ignored). Rows with no
    epoch, a non-finite pm or pm error do not move or grow by it. ``epoch``
    becomes the new epoch for every row. ``ref`` is not modified.
    """
    if not np.isfinite(mjd):
        raise RefcatError(f"bad MJD {mjd!r}", where="mjd")
    target = float(julian_year(mjd))
    dt = target - ref.epoch
    ra, dec = propagate_positions(ref.ra, ref.dec, ref.pmra, ref.pmdec, dt)
    return dataclasses.replace(
        ref,
        ra=ra,
        dec=dec,
        ra_err=grow_errors(ref.ra_err, ref.pmra_err, dt),
        dec_err=grow_errors(ref.dec_err, ref.pmdec_err, dt),
        epoch=np.full(len(ref), target),
    )
