"""Ingest: validated input tables → one HEALPix-sharded store, replaced atomically.

The store's layout is :mod:`calibstream.astrometry.refcat_store`'s; the
input rules are :mod:`calibstream.astrometry.refcat_inputs`'. An ingest
writes a fresh shard folder beside the live one (``.ingest-*``), renames it
into place, then replaces ``manifest.json`` atomically: a killed ingest leaves
the previous store intact and never a half shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy import units as u

from calibstream.astrometry.refcat_hats import is_hats, read_catalog_raw
from calibstream.astrometry.refcat_inputs import check_unique, load_catalog, validate_raw
from calibstream.astrometry.refcat_store import (
    FILL,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    ORDERING,
    IngestReport,
    Shards,
    SourceReport,
    bands_of,
    canonical_order,
    healpix,
    shard_catalog,
    store_unit,
)
from calibstream.errors import RefcatError
from calibstream.io.fitsio import atomic_write_bytes


def ingest_refcat(
    paths: Sequence[Path],
    store: Path,
    nside: int = 32,
    *,
    form: str | None = None,
    name: str | None = None,
) -> IngestReport:
    """Validate the input tables and write them as one sharded store at ``store``.

    The store holds exactly these inputs afterwards (an existing store there is
    replaced, atomically). Several files make one catalog: their columns are
    united (a column a file lacks is NaN for its rows, proper motions 0) and
    ids must be unique across all of them. ``form``: ``contract``, ``gaia-dr3``,
    ``lsst`` (:mod:`.refcat_formats`) or ``hats`` (every input a HATS catalogue, its
    columns told by their names); None: each input's told by its columns. A folder is a
    HATS catalogue, or else stands for the FITS, Parquet and CSV files in it (an LSST
    HTM refcat: one file per trixel). ``name``: the store's name (colour terms are keyed
    by it); None: the store folder's name.
    """
    start = time.perf_counter()
    hp = healpix(nside)
    store = Path(store)
    paths = [Path(p) for p in paths]
    if not paths:
        raise RefcatError("no input files given", where=str(store))
    merged, present, sources = _read_inputs(paths, form)
    pixels = hp.lonlat_to_healpix(merged["ra"] * u.deg, merged["dec"] * u.deg).astype(np.int64)
    shards = shard_catalog(merged, present, pixels, nside)  # pass 1: every shard's hash
    units = {c: store_unit(c) for c in present}
    shard_dir = _shard_dir_name(nside, present, units, shards.entries)

    # Pass 2, unless the same shards are live already: write them beside, then rename.
    store.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(store, keep=None, prefixes=(".ingest-", ".trash-"))
    if not (store / shard_dir).is_dir():
        _write_shard_dir(shards, store, shard_dir)
    n_rows = int(shards.records.size)
    manifest = _manifest(nside, shard_dir, present, units, n_rows, sources, shards.entries)
    if name:  # else the store is named by its folder (the same bytes wherever it is)
        manifest["name"] = name
    atomic_write_bytes((json.dumps(manifest, indent=1) + "\n").encode(), store / MANIFEST)
    _remove_leftovers(store, keep=shard_dir, prefixes=("shards-",))
    return IngestReport(
        store=store,
        manifest=store / MANIFEST,
        shard_dir=shard_dir,
        nside=nside,
        rows=n_rows,
        shards=len(shards.entries),
        columns=tuple(present),
        bands=tuple(bands_of(present)),
        sources=tuple(sources),
        seconds=time.perf_counter() - start,
        name=name or store.resolve().name,
    )


def _read_inputs(
    paths: list[Path], form: str | None = None
) -> tuple[dict[str, np.ndarray], list[str], list[SourceReport]]:
    """The inputs validated and merged into one table, its columns in order, and their reports."""
    tables, sources, origins = [], [], []
    for path in expand_inputs(paths, form):
        if is_hats(path):
            raw, found, catalog = read_catalog_raw(path, None if form == "hats" else form)
            columns, ignored, found = validate_raw(Path(path.name), raw, found)
            found, digest = f"hats:{found}", _sha256_tree(catalog.root)
        else:
            columns, ignored, found = load_catalog(path, form)
            digest = _sha256_file(path)
        tables.append(columns)
        sources.append(SourceReport(path, len(columns["id"]), digest, tuple(ignored), found))
        origins.append(path.name)
    present = canonical_order(set().union(*(t.keys() for t in tables)))
    merged = _merge(tables, present)
    if len(tables) > 1:
        file_of = np.repeat(np.arange(len(tables)), [len(t["id"]) for t in tables])
        _check_unique_across(merged["id"], file_of, origins)
    return merged, present, sources


#: What a folder that is not a HATS catalogue stands for: the tables in it.
_TABLES = ("*.fits", "*.fits.gz", "*.fit", "*.parquet", "*.csv", "*.csv.gz", "*.ecsv")


def expand_inputs(paths: list[Path], form: str | None = None) -> list[Path]:
    """The inputs, a folder that is not a HATS catalogue replaced by the tables under it
    (sorted); ``form`` ``hats``: every input must be a HATS catalogue."""
    out = []
    for path in paths:
        if form == "hats" and not is_hats(path):
            raise RefcatError(
                "not a HATS catalogue (no properties, partition_info.csv or "
                "dataset/Norder=*/Dir=*/Npix=*)",
                where=str(path),
            )
        if path.is_dir() and not is_hats(path):
            found = sorted({p for pattern in _TABLES for p in path.rglob(pattern)})
            if not found:
                raise RefcatError("a folder with no FITS, Parquet or CSV tables", where=str(path))
            out += found
        else:
            out.append(path)
    return out


def _sha256_tree(root: Path) -> str:
    """A digest of a catalogue folder: its files' names, sizes and modification times."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _shard_dir_name(
    nside: int, present: list[str], units: dict[str, str], entries: list[dict]
) -> str:
    """The shard folder's name: a digest of nside, columns, units and every shard's sha256."""
    digest = hashlib.sha256(
        json.dumps([nside, ORDERING, present, units, entries], sort_keys=True).encode()
    ).hexdigest()[:16]
    return f"shards-{digest}"


def _write_shard_dir(shards: Shards, store: Path, shard_dir: str) -> None:
    """Write every shard into a fresh folder beside the live ones, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(dir=store, prefix=".ingest-"))
    try:
        for name, data in shards.files():
            (tmp / name).write_bytes(data)
        os.sync()  # all shards on disk before the folder goes live (one call, not per file)
        os.rename(tmp, store / shard_dir)
        _fsync_dir(store)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _manifest(
    nside: int,
    shard_dir: str,
    present: list[str],
    units: dict[str, str],
    n_rows: int,
    sources: list[SourceReport],
    entries: list[dict],
) -> dict:
    """The store's commit point: what it holds, where, and from which inputs."""
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "nside": nside,
        "ordering": ORDERING,
        "frame": "icrs",
        "shard_dir": shard_dir,
        "columns": present,
        "units": units,
        "bands": bands_of(present),
        "rows": n_rows,
        "sources": [
            {
                "path": str(s.path.resolve()),
                "rows": s.rows,
                "sha256": s.sha256,
                "ignored_columns": list(s.ignored_columns),
                "form": s.form,
            }
            for s in sources
        ],
        "shards": entries,
    }


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
    """Ids unique across the files; the error names a duplicate's files (built lazily if big)."""
    origins = [names[i] for i in file_of] if ids.size < 1000 else None
    try:
        check_unique(ids, "id", origins)
    except RefcatError:
        if origins is not None:
            raise
        origins = [names[i] for i in file_of]  # slow path only to name the files
        check_unique(ids, "id", origins)


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
    """Make a rename within ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    """A file's sha256, read in 1 MiB blocks (inputs may be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
