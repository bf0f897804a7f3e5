"""HATS catalogues (HEALPix-partitioned Parquet), read by their layout with pyarrow.

The layout (IVOA note "HATS", as LSDB serves Gaia DR3 and Rubin's data previews)::

    <catalog>/properties                       obs_collection, dataproduct_type,
                                               hats_col_ra, hats_col_dec, hats_npix_suffix…
    <catalog>/partition_info.csv               Norder,Npix of every partition
    <catalog>/dataset/Norder=K/Dir=D/Npix=P.parquet
                                               the rows of nested HEALPix pixel P at order K
                                               (D = P // 10000 * 10000), with ``_healpix_29``
    <catalog>/dataset/_common_metadata         the schema (optional here)

or a collection (``collection.properties`` naming the primary catalogue in
``hats_primary_table_url``). Partitions come from ``partition_info.csv`` when present, else
from the ``Norder=/Dir=/Npix=`` files themselves. The ``hats`` package is not needed to read
one (it brings pandas, numba and dask-free but heavy dependencies); the tests check that
what is written here by the spec is a catalogue ``hats`` itself reads and validates.

A catalogue is both an input of ``ingest-refcat`` (:func:`read_catalog_raw`: every
partition) and a store read in place (:func:`load_columns`): only the partitions whose
pixel overlaps the circle (at the partition's own order, by the same exact test as the
store's shards) are read, and of them only the columns the catalogue's form needs. Why
those: each row lives in exactly one partition, so every row within the circle is in a
partition overlapping it, and nothing else need be touched (the margin caches are for
cross-matching pairs across boundaries, not needed here). A partition's bytes go through
the shard cache under a key made of the file's path, size and mtime, each value carrying
its SHA-256 (a corrupt value is read again from the file).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibstream.astrometry.refcat_formats import Raw, detect_form, wanted_columns
from calibstream.astrometry.refcat_inputs import raw_from_arrow, validate_raw
from calibstream.astrometry.sky_cover import angular_separation, shards_overlapping
from calibstream.errors import RefcatError

CACHE_PREFIX = "calibstream:hats:"
_NPIX = re.compile(r"^Norder=(\d+)/Dir=(\d+)/Npix=(\d+)")


@dataclass(frozen=True)
class Partition:
    order: int
    pixel: int
    path: Path  # a Parquet file, or a folder of them (hats_npix_suffix = "/")


@dataclass(frozen=True)
class HatsCatalog:
    root: Path  # the catalogue folder (a collection's primary catalogue)
    name: str  # obs_collection, else the folder's name
    properties: dict[str, str]
    partitions: tuple[Partition, ...]


def is_hats(path: Path) -> bool:
    """Whether ``path`` is a HATS catalogue or collection folder."""
    path = Path(path)
    if not path.is_dir():
        return False
    if (path / "properties").is_file() or (path / "collection.properties").is_file():
        return True
    return (path / "partition_info.csv").is_file() or any((path / "dataset").glob("Norder=*"))


def read_properties(path: Path) -> dict[str, str]:
    """A Java-style properties file as a dict (``key = value`` lines, ``#`` comments)."""
    props = {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise RefcatError(f"cannot read HATS properties ({exc})", where=str(path)) from exc
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        props[key.strip()] = value.strip()
    return props


_CATALOGS: dict[str, tuple[tuple, HatsCatalog]] = {}


def open_catalog(path: Path) -> HatsCatalog:
    """The catalogue at ``path`` (a collection: its primary catalogue), kept per version."""
    root = Path(path)
    if (root / "collection.properties").is_file():
        primary = read_properties(root / "collection.properties").get("hats_primary_table_url")
        if not primary:
            raise RefcatError("collection names no hats_primary_table_url", where=str(root))
        root = root / primary
    marks = [root / n for n in ("properties", "partition_info.csv", "dataset")]
    key = tuple((m.stat().st_mtime_ns, m.stat().st_size) if m.exists() else None for m in marks)
    cached = _CATALOGS.get(str(root))
    if cached is not None and cached[0] == key:
        return cached[1]
    props = read_properties(root / "properties") if (root / "properties").is_file() else {}
    catalog = HatsCatalog(
        root=root,
        name=props.get("obs_collection") or root.name,
        properties=props,
        partitions=tuple(_partitions(root, props)),
    )
    if len(_CATALOGS) > 16:
        _CATALOGS.clear()
    _CATALOGS[str(root)] = (key, catalog)
    return catalog


def _partitions(root: Path, props: dict[str, str]) -> list[Partition]:
    suffix = props.get("hats_npix_suffix", ".parquet")
    dataset = root / "dataset" if (root / "dataset").is_dir() else root
    info = root / "partition_info.csv"
    pairs: list[tuple[int, int]] = []
    if info.is_file():
        lines = [line.split(",") for line in info.read_text().split()]
        if not lines or "Norder" not in lines[0] or "Npix" not in lines[0]:
            raise RefcatError("partition_info.csv has no Norder,Npix header", where=str(info))
        i, j = lines[0].index("Norder"), lines[0].index("Npix")
        pairs = [(int(row[i]), int(row[j])) for row in lines[1:]]
    else:
        for path in dataset.glob("Norder=*/Dir=*/Npix=*"):
            match = _NPIX.match(path.relative_to(dataset).as_posix())
            if match:
                pairs.append((int(match.group(1)), int(match.group(3))))
    if not pairs:
        raise RefcatError("a HATS catalogue without partitions", where=str(root))
    name = "Npix={}" + ("" if suffix == "/" else suffix)
    return [
        Partition(k, p, dataset / f"Norder={k}" / f"Dir={p // 10000 * 10000}" / name.format(p))
        for k, p in sorted(set(pairs))
    ]


def _files(partition: Partition) -> list[Path]:
    if partition.path.is_dir():
        return sorted(partition.path.glob("*.parquet"))
    return [partition.path]


def _schema_names(catalog: HatsCatalog) -> list[str]:
    """The catalogue's column names: from ``_common_metadata``, else its first partition."""
    import pyarrow.parquet as pq

    common = catalog.root / "dataset" / "_common_metadata"
    source = common if common.is_file() else _files(catalog.partitions[0])[0]
    try:
        return list(pq.read_schema(source).names)
    except Exception as exc:
        raise RefcatError(f"unreadable Parquet schema ({exc})", where=str(source)) from exc


def catalog_form(catalog: HatsCatalog, form: str | None) -> tuple[str, list[str]]:
    """The form of the catalogue's columns (told by them when None), and the ones to read."""
    names = _schema_names(catalog)
    found = form or detect_form([n.lower() for n in names], catalog.root.name)
    return found, wanted_columns(names, found)


def read_catalog_raw(path: Path, form: str | None = None) -> tuple[Raw, str, HatsCatalog]:
    """Every partition of the catalogue at ``path`` (its form's columns), for an ingest."""
    catalog = open_catalog(path)
    found, columns = catalog_form(catalog, form)
    reader = _Reader(None, columns)
    tables = [reader.table(f) for p in catalog.partitions for f in _files(p)]
    return _raw(tables, columns, catalog), found, catalog


def _raw(tables: list, columns: list[str], catalog: HatsCatalog) -> Raw:
    import pyarrow as pa

    if tables:
        table = pa.concat_tables(tables, promote_options="permissive")
    else:
        table = pa.table({c: pa.array([], pa.float64()) for c in columns})
    return raw_from_arrow(table, catalog.root)


@dataclass
class _Reader:
    """Partition files read through the shard cache (None: straight from the files)."""

    cache: object | None
    columns: list[str]
    hits: int = 0
    misses: int = 0
    errors: int = 0

    def table(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.read_table(pa.BufferReader(self.data(path)), columns=self.columns)
        except OSError as exc:
            raise RefcatError(f"unreadable HATS partition ({exc})", where=str(path)) from exc

    def data(self, path: Path) -> bytes:
        if self.cache is None:
            return path.read_bytes()
        stat = path.stat()
        ident = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
        key = CACHE_PREFIX + hashlib.sha256(ident).hexdigest()
        value = self._call(lambda: self.cache.get(key))
        if value is not None:
            value = bytes(value)
            if hashlib.sha256(value[32:]).digest() == value[:32]:
                self.hits += 1
                return value[32:]
            self.errors += 1
        self.misses += 1
        data = path.read_bytes()
        self._call(lambda: self.cache.set(key, hashlib.sha256(data).digest() + data))
        return data

    def _call(self, action: Callable):
        try:
            return action()
        except Exception:
            self.errors += 1
            self.cache = None  # a failing cache is not asked again during this load
            return None


def load_columns(
    store: Path, ra: float, dec: float, radius: float, shard_cache=None
) -> tuple[dict[str, np.ndarray], dict[str, int], str]:
    """The contract's columns of the rows within ``radius`` of (``ra``, ``dec``) of the HATS
    catalogue ``store``, read in place; the load's counts (as ``LoadStats``) and the
    catalogue's name. Rows in partition order (order, pixel), then as each file holds them."""
    catalog = open_catalog(store)
    form, columns = catalog_form(catalog, None)
    wanted = []
    for order in sorted({p.order for p in catalog.partitions}):
        here = {p.pixel: p for p in catalog.partitions if p.order == order}
        manifest = _pseudo_manifests(catalog, order, here)
        wanted += [here[pixel] for pixel in shards_overlapping(manifest, ra, dec, radius)]
    reader = _Reader(shard_cache, columns)
    tables = [reader.table(f) for p in wanted for f in _files(p)]
    if not tables:
        none = {c: np.empty(0, np.int64 if c == "id" else np.float64) for c in ("id", "ra", "dec")}
        return none, {"shards": 0}, catalog.name
    merged, _, _ = validate_raw(Path(catalog.root.name), _raw(tables, columns, catalog), form)
    rows_read = len(merged["id"])
    inside = angular_separation(merged["ra"], merged["dec"], ra, dec) <= radius
    merged = {name: values[inside] for name, values in merged.items()}
    stats = {
        "shards": len(wanted),
        "rows_read": rows_read,
        "cache_hits": reader.hits,
        "cache_misses": reader.misses if shard_cache is not None else 0,
        "cache_errors": reader.errors,
    }
    return merged, stats, catalog.name


_MANIFESTS: dict[tuple[str, int], dict] = {}


def _pseudo_manifests(catalog: HatsCatalog, order: int, pixels: dict) -> dict:
    """The partitions of one order as the store's manifest shape (kept: the overlap test
    caches its pixel outlines in it)."""
    key = (str(catalog.root), order)
    manifest = _MANIFESTS.get(key)
    if manifest is None or manifest["_catalog"] is not catalog:
        manifest = {"nside": 2**order, "_by_pixel": pixels, "_catalog": catalog}
        if len(_MANIFESTS) > 64:
            _MANIFESTS.clear()
        _MANIFESTS[key] = manifest
    return manifest
