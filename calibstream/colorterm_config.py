"""Colour terms as configuration: one term, the defaults, and ``[colorterms]`` split into
the default library's bands and the libraries named per reference catalogue (their use:
:mod:`calibstream.colorterms`). Below :mod:`calibstream.config`, which builds them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from calibstream.errors import ConfigError


@dataclass(frozen=True)
class ColorTerm:
    """Reference to instrument magnitude: m = p + c0 + c1 (p - s) + c2 (p - s)², p/s = bands."""

    primary: str
    secondary: str
    c0: float = 0.0
    c1: float = 0.0
    c2: float = 0.0

    def __post_init__(self) -> None:
        for name in ("primary", "secondary"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError("must be a band name (a string)", where=f"colorterms.{name}")
        for name in ("c0", "c1", "c2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"must be a number, got {value!r}", where=f"colorterms.{name}")
            object.__setattr__(self, name, float(value))

    @property
    def coefficients(self) -> tuple[float, float, float]:
        return (self.c0, self.c1, self.c2)


#: Colour terms per instrument band against a PS1-like catalog. Identity
#: except r, which is the simulated camera's (``simulate.config.SimConfig.colorterm``);
#: set ``[colorterms.<band>]`` for a real instrument.
DEFAULT_COLORTERMS: Mapping[str, ColorTerm] = MappingProxyType(
    {
        "g": ColorTerm("g", "r"),
        "r": ColorTerm("r", "i", c1=0.04),
        "i": ColorTerm("i", "z"),
        "z": ColorTerm("z", "i"),
    }
)


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
