"""The column forms reference catalogues come in, recognised and converted to the contract's.

Three forms (``FORMS``), told apart by their columns (:func:`detect_form`):

- ``contract``: shared/contracts/reference-catalog.md (``id``, ``ra``, ``dec`` in deg, mas,
  mas/yr, Julian years, ``<band>_mag``).
- ``gaia-dr3``: Gaia DR3's own columns (``source_id``, ``ra``, ``dec``, ``ra_error``,
  ``dec_error`` in mas, ``pmra``, ``pmdec`` and their ``_error`` in mas/yr, ``ref_epoch`` in
  Julian years, ``phot_<g|bp|rp>_mean_mag``). The bands keep Gaia's names
  (``phot_g_mean``…); a band's error is ``phot_<x>_mean_mag_error`` when the file has it,
  else 2.5/ln 10 / ``phot_<x>_mean_flux_over_error`` (Gaia publishes no magnitude error).
- ``lsst``: the LSST stack's refcat (``id``, ``coord_ra``, ``coord_dec`` and
  ``coord_raErr``, ``coord_decErr`` in rad, ``pm_ra``, ``pm_dec`` and their ``Err`` in
  rad/yr, ``epoch`` in MJD TAI, ``<band>_flux`` and ``<band>_fluxErr`` in nJy). Bands keep
  their names (``g``, ``phot_g_mean``…); magnitudes are AB: 31.4 - 2.5 log10(flux / nJy).

cos δ: in all three the RA error and the RA proper motion are arcs on the sky (they include
cos δ: Gaia's ``ra_error`` is σα*, its ``pmra`` μα*; the stack's ``pm_ra`` is "dra/dt ·
cos(dec)" and ``coord_raErr`` grows by ``pm_raErr`` Δt), as the contract's, so converting
them is a change of unit only. A column whose file gives a unit is converted from that
unit (an incompatible one is an error naming the column); without one, the form's
documented unit is assumed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

import numpy as np
from astropy import units as u

from calibstream.astrometry.propermotion import julian_year
from calibstream.astrometry.refcat_store import column_kind
from calibstream.errors import RefcatError

FORMS = ("contract", "gaia-dr3", "lsst")
#: What each form's name means, for messages.
DESCRIPTION = {
    "contract": "the contract's columns",
    "gaia-dr3": "Gaia DR3's columns",
    "lsst": "the LSST stack's refcat columns",
}
#: The columns that tell a form (all must be present).
SIGNATURE = {
    "contract": ("id", "ra", "dec"),
    "gaia-dr3": ("source_id", "ra", "dec"),
    "lsst": ("id", "coord_ra", "coord_dec"),
}
#: Per form: source column -> (contract column, the source's unit when the file gives none).
_COLUMNS = {
    "gaia-dr3": {
        "source_id": ("id", None),
        "ra": ("ra", u.deg),
        "dec": ("dec", u.deg),
        "ra_error": ("ra_err", u.mas),
        "dec_error": ("dec_err", u.mas),
        "pmra": ("pmra", u.mas / u.yr),
        "pmdec": ("pmdec", u.mas / u.yr),
        "pmra_error": ("pmra_err", u.mas / u.yr),
        "pmdec_error": ("pmdec_err", u.mas / u.yr),
        "ref_epoch": ("epoch", u.yr),
    },
    "lsst": {
        "id": ("id", None),
        "coord_ra": ("ra", u.rad),
        "coord_dec": ("dec", u.rad),
        "coord_raerr": ("ra_err", u.rad),
        "coord_decerr": ("dec_err", u.rad),
        "pm_ra": ("pmra", u.rad / u.yr),
        "pm_dec": ("pmdec", u.rad / u.yr),
        "pm_raerr": ("pmra_err", u.rad / u.yr),
        "pm_decerr": ("pmdec_err", u.rad / u.yr),
    },
}
#: Columns that come as a pair with an epoch: (first, second, epoch), per form.
_PM = {
    "contract": ("pmra", "pmdec", "epoch"),
    "gaia-dr3": ("pmra", "pmdec", "ref_epoch"),
    "lsst": ("pm_ra", "pm_dec", "epoch"),
}
#: The unit of each of the contract's columns (what every form is converted to).
CONTRACT_UNITS = {
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
_GAIA_BAND = re.compile(r"^(phot_[a-z0-9]+_mean)_mag$")
_LSST_FLUX = re.compile(r"^([a-z0-9_]+?)_flux$")
#: 2.5 / ln 10: a magnitude's error from a flux's relative error.
MAG_PER_RELATIVE_FLUX = 2.5 / np.log(10.0)
#: The AB magnitude of 1 nJy.
AB_NJY = 31.4


@dataclasses.dataclass
class Raw:
    """One input table as plain arrays, names lower-cased, before validation."""

    values: dict[str, np.ndarray]
    units: dict[str, str | None]
    nulls: dict[str, np.ndarray | None]  # bool mask of missing values, or None
    rows: int


def detect_form(names: Iterable[str], where: str) -> str:
    """The form whose signature columns ``names`` hold; none or several is an error that
    names the columns."""
    names = set(names)
    fits = [form for form in FORMS if set(SIGNATURE[form]) <= names]
    if len(fits) == 1:
        return fits[0]
    if fits:
        listed = "; ".join(f"{f} ({', '.join(SIGNATURE[f])})" for f in fits)
        raise RefcatError(
            f"ambiguous columns: they fit {listed}; say which with --format", where=where
        )
    closest = min(FORMS, key=lambda f: len(set(SIGNATURE[f]) - names))
    missing = [c for c in SIGNATURE[closest] if c not in names]
    raise RefcatError(
        "cannot tell the catalogue's form: it has none of the column sets "
        + "; ".join(f"{f} ({', '.join(SIGNATURE[f])})" for f in FORMS)
        + f"; closest is {closest}, missing {', '.join(repr(c) for c in missing)}",
        where=f"{where}:{missing[0]}",
    )


def wanted_columns(names: Iterable[str], form: str) -> list[str]:
    """Of a table's column ``names`` (as the file spells them), those ``form``'s conversion
    uses (so a wide catalogue, e.g. Gaia's 150 columns, is read only in part)."""
    wanted = []
    for name in names:
        key = name.strip().lower()
        if form == "contract":
            use = column_kind(key)[0] != "other"
        else:
            use = key in _COLUMNS[form] or _band_source(form, key)
            use = use or (form == "lsst" and key == "epoch")
        if use:
            wanted.append(name)
    return wanted


def to_contract(raw: Raw, form: str, where: str) -> Raw:
    """``raw`` (columns of ``form``) renamed and converted to the contract's columns and
    units; columns the form does not know are kept as they are (the contract ignores them).
    Missing required columns are one error naming them all."""
    if form not in FORMS:
        raise RefcatError(f"unknown form {form!r} (one of {', '.join(FORMS)})", where=where)
    _check_present(raw, form, where)
    if form == "contract":
        return raw
    out = Raw({}, {}, {}, raw.rows)
    for source, (target, unit) in _COLUMNS[form].items():
        if source in raw.values:
            values = _converted(raw, source, target, unit, where)
            _keep(out, target, values, _unit_text(target), raw.nulls.get(source))
    if form == "lsst" and "epoch" in raw.values:
        _keep(out, "epoch", _lsst_epoch(raw, where), "yr", raw.nulls.get("epoch"))
    bands = _gaia_bands(raw) if form == "gaia-dr3" else _lsst_bands(raw, where)
    for name, values in bands.items():
        _keep(out, name, values, "mag", None)
    for name in raw.values:  # what the form does not know: the contract ignores it
        converted = name in _COLUMNS[form] or (form == "lsst" and name == "epoch")
        if not converted and not _band_source(form, name):
            _keep(out, f"{form}:{name}" if name in out.values else name, raw.values[name],
                  raw.units.get(name), raw.nulls.get(name))  # fmt: skip
    return out


def _check_present(raw: Raw, form: str, where: str) -> None:
    """The form's signature, and both proper motions with their epoch if either is given."""
    names = set(raw.values)
    missing = [c for c in SIGNATURE[form] if c not in names]
    first, second, epoch = _PM[form]
    if first in names or second in names:
        missing += [c for c in (first, second, epoch) if c not in names]
    if missing:
        raise RefcatError(
            f"{DESCRIPTION[form]} lack {', '.join(repr(c) for c in missing)}",
            where=f"{where}:{missing[0]}",
        )


def _keep(out: Raw, name: str, values, unit, nulls) -> None:
    out.values[name], out.units[name], out.nulls[name] = values, unit, nulls


def _unit_text(target: str) -> str | None:
    unit = CONTRACT_UNITS.get(target)
    return None if unit is None else unit.to_string()


def _converted(raw: Raw, source: str, target: str, default, where: str) -> np.ndarray:
    """A column in the contract's unit, converted from the file's unit (or the form's)."""
    values = raw.values[source]
    if default is None:  # the id
        return values
    if values.dtype.kind not in "biuf":
        raise RefcatError(
            f"column {source!r} is not numeric (dtype {values.dtype})", where=f"{where}:{source}"
        )
    unit = _file_unit(raw, source, default, where)
    values = np.asarray(values, dtype=np.float64)
    return (
        values
        if unit == CONTRACT_UNITS[target]
        else (values * unit).to_value(CONTRACT_UNITS[target])
    )


def _file_unit(raw: Raw, source: str, default, where: str):
    text = raw.units.get(source)
    if text is None or not str(text).strip():
        return default
    unit = u.Unit(text, parse_strict="silent")
    if isinstance(unit, u.UnrecognizedUnit) or not unit.is_equivalent(default):
        raise RefcatError(
            f"column {source!r} has unit {text!r}; expected one like {default.to_string()}",
            where=f"{where}:{source}",
        )
    return unit


def _lsst_epoch(raw: Raw, where: str) -> np.ndarray:
    """The stack's ``epoch`` (MJD TAI, or another time unit's MJD) as a Julian year."""
    unit = _file_unit(raw, "epoch", u.day, where)
    return julian_year((np.asarray(raw.values["epoch"], dtype=np.float64) * unit).to_value(u.day))


def _band_source(form: str, name: str) -> bool:
    """Whether ``name`` is a photometric column the form's bands are made from."""
    if form == "gaia-dr3":
        return name.startswith("phot_") and name.endswith(
            ("_mean_mag", "_mean_mag_error", "_mean_flux_over_error")
        )
    return name.endswith(("_flux", "_fluxerr")) and not name.startswith("coord_")


def _gaia_bands(raw: Raw) -> dict[str, np.ndarray]:
    """``<band>_mag`` and ``<band>_mag_err`` per Gaia band (``phot_g_mean``…)."""
    out = {}
    for name in sorted(raw.values):
        match = _GAIA_BAND.match(name)
        if not match:
            continue
        band = match.group(1)
        out[f"{band}_mag"] = _float(raw, name)
        if f"{band}_mag_error" in raw.values:
            out[f"{band}_mag_err"] = _float(raw, f"{band}_mag_error")
        elif f"{band}_flux_over_error" in raw.values:
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = _float(raw, f"{band}_flux_over_error")
                out[f"{band}_mag_err"] = np.where(ratio > 0, MAG_PER_RELATIVE_FLUX / ratio, np.nan)
    return out


def _lsst_bands(raw: Raw, where: str) -> dict[str, np.ndarray]:
    """``<band>_mag`` (AB) and ``<band>_mag_err`` from each ``<band>_flux`` (nJy)."""
    out = {}
    for name in sorted(raw.values):
        match = _LSST_FLUX.match(name)
        if not match or name.startswith("coord_"):
            continue
        band = match.group(1)
        flux = _flux_njy(raw, name, where)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"{band}_mag"] = np.where(flux > 0, AB_NJY - 2.5 * np.log10(flux), np.nan)
            if f"{name}err" in raw.values:
                err = _flux_njy(raw, f"{name}err", where)
                out[f"{band}_mag_err"] = np.where(
                    flux > 0, MAG_PER_RELATIVE_FLUX * err / flux, np.nan
                )
    return out


def _flux_njy(raw: Raw, name: str, where: str) -> np.ndarray:
    unit = _file_unit(raw, name, u.nJy, where)
    values = _float(raw, name)
    return values if unit == u.nJy else (values * unit).to_value(u.nJy)


def _float(raw: Raw, name: str) -> np.ndarray:
    values = np.asarray(raw.values[name], dtype=np.float64)
    nulls = raw.nulls.get(name)
    if nulls is not None and nulls.any():
        values = values.copy()
        values[nulls] = np.nan
    return values
