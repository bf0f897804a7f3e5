"""Configuration values checked against their dataclass field's type when loaded.

A TOML value of the wrong type would otherwise pass until the science trips on it seconds
later (``threshold = "five"``: a TypeError deep in detection); here it is a
:class:`ConfigError` naming the key, the type expected and the value::

    config: [detection] threshold: expected a number, got 'five'
"""

from __future__ import annotations

from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

from calibstream.errors import ConfigError


class _Mismatch(Exception):
    """A value is not of the type asked for; the argument says what was expected."""


def checked(value: Any, hint: Any, table: str, key: str) -> Any:
    """``value`` if it has the type ``hint`` (lists become tuples), else a ConfigError naming
    ``[table] key``, the type expected and the value: int, float (an int too), bool (not an
    int), str, a Literal's choices, tuples of these, and ``X | None``; other types pass."""
    try:
        return _check(value, hint)
    except _Mismatch as exc:
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        label = f"[{table}] {key}" if table else key
        raise ConfigError(f"{label}: expected {exc}, got {shown}", where="config") from None


def _check(value: Any, hint: Any) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        if value is None and NoneType in args:
            return None
        options = [a for a in args if a is not NoneType]
        for option in options:
            try:
                return _check(value, option)
            except _Mismatch:
                continue
        raise _Mismatch(" or ".join(_describe(a) for a in options))
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Mismatch(_describe(hint))
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Mismatch(_describe(hint))
        try:
            return tuple(_check(v, args[0]) for v in value)
        except _Mismatch:
            raise _Mismatch(_describe(hint)) from None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    ok = {
        bool: isinstance(value, bool),
        int: number and isinstance(value, int),
        float: number,
        str: isinstance(value, str),
    }.get(hint, True)
    if not ok:
        raise _Mismatch(_describe(hint))
    return value


#: What a value of each scalar type is called in a message: one, and several.
_NAMES = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "booleans"),
    str: ("a string", "strings"),
}


def _describe(hint: Any, plural: bool = False) -> str:
    """``a number``, ``a list of strings``, ``one of 'psf', 'kernel'``, ... (or plural)."""
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if get_origin(hint) is tuple:
        inner = _describe(get_args(hint)[0], plural=True)
        return f"lists of {inner}" if plural else f"a list of {inner}"
    one, several = _NAMES.get(hint, (str(hint), str(hint)))
    return several if plural else one
