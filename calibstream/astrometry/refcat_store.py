"""The reference-catalog store: flat input tables in, HEALPix-sharded FITS tables out.

Layout of a store (a folder)::

    manifest.json              the commit point: nside, ordering, columns, units,
                               bands, rows, sources, and one entry per shard
                               (pixel, rows, sha256)
    shards-<digest>/<pixel>.fits
                               one FITS binary table per non-empty HEALPix pixel
                               (nested ordering, ICRS), rows sorted by id

``<digest>`` names the shard folder by its content (a hash of nside, columns and
every shard's sha256). An ingest writes a fresh folder beside the live one
(``.ingest-*``), renames it into place, then replaces ``manifest.json``
atomically: a killed ingest leaves the previous store intact and never a half
shard. Re-ingesting the same catalog writes the same bytes (the shard format
carries nothing time-dependent; rows are sorted by id, so even the input row
order does not matter). A shard's sha256 is also its cache key.

Inputs follow shared/contracts/reference-catalog.md. Column names are matched
case-insensitively (FITS names are), units are checked where the file carries
them, and every violation is a :class:`~calibstream.errors.RefcatError` whose
``where`` is ``<file name>:<column>``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits

from calibstream.errors import RefcatError
from calibstream.io.fitsio import atomic_write_bytes

FORMAT = "calibstream-refcat"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ORDERING = "nested"

#: The contract's non-photometric columns, in the order shards store them.
BASE_COLUMNS = (
    "id",
    "ra",
    "dec",
    "ra_err",
    "dec_err",
    "pmra",
    "pmdec",
    "pmra_err",
    "pmdec_err",
    "epoch",
)
REQUIRED_COLUMNS = ("id", "ra", "dec")
PM_COLUMNS = ("pmra", "pmdec")
#: Unit each column is stored in (FITS TUNIT strings).
STORE_UNITS = {
    "ra": "deg",
    "dec": "deg",
    "ra_err": "mas",
    "dec_err": "mas",
    "pmra": "mas yr-1",
    "pmdec": "mas yr-1",
    "pmra_err": "mas yr-1",
    "pmdec_err": "mas yr-1",
    "epoch": "yr",
}
#: Value written for rows whose input file lacks a column: proper motions are 0
#: when absent (the contract); everything else is unknown (NaN).
FILL = {"pmra": 0.0, "pmdec": 0.0}
_EXPECTED_UNIT = {
    "ra": u.deg,
    "dec": u.deg,
    "ra_err": u.mas,
    "dec_err": u.mas,
    "pmra": u.mas / u.yr,
    "pmdec": u.mas / u.yr,
    "pmra_err": u.mas / u.yr,
    "pmdec_err": u.mas / u.yr,
    "epoch": u.yr,
}
_MAG_UNIT_STRINGS = {"mag", "abmag", "magab", "mag(ab)", "ab mag"}
_BAND = re.compile(r"^([a-z0-9_]+?)_mag(_err)?$")
_SUFFIXES = {
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".fits.gz": "fits",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".csv.gz": "csv",
    ".ecsv": "ecsv",
}
FITS_BLOCK = 2880


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class SourceReport:
    path: Path
    rows: int
    sha256: str
    ignored_columns: tuple[str, ...]  # columns the contract does not know, not stored


@dataclass(frozen=True)
class IngestReport:
    store: Path
    manifest: Path
    shard_dir: str  # folder of the shards, relative to the store
    nside: int
    rows: int
    shards: int
    columns: tuple[str, ...]
    bands: tuple[str, ...]
    sources: tuple[SourceReport, ...]
    seconds: float


# --------------------------------------------------------------------------- columns


def column_kind(name: str) -> tuple[str, str | None]:
    """('base', None), ('mag', band), ('mag_err', band) or ('other', None)."""
    if name in BASE_COLUMNS:
        return "base", None
    match = _BAND.match(name)
    if match:
        return ("mag_err" if match.group(2) else "mag"), match.group(1)
    return "other", None


def canonical_order(columns: set[str]) -> list[str]:
    """Base columns in the contract's order, then per band (sorted) mag, mag_err."""
    ordered = [c for c in BASE_COLUMNS if c in columns]
    bands = sorted({column_kind(c)[1] for c in columns if column_kind(c)[0] != "base"})
    for band in bands:
        ordered += [c for c in (f"{band}_mag", f"{band}_mag_err") if c in columns]
    return ordered


def bands_of(columns: Sequence[str]) -> list[str]:
    return sorted({column_kind(c)[1] for c in columns if column_kind(c)[0] == "mag"})


def store_unit(name: str) -> str:
    return STORE_UNITS.get(name, "mag" if column_kind(name)[0] != "base" else "")


# --------------------------------------------------------------------------- reading inputs


@dataclass
class _Raw:
    """One input table as plain arrays, names lower-cased, before validation."""

    values: dict[str, np.ndarray]
    units: dict[str, str | None]
    nulls: dict[str, np.ndarray | None]  # bool mask of missing values, or None
    rows: int


def _format_of(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return _SUFFIXES[suffix]
    raise RefcatError(
        f"unknown file type (expected one of {', '.join(sorted(_SUFFIXES))})", where=str(path)
    )


def _read_input(path: Path) -> _Raw:
    fmt = _format_of(path)
    if not path.is_file():
        raise RefcatError("no such file", where=str(path))
    try:
        if fmt in ("parquet", "csv"):
            return _read_arrow(path, fmt)
        return _read_astropy(path, fmt)
    except RefcatError:
        raise
    except Exception as exc:  # any reader failure is a bad input, said in words
        raise RefcatError(f"cannot read as {fmt} ({exc})", where=str(path)) from exc


def _read_astropy(path: Path, fmt: str) -> _Raw:
    from astropy.table import Table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unparsable units come back as UnrecognizedUnit
        table = Table.read(path, format="fits" if fmt == "fits" else "ascii.ecsv")
    values, units, nulls = {}, {}, {}
    for name in table.colnames:
        col = table[name]
        key = _lower(path, name, values)
        data = np.ma.getdata(col)
        mask = np.ma.getmaskarray(col) if np.ma.is_masked(col) else None
        if data.ndim != 1:
            raise RefcatError(f"column {name!r} is not scalar per row", where=f"{path.name}:{key}")
        values[key] = np.asarray(data)
        units[key] = None if col.unit is None else col.unit.to_string()
        nulls[key] = mask
    return _Raw(values, units, nulls, len(table))


def _read_arrow(path: Path, fmt: str) -> _Raw:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pq.read_table(path) if fmt == "parquet" else pacsv.read_csv(path)
    units = _arrow_units(table.schema)
    values, nulls, out_units = {}, {}, {}
    for name in table.column_names:
        key = _lower(path, name, values)
        column = table.column(name)
        if pa.types.is_nested(column.type):
            raise RefcatError(f"column {name!r} is not scalar per row", where=f"{path.name}:{key}")
        mask = None
        if column.null_count:
            mask = column.is_null().to_numpy(zero_copy_only=False)
        values[key] = column.to_numpy()
        out_units[key] = units.get(name)
        nulls[key] = mask
    return _Raw(values, out_units, nulls, table.num_rows)


def _arrow_units(schema) -> dict[str, str]:
    """Units a Parquet file carries: astropy's table_meta_yaml, or a field's ``unit`` key."""
    units: dict[str, str] = {}
    for field in schema:
        if field.metadata and b"unit" in field.metadata:
            units[field.name] = field.metadata[b"unit"].decode()
    meta = schema.metadata or {}
    if b"table_meta_yaml" in meta:
        from astropy.table.meta import get_header_from_yaml

        header = get_header_from_yaml(meta[b"table_meta_yaml"].decode().split("\n"))
        for entry in header.get("datatype", []):
            if entry.get("unit") is not None:
                units[entry["name"]] = str(entry["unit"])
    return units


def _lower(path: Path, name: str, seen: dict) -> str:
    key = name.strip().lower()
    if key in seen:
        raise RefcatError(
            f"two columns named {key!r} (names are case-insensitive)", where=f"{path.name}:{key}"
        )
    return key


# --------------------------------------------------------------------------- validation


def _check_unit(path: Path, name: str, unit: str | None) -> None:
    if unit is None or not unit.strip():
        return
    where = f"{path.name}:{name}"
    kind = column_kind(name)[0]
    parsed = u.Unit(unit, parse_strict="silent")
    if kind in ("mag", "mag_err"):
        text = unit.strip().lower()
        if text in _MAG_UNIT_STRINGS or parsed in (u.mag, u.ABmag, u.dimensionless_unscaled):
            return
        raise RefcatError(f"column {name!r} has unit {unit!r}; expected mag or AB mag", where=where)
    if isinstance(parsed, u.UnrecognizedUnit):
        raise RefcatError(f"column {name!r} has an unknown unit {unit!r}", where=where)
    if parsed == u.dimensionless_unscaled:
        return
    expected = _EXPECTED_UNIT.get(name)
    if expected is None:  # id
        raise RefcatError(f"column {name!r} must be unitless, not {unit!r}", where=where)
    if parsed != expected:
        raise RefcatError(
            f"column {name!r} has unit {unit!r}; the contract requires {expected.to_string()}",
            where=where,
        )


def _validate(path: Path, raw: _Raw) -> tuple[dict[str, np.ndarray], list[str]]:
    """The contract's columns as int64/float64 arrays, and the names ignored."""
    names = set(raw.values)
    for name in REQUIRED_COLUMNS:
        if name not in names:
            raise RefcatError(f"required column {name!r} is missing", where=f"{path.name}:{name}")
    has_pm = [c for c in PM_COLUMNS if c in names]
    if has_pm:
        for name in PM_COLUMNS:
            if name not in names:
                raise RefcatError(
                    f"column {name!r} is missing while {has_pm[0]!r} is given",
                    where=f"{path.name}:{name}",
                )
        if "epoch" not in names:
            raise RefcatError(
                "column 'epoch' is required when proper motions are given",
                where=f"{path.name}:epoch",
            )
    kept, ignored = [], []
    for name in sorted(names):
        kind, band = column_kind(name)
        if kind == "other":
            ignored.append(name)
            continue
        if kind == "mag_err" and f"{band}_mag" not in names:
            raise RefcatError(
                f"column {name!r} is given without {band + '_mag'!r}", where=f"{path.name}:{name}"
            )
        kept.append(name)
    out: dict[str, np.ndarray] = {}
    for name in kept:
        where = f"{path.name}:{name}"
        _check_unit(path, name, raw.units.get(name))
        data, nulls = raw.values[name], raw.nulls.get(name)
        if name == "id":
            out[name] = _ids(path, data, nulls)
            continue
        if data.dtype.kind not in "biuf":
            raise RefcatError(f"column {name!r} is not numeric (dtype {data.dtype})", where=where)
        values = np.asarray(data, dtype=np.float64)
        missing = np.isnan(values)
        if nulls is not None:
            missing |= nulls
        if missing.any():
            values = values.copy()
            values[missing] = np.nan  # one NaN bit pattern, whatever the input wrote
        out[name] = values
    for name in ("ra", "dec"):
        bad = ~np.isfinite(out[name])
        if bad.any():
            first = int(np.argmax(bad))
            raise RefcatError(
                f"column {name!r} has {int(bad.sum())} missing or non-finite values "
                f"(first at row {first} counting from 0, id {int(out['id'][first])})",
                where=f"{path.name}:{name}",
            )
    outside = np.abs(out["dec"]) > 90.0
    if outside.any():
        raise RefcatError(
            f"column 'dec' has {int(outside.sum())} values outside [-90, 90] "
            f"(first at row {int(np.argmax(outside))})",
            where=f"{path.name}:dec",
        )
    ra = np.mod(out["ra"], 360.0)
    ra[ra >= 360.0] = 0.0  # -1e-17 % 360 rounds to 360
    out["ra"] = ra
    if has_pm:
        pmra, pmdec = out["pmra"], out["pmdec"]
        moving = np.isfinite(pmra) & np.isfinite(pmdec) & ((pmra != 0) | (pmdec != 0))
        bad = moving & ~np.isfinite(out["epoch"])
        if bad.any():
            raise RefcatError(
                f"column 'epoch' is missing or non-finite for {int(bad.sum())} rows with a "
                f"proper motion (first at row {int(np.argmax(bad))})",
                where=f"{path.name}:epoch",
            )
    _check_unique(out["id"], f"{path.name}:id")
    return out, ignored


def _ids(path: Path, data: np.ndarray, nulls: np.ndarray | None) -> np.ndarray:
    where = f"{path.name}:id"
    if nulls is not None and nulls.any():
        raise RefcatError(
            f"column 'id' has {int(nulls.sum())} missing values (first at row "
            f"{int(np.argmax(nulls))})",
            where=where,
        )
    if data.dtype.kind not in "iu":
        raise RefcatError(f"column 'id' must be integer, not {data.dtype}", where=where)
    if data.dtype.kind == "u" and data.size and data.max() > np.iinfo(np.int64).max:
        raise RefcatError("column 'id' has values beyond int64", where=where)
    return data.astype(np.int64)


def _check_unique(ids: np.ndarray, where: str, origins: list[str] | None = None) -> None:
    if ids.size < 2:
        return
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    same = ordered[1:] == ordered[:-1]
    if same.any():
        first = int(np.argmax(same))
        value = int(ordered[first])
        extra = ""
        if origins is not None:
            files = sorted({origins[order[first]], origins[order[first + 1]]})
            extra = f" (in {' and '.join(files)})"
        raise RefcatError(
            f"column 'id' is not unique: {int(same.sum())} duplicates, e.g. id {value}{extra}",
            where=where,
        )


# --------------------------------------------------------------------------- shard files


class _ShardWriter:
    """FITS bytes of shards, built from header card images made once per store.

    astropy builds the cards (so the header is valid FITS); per shard only
    NAXIS2 and HPXPIX change, and the data are the rows' big-endian bytes.
    """

    def __init__(self, columns: Sequence[str], nside: int) -> None:
        self.columns = list(columns)
        self.dtype = np.dtype([(c, ">i8" if c == "id" else ">f8") for c in self.columns])
        primary = fits.Header()
        primary["SIMPLE"] = True
        primary["BITPIX"] = 8
        primary["NAXIS"] = 0
        primary["EXTEND"] = True
        primary["ORIGIN"] = ("calibstream", "reference-catalog shard")
        self.primary = _header_bytes([c.image for c in primary.cards])
        cards = [
            fits.Card("XTENSION", "BINTABLE", "binary table extension"),
            fits.Card("BITPIX", 8, "array data type"),
            fits.Card("NAXIS", 2, "number of array dimensions"),
            fits.Card("NAXIS1", self.dtype.itemsize, "bytes per row"),
            fits.Card("NAXIS2", 0, "rows"),
            fits.Card("PCOUNT", 0, "number of group parameters"),
            fits.Card("GCOUNT", 1, "number of groups"),
            fits.Card("TFIELDS", len(self.columns), "number of table fields"),
        ]
        for i, name in enumerate(self.columns, start=1):
            cards.append(fits.Card(f"TTYPE{i}", name))
            cards.append(fits.Card(f"TFORM{i}", "K" if name == "id" else "D"))
            unit = store_unit(name)
            if unit:
                cards.append(fits.Card(f"TUNIT{i}", unit))
        cards += [
            fits.Card("EXTNAME", "REFCAT", "reference catalog rows of one HEALPix pixel"),
            fits.Card("PIXTYPE", "HEALPIX", "sharding scheme"),
            fits.Card("ORDERING", ORDERING.upper(), "HEALPix ordering"),
            fits.Card("COORDSYS", "C", "celestial (ICRS)"),
            fits.Card("NSIDE", nside, "HEALPix resolution"),
            fits.Card("HPXPIX", 0, "HEALPix pixel of every row"),
            fits.Card("MAGSYS", "AB", "magnitude system of *_mag"),
        ]
        self.cards = [c.image for c in cards]
        self.naxis2 = 4
        self.hpxpix = next(i for i, c in enumerate(self.cards) if c.startswith("HPXPIX  "))

    def records(self, columns: dict[str, np.ndarray], order: np.ndarray) -> np.ndarray:
        rec = np.empty(order.size, dtype=self.dtype)
        for name in self.columns:
            rec[name] = columns[name][order]
        return rec

    def shard(self, rows: np.ndarray, pixel: int) -> bytes:
        cards = list(self.cards)
        cards[self.naxis2] = _int_card("NAXIS2", int(rows.size), "rows")
        cards[self.hpxpix] = _int_card("HPXPIX", int(pixel), "HEALPix pixel of every row")
        data = rows.tobytes()
        pad = (-len(data)) % FITS_BLOCK
        return self.primary + _header_bytes(cards) + data + b"\0" * pad


def _int_card(key: str, value: int, comment: str) -> str:
    """A fixed-format integer card, as astropy writes it (value right-aligned to column 30)."""
    return f"{key:<8}= {value:>20} / {comment}".ljust(80)[:80]


def _header_bytes(cards: list[str]) -> bytes:
    text = "".join(cards) + "END".ljust(80)
    text += " " * ((-len(text)) % FITS_BLOCK)
    return text.encode("ascii")


def read_shard(data: bytes, columns: Sequence[str], where: str) -> dict[str, np.ndarray]:
    """The columns of one shard's FITS bytes, as native int64/float64 arrays.

    Shards in this module's own layout (K and D columns, one table) are read
    straight from the bytes; anything else goes through astropy.
    """
    fast = _parse_own_shard(data)
    if fast is not None:
        names = fast.dtype.names or ()
        missing = [c for c in columns if c not in names]
        if missing:
            raise RefcatError(f"shard lacks columns {missing}", where=where)
        return {c: fast[c].astype(np.int64 if c == "id" else np.float64) for c in columns}
    try:
        with fits.open(io.BytesIO(data), memmap=False) as hdul:
            table = hdul[1].data
            names = [] if table is None else [n.lower() for n in table.columns.names]
            if table is None:
                return {c: np.empty(0, np.int64 if c == "id" else np.float64) for c in columns}
            missing = [c for c in columns if c not in names]
            if missing:
                raise RefcatError(f"shard lacks columns {missing}", where=where)
            return {
                c: np.array(table[c], dtype=np.int64 if c == "id" else np.float64) for c in columns
            }
    except RefcatError:
        raise
    except Exception as exc:
        raise RefcatError(f"unreadable shard ({exc})", where=where) from exc


def _parse_own_shard(data: bytes) -> np.ndarray | None:
    """The rows of a primary HDU + one K/D binary table, as a big-endian record view."""
    start = _header_end(data, 0)
    if start is None:
        return None
    cards = {}
    for i in range(start, len(data), 80):
        card = data[i : i + 80].decode("ascii", "replace")
        key = card[:8].strip()
        if key == "END":
            break
        if card[8:10] == "= ":
            cards[key] = _card_value(card[10:])
    end = _header_end(data, start)
    try:
        if cards.get("XTENSION") != "BINTABLE" or end is None:
            return None
        forms = [cards[f"TFORM{i}"] for i in range(1, int(cards["TFIELDS"]) + 1)]
        names = [cards[f"TTYPE{i}"].lower() for i in range(1, len(forms) + 1)]
        if any(f not in ("K", "1K", "D", "1D") for f in forms) or len(set(names)) < len(names):
            return None
        dtype = np.dtype(
            [(n, ">i8" if "K" in f else ">f8") for n, f in zip(names, forms, strict=True)]
        )
        rows = int(cards["NAXIS2"])
        if int(cards["NAXIS1"]) != dtype.itemsize or int(cards.get("PCOUNT", 0)) != 0:
            return None
        if len(data) < end + rows * dtype.itemsize:
            return None
    except (KeyError, ValueError):
        return None
    return np.frombuffer(data, dtype=dtype, count=rows, offset=end)


def _header_end(data: bytes, start: int) -> int | None:
    """Offset of the block after the header that begins at ``start``."""
    for i in range(start, len(data), 80):
        if data[i : i + 8] == b"END     ":
            return start + -(-(i + 80 - start) // FITS_BLOCK) * FITS_BLOCK
    return None


def _card_value(text: str) -> str:
    text = text.strip()
    if text.startswith("'"):
        close = text.find("'", 1)
        return text[1:close].rstrip() if close > 0 else text[1:]
    return text.split("/", 1)[0].strip()


def shard_name(pixel: int, nside: int) -> str:
    width = len(str(12 * nside * nside - 1))
    return f"{pixel:0{width}d}.fits"


# --------------------------------------------------------------------------- ingest


def healpix(nside: int):
    from astropy.coordinates import ICRS
    from astropy_healpix import HEALPix

    if not isinstance(nside, int | np.integer) or nside < 1 or nside & (nside - 1) or nside > 2**29:
        raise RefcatError(f"nside must be a power of 2 in [1, 2**29], not {nside!r}", where="nside")
    return HEALPix(nside=int(nside), order=ORDERING, frame=ICRS())


def ingest_refcat(paths: Sequence[Path], store: Path, nside: int = 32) -> IngestReport:
    """Validate the input tables and write them as one sharded store at ``store``.

    The store holds exactly these inputs afterwards (an existing store there is
    replaced, atomically). Several files make one catalog: their columns are
    united (a column a file lacks is NaN for its rows, proper motions 0) and
    ids must be unique across all of them.
    """
    start = time.perf_counter()
    hp = healpix(nside)
    store = Path(store)
    paths = [Path(p) for p in paths]
    if not paths:
        raise RefcatError("no input files given", where=str(store))

    tables, sources, origins = [], [], []
    for path in paths:
        columns, ignored = _validate(path, _read_input(path))
        tables.append(columns)
        sources.append(SourceReport(path, len(columns["id"]), _sha256_file(path), tuple(ignored)))
        origins.append(path.name)
    present = canonical_order(set().union(*(t.keys() for t in tables)))
    merged = _merge(tables, present)
    if len(tables) > 1:
        file_of = np.repeat(np.arange(len(tables)), [len(t["id"]) for t in tables])
        _check_unique_across(merged["id"], file_of, origins)

    pixels = hp.lonlat_to_healpix(merged["ra"] * u.deg, merged["dec"] * u.deg).astype(np.int64)
    order = np.lexsort((merged["id"], pixels))
    writer = _ShardWriter(present, nside)
    rec = writer.records(merged, order)
    pixels = pixels[order]
    bounds = np.flatnonzero(np.diff(pixels)) + 1
    starts = np.concatenate(([0], bounds)) if pixels.size else np.empty(0, np.int64)
    stops = np.concatenate((bounds, [pixels.size])) if pixels.size else np.empty(0, np.int64)

    # Pass 1: each shard's bytes and hash; the folder is named by their digest.
    shards = []
    for lo, hi in zip(starts, stops, strict=True):
        pixel = int(pixels[lo])
        data = writer.shard(rec[lo:hi], pixel)
        shards.append({"pixel": pixel, "rows": int(hi - lo), "sha256": _sha256(data)})
    units = {c: store_unit(c) for c in present}
    digest = _sha256(
        json.dumps([nside, ORDERING, present, units, shards], sort_keys=True).encode()
    )[:16]
    shard_dir = f"shards-{digest}"

    # Pass 2, unless the same shards are live already: write them beside, then rename.
    store.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(store, keep=None, prefixes=(".ingest-", ".trash-"))
    if not (store / shard_dir).is_dir():
        tmp = Path(tempfile.mkdtemp(dir=store, prefix=".ingest-"))
        try:
            for lo, entry in zip(starts, shards, strict=True):
                data = writer.shard(rec[lo : lo + entry["rows"]], entry["pixel"])
                (tmp / shard_name(entry["pixel"], nside)).write_bytes(data)
            os.sync()  # all shards on disk before the folder goes live (one call, not per file)
            os.rename(tmp, store / shard_dir)
            _fsync_dir(store)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "nside": nside,
        "ordering": ORDERING,
        "frame": "icrs",
        "shard_dir": shard_dir,
        "columns": present,
        "units": units,
        "bands": bands_of(present),
        "rows": int(pixels.size),
        "sources": [
            {
                "path": str(s.path.resolve()),
                "rows": s.rows,
                "sha256": s.sha256,
                "ignored_columns": list(s.ignored_columns),
            }
            for s in sources
        ],
        "shards": shards,
    }
    atomic_write_bytes((json.dumps(manifest, indent=1) + "\n").encode(), store / MANIFEST)
    _remove_leftovers(store, keep=shard_dir, prefixes=("shards-",))
    return IngestReport(
        store=store,
        manifest=store / MANIFEST,
        shard_dir=shard_dir,
        nside=nside,
        rows=int(pixels.size),
        shards=len(shards),
        columns=tuple(present),
        bands=tuple(bands_of(present)),
        sources=tuple(sources),
        seconds=time.perf_counter() - start,
    )


def _merge(tables: list[dict[str, np.ndarray]], present: list[str]) -> dict[str, np.ndarray]:
    """One table from several: columns united, a file's absent column filled (FILL or NaN)."""
    if len(tables) == 1:
        return tables[0]
    merged = {}
    for name in present:
        parts = [
            t[name] if name in t else np.full(len(t["id"]), FILL.get(name, np.nan)) for t in tables
        ]
        merged[name] = np.concatenate(parts)
    return merged


def _check_unique_across(ids: np.ndarray, file_of: np.ndarray, names: list[str]) -> None:
    origins = [names[i] for i in file_of] if ids.size < 1000 else None
    try:
        _check_unique(ids, "id", origins)
    except RefcatError:
        if origins is not None:
            raise
        origins = [names[i] for i in file_of]  # slow path only to name the files
        _check_unique(ids, "id", origins)


def _remove_leftovers(store: Path, keep: str | None, prefixes: tuple[str, ...]) -> None:
    """Remove older shard folders and debris of killed ingests (renamed away first)."""
    for entry in store.iterdir():
        if entry.name == keep or not entry.is_dir() or not entry.name.startswith(prefixes):
            continue
        if entry.name.startswith(".trash-"):
            shutil.rmtree(entry, ignore_errors=True)
            continue
        trash = store / f".trash-{entry.name.lstrip('.')}-{os.getpid()}"
        try:
            os.rename(entry, trash)
        except OSError:
            continue
        shutil.rmtree(trash, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- manifest


_MANIFESTS: dict[str, tuple[tuple, dict]] = {}


def read_manifest(store: Path) -> dict:
    """The store's manifest (parsed once per version of the file, then kept)."""
    path = Path(store) / MANIFEST
    try:
        stat = path.stat()
    except OSError as exc:
        raise RefcatError(
            "not a reference-catalog store (no manifest.json)", where=str(store)
        ) from exc
    key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    cached = _MANIFESTS.get(str(path))
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RefcatError(f"unreadable manifest ({exc})", where=str(path)) from exc
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise RefcatError(f"not a {FORMAT} v{FORMAT_VERSION} manifest", where=str(path))
    manifest["_by_pixel"] = {s["pixel"]: s for s in manifest["shards"]}
    if len(_MANIFESTS) > 16:
        _MANIFESTS.clear()
    _MANIFESTS[str(path)] = (key, manifest)
    return manifest
