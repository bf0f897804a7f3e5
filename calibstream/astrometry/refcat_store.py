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

This module holds the store's column model, its shard files and its manifest;
reading and validating inputs is :mod:`calibstream.astrometry.refcat_inputs`,
the ingest itself :mod:`calibstream.astrometry.refcat_ingest`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from calibstream.errors import RefcatError

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
_BAND = re.compile(r"^([a-z0-9_]+?)_mag(_err)?$")
FITS_BLOCK = 2880


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class SourceReport:
    path: Path
    rows: int
    sha256: str
    ignored_columns: tuple[str, ...]  # columns the contract does not know, not stored
    form: str = "contract"  # the columns' form (refcat_formats.FORMS), "hats:<form>" for HATS


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
    name: str = ""  # the catalogue's name, which colour terms are keyed by


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


# --------------------------------------------------------------------------- sharding


def healpix(nside: int):
    """The HEALPix grid shards are cut on (nested, ICRS); ``nside`` must be a power of 2."""
    from astropy.coordinates import ICRS
    from astropy_healpix import HEALPix

    if not isinstance(nside, int | np.integer) or nside < 1 or nside & (nside - 1) or nside > 2**29:
        raise RefcatError(f"nside must be a power of 2 in [1, 2**29], not {nside!r}", where="nside")
    return HEALPix(nside=int(nside), order=ORDERING, frame=ICRS())


@dataclass(frozen=True, eq=False)
class Shards:
    """A catalog cut into its shards: rows sorted by (pixel, id), one entry per shard."""

    writer: _ShardWriter
    records: np.ndarray  # every row, in shard order
    starts: np.ndarray  # first row of each shard
    entries: list[dict]  # per shard: pixel, rows, sha256 (as the manifest lists them)
    nside: int

    def files(self) -> Iterator[tuple[str, bytes]]:
        """(file name, FITS bytes) of every shard, built again (not kept in memory)."""
        for lo, entry in zip(self.starts, self.entries, strict=True):
            data = self.writer.shard(self.records[lo : lo + entry["rows"]], entry["pixel"])
            yield shard_name(entry["pixel"], self.nside), data


def shard_catalog(
    columns: dict[str, np.ndarray], present: list[str], pixels: np.ndarray, nside: int
) -> Shards:
    """The catalog's rows cut by HEALPix ``pixels``, each shard's bytes hashed once."""
    order = np.lexsort((columns["id"], pixels))
    writer = _ShardWriter(present, nside)
    rec = writer.records(columns, order)
    pixels = pixels[order]
    bounds = np.flatnonzero(np.diff(pixels)) + 1
    starts = np.concatenate(([0], bounds)) if pixels.size else np.empty(0, np.int64)
    stops = np.concatenate((bounds, [pixels.size])) if pixels.size else np.empty(0, np.int64)
    entries = []
    for lo, hi in zip(starts, stops, strict=True):
        pixel = int(pixels[lo])
        data = writer.shard(rec[lo:hi], pixel)
        entries.append({"pixel": pixel, "rows": int(hi - lo), "sha256": _sha256(data)})
    return Shards(writer, rec, starts, entries, nside)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
