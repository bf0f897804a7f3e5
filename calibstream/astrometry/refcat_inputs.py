"""Reference-catalog inputs: read one flat table, validate it against the contract.

Inputs follow shared/contracts/reference-catalog.md (FITS, Parquet, CSV or
ECSV). Column names are matched case-insensitively (FITS names are), units
are checked where the file carries them, and every violation is a
:class:`~calibstream.errors.RefcatError` whose ``where`` is
``<file name>:<column>``. :func:`load_input` is the whole of it; the store's
column model is :mod:`calibstream.astrometry.refcat_store`'s.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy import units as u

from calibstream.astrometry.refcat_formats import CONTRACT_UNITS, Raw, detect_form, to_contract
from calibstream.astrometry.refcat_store import PM_COLUMNS, REQUIRED_COLUMNS, column_kind
from calibstream.errors import RefcatError

_MAG_UNIT_STRINGS = {"mag", "abmag", "magab", "mag(ab)", "ab mag"}
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


def load_input(path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """One input file's contract columns as int64/float64 arrays, and the names ignored."""
    return _validate(path, _read_input(path))


def load_catalog(
    path: Path, form: str | None = None
) -> tuple[dict[str, np.ndarray], list[str], str]:
    """One input file in any of the forms (:mod:`.refcat_formats`; ``form`` None: told by
    its columns) as the contract's columns, the names ignored, and the form."""
    return validate_raw(path, _read_input(path), form)


def validate_raw(
    path: Path, raw: Raw, form: str | None = None
) -> tuple[dict[str, np.ndarray], list[str], str]:
    """``raw`` (read from ``path``) converted from its form and validated."""
    found = form or detect_form(raw.values, path.name)
    return (*_validate(path, to_contract(raw, found, path.name)), found)


# --------------------------------------------------------------------------- reading inputs


_Raw = Raw  # one input table as plain arrays, names lower-cased, before validation


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
        if data.ndim != 1:  # e.g. the stack's packed flags: unusable, named if needed
            data, mask = _not_scalar(len(table)), None
        values[key] = np.asarray(data)
        units[key] = None if col.unit is None else col.unit.to_string()
        nulls[key] = mask
    return _Raw(values, units, nulls, len(table))


def _read_arrow(path: Path, fmt: str) -> _Raw:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pq.read_table(path) if fmt == "parquet" else pacsv.read_csv(path)
    return raw_from_arrow(table, path)


def raw_from_arrow(table, path: Path) -> Raw:
    """An Arrow table's scalar columns as a :class:`Raw` (units from its metadata)."""
    import pyarrow as pa

    units = _arrow_units(table.schema)
    values, nulls, out_units = {}, {}, {}
    for name in table.column_names:
        key = _lower(path, name, values)
        column = table.column(name)
        mask = None
        if pa.types.is_nested(column.type):
            values[key] = _not_scalar(table.num_rows)
        else:
            if column.null_count:
                mask = column.is_null().to_numpy(zero_copy_only=False)
            values[key] = column.to_numpy()
        out_units[key] = units.get(name)
        nulls[key] = mask
    return _Raw(values, out_units, nulls, table.num_rows)


def _not_scalar(rows: int) -> np.ndarray:
    """What stands for a column that is not one number per row: a contract column like that
    is refused as not numeric (dtype object); any other is ignored."""
    return np.full(rows, None, dtype=object)


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
    expected = CONTRACT_UNITS.get(name)
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
    has_pm = _check_required(path, names)
    kept, ignored = _contract_columns(path, names)
    out = {name: _column_values(path, name, raw) for name in kept}
    _check_positions(path, out["id"], out["ra"], out["dec"])
    out["ra"] = _wrapped_ra(out["ra"])
    if has_pm:
        _check_epochs(path, out["pmra"], out["pmdec"], out["epoch"])
    check_unique(out["id"], f"{path.name}:id")
    return out, ignored


def _check_required(path: Path, names: set[str]) -> bool:
    """The required columns, and both proper motions with an epoch if either is given."""
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
    return bool(has_pm)


def _contract_columns(path: Path, names: set[str]) -> tuple[list[str], list[str]]:
    """The columns the contract knows (sorted) and the others; a mag_err needs its mag."""
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
    return kept, ignored


def _column_values(path: Path, name: str, raw: _Raw) -> np.ndarray:
    """One contract column, unit checked: int64 ids, else float64 with NaN where missing."""
    where = f"{path.name}:{name}"
    _check_unit(path, name, raw.units.get(name))
    data, nulls = raw.values[name], raw.nulls.get(name)
    if name == "id":
        return _ids(path, data, nulls)
    if data.dtype.kind not in "biuf":
        raise RefcatError(f"column {name!r} is not numeric (dtype {data.dtype})", where=where)
    values = np.asarray(data, dtype=np.float64)
    missing = np.isnan(values)
    if nulls is not None:
        missing |= nulls
    if missing.any():
        values = values.copy()
        values[missing] = np.nan  # one NaN bit pattern, whatever the input wrote
    return values


def _check_positions(path: Path, ids: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> None:
    """Every row needs a finite position, with dec in [-90, 90]."""
    for name, values in (("ra", ra), ("dec", dec)):
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.argmax(bad))
            raise RefcatError(
                f"column {name!r} has {int(bad.sum())} missing or non-finite values "
                f"(first at row {first} counting from 0, id {int(ids[first])})",
                where=f"{path.name}:{name}",
            )
    outside = np.abs(dec) > 90.0
    if outside.any():
        raise RefcatError(
            f"column 'dec' has {int(outside.sum())} values outside [-90, 90] "
            f"(first at row {int(np.argmax(outside))})",
            where=f"{path.name}:dec",
        )


def _wrapped_ra(ra: np.ndarray) -> np.ndarray:
    """Right ascensions folded into [0, 360)."""
    ra = np.mod(ra, 360.0)
    ra[ra >= 360.0] = 0.0  # -1e-17 % 360 rounds to 360
    return ra


def _check_epochs(path: Path, pmra: np.ndarray, pmdec: np.ndarray, epoch: np.ndarray) -> None:
    """A row with a non-zero proper motion needs a finite epoch."""
    moving = np.isfinite(pmra) & np.isfinite(pmdec) & ((pmra != 0) | (pmdec != 0))
    bad = moving & ~np.isfinite(epoch)
    if bad.any():
        raise RefcatError(
            f"column 'epoch' is missing or non-finite for {int(bad.sum())} rows with a "
            f"proper motion (first at row {int(np.argmax(bad))})",
            where=f"{path.name}:epoch",
        )


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


def check_unique(ids: np.ndarray, where: str, origins: list[str] | None = None) -> None:
    """Ids must be unique; the error names the files of a duplicate when ``origins`` are given."""
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
