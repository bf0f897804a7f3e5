"""Colour terms keyed by reference catalogue and band, as the LSST stack's ``ColortermLibrary``.

One configuration serves several reference catalogues::

    [colorterms.r]                 # the default library: any catalogue not named below
    primary = "r"
    secondary = "i"
    c1 = 0.04

    [colorterms.gaia_dr3.r]        # against the catalogue named gaia_dr3
    primary = "phot_g_mean"
    secondary = "phot_rp_mean"
    c1 = 0.04

    [colorterms."ps1*".r]          # a glob of names (fnmatch), as the stack's library keys

A catalogue's name is its store's (``ingest-refcat --name``, by default the store folder's
name; a HATS catalogue's ``obs_collection``), carried by
:attr:`calibstream.astrometry.refcat.RefCatalog.name`. The library for a name is the one
keyed by exactly that name, else the one glob matching it (two matching globs are an
error, as in the stack), else the default library (``[colorterms.<band>]``, which starts
from :data:`calibstream.config.DEFAULT_COLORTERMS`). A library named gives its bands in
full (primary and secondary); a band it lacks has no colour term against that catalogue.

Under ``[colorterms]`` a table whose values are all tables is a library; one whose values
are not tables is a band's colour term; a mix is an error.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from calibstream.config import ColorTerm, Config
from calibstream.errors import CalibrationError, ConfigError

#: The Config field the libraries land in (not a TOML key of its own).
FIELD = "colorterm_libraries"


def split_libraries(data: Any) -> tuple[Any, Mapping[str, Mapping[str, ColorTerm]]]:
    """``data`` (the whole TOML) without its libraries, and the libraries built."""
    if not isinstance(data, dict):
        return data, MappingProxyType({})
    if FIELD in data:
        raise ConfigError(f"unknown keys ['{FIELD}']", where="config")
    tables = data.get("colorterms")
    if not isinstance(tables, dict):
        return data, MappingProxyType({})
    bands, libraries = {}, {}
    for key, table in tables.items():
        where = f"colorterms.{key}"
        nested = [isinstance(v, dict) for v in table.values()] if isinstance(table, dict) else []
        if nested and all(nested):
            libraries[key] = _library(table, where)
        elif any(nested):
            raise ConfigError(
                f"[{where}] mixes a colour term's keys with tables: a band's term "
                "(primary, secondary, c0, c1, c2) or a catalogue's library of bands",
                where=where,
            )
        else:
            bands[key] = table
    return {**data, "colorterms": bands}, MappingProxyType(libraries)


def _library(tables: dict[str, dict], prefix: str) -> Mapping[str, ColorTerm]:
    known = {f.name for f in dataclasses.fields(ColorTerm)}
    out = {}
    for band, table in tables.items():
        where = f"{prefix}.{band}"
        unknown = set(table) - known
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)}", where=where)
        try:
            out[band] = ColorTerm(**table)
        except TypeError as exc:
            raise ConfigError(
                f"incomplete table ({exc}): a library's band gives primary and secondary",
                where=where,
            ) from exc
        except ConfigError as exc:
            field_name = (exc.where or "").rsplit(".", 1)[-1]
            raise ConfigError(exc.reason, where=f"{where}.{field_name}") from exc
    return MappingProxyType(out)


def library_for(config: Config, refcat: str) -> tuple[str, Mapping[str, ColorTerm]]:
    """The library for catalogue ``refcat``, and its key (``""``: the default library)."""
    libraries = getattr(config, FIELD, None) or {}
    if refcat in libraries:
        return refcat, libraries[refcat]
    globs = [key for key in libraries if fnmatch.fnmatchcase(refcat, key)]
    if len(globs) > 1:
        raise CalibrationError(
            f"reference catalogue {refcat!r} matches several colour-term libraries: "
            + ", ".join(f"[colorterms.{key!r}]" for key in sorted(globs)),
            where="colorterms",
        )
    if globs:
        return globs[0], libraries[globs[0]]
    return "", config.colorterms


def colorterm_for(config: Config, band: str, refcat: str = "") -> ColorTerm | None:
    """The colour term of instrument ``band`` against catalogue ``refcat``, or None."""
    return library_for(config, refcat)[1].get(band)


def required_colorterm(config: Config, band: str, refcat: str = "") -> ColorTerm:
    """As :func:`colorterm_for`, a missing one an error naming the table to give."""
    key, library = library_for(config, refcat)
    if band in library:
        return library[band]
    table = f"[colorterms.{key}.{band}]" if key else f"[colorterms.{band}]"
    against = f" against reference catalogue {refcat!r}" if refcat else ""
    raise CalibrationError(
        f"no colour term configured for band {band!r}{against} (give {table})",
        where="colorterms",
    )
