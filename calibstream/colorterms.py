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
from :data:`calibstream.colorterm_config.DEFAULT_COLORTERMS`). A library named gives its
bands in full (primary and secondary); a band it lacks has no colour term against that
catalogue.

Under ``[colorterms]`` a table whose values are all tables is a library; one whose values
are not tables is a band's colour term; a mix is an error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from calibstream.colorterm_config import ColorTerm
from calibstream.config import Config
from calibstream.errors import CalibrationError


def library_for(config: Config, refcat: str) -> tuple[str, Mapping[str, ColorTerm]]:
    """The library for catalogue ``refcat``, and its key (``""``: the default library)."""
    libraries = config.colorterm_libraries
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
