"""What an event may make a worker open, and what one file may make it spend.

:func:`resolve_input`: the regular file an event's URI names (a ``file://`` URI or an
absolute path), inside the configured input roots, symbolic links resolved; anything
else is an :class:`~calibstream.errors.InputRefusedError`. A path is first judged by its
text alone, so the reason a path outside the roots is refused is the same whether or not
it exists (nothing outside the roots is looked at, but where a link inside them leads).

:func:`declared_hdus` and :func:`check_declared`: the file's headers, read from the raw
cards before astropy parses anything and before any plane is read (the HDUs, the cards
of each header, ``NAXISn``/``ZNAXISn``, the PSF's ``FWHM``), against ``[limits]``
(:class:`~calibstream.config_bounds.LimitsConfig`): over one is a
:class:`~calibstream.errors.ResourceLimitError` naming the limit and the value. A file
that is not FITS or is cut short is left to the reader, which says so in its own words.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from astropy.io import fits

from calibstream.config_bounds import LimitsConfig
from calibstream.errors import InputRefusedError, MissingFileError, ResourceLimitError

BLOCK = 2880  # bytes of a FITS block
CARD = 80
#: The memory estimate (measured: the detect stage peaks at ~118 MB of imports plus
#: 52 bytes per pixel from 1024² to 4096², README), with margin.
MEMORY_BASE_BYTES = 160 * 2**20
MEMORY_BYTES_PER_PIXEL = 64
PLANES = ("IMAGE", "MASK", "VARIANCE")
TABLES = ("APCORR", "ICSRC")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_AXIS = re.compile(r"^Z?NAXIS\d{1,3}$")
_KEYS = {"SIMPLE", "XTENSION", "EXTNAME", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT"}
_KEYS |= {"ZIMAGE", "ZNAXIS", "FWHM"}


# ---------------------------------------------------------------- where


def resolve_input(uri: str, roots: Sequence[str | os.PathLike[str]] | None) -> Path:
    """The regular file ``uri`` names, symbolic links resolved, inside one of ``roots``
    (None: anywhere); else an InputRefusedError (a MissingFileError inside the roots)."""
    path = _local_path(uri)
    if roots is not None:
        given = [Path(os.path.abspath(root)) for root in roots]
        real_roots = [Path(root).resolve() for root in roots]
        if not _inside(path, given + real_roots):  # judged by its text alone
            raise _refused(uri, "outside [stream] input_roots")
    try:
        real = path.resolve()
        if roots is not None and not _inside(real, real_roots):
            raise _refused(uri, "outside [stream] input_roots")
        mode = real.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise MissingFileError(f"no such file: {path}", where=path.name) from None
    except RuntimeError:  # Python 3.11's word for a loop of links
        raise _refused(uri, "a loop of symbolic links") from None
    except OSError as exc:  # a name too long, a loop: the event's; EACCES, EIO: the machine's
        if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP):
            raise _refused(uri, f"unusable path ({os.strerror(exc.errno)})") from None
        raise
    if not stat.S_ISREG(mode):
        raise _refused(uri, "not a regular file")
    return real


def _local_path(uri: str) -> Path:
    """The absolute path a ``file://`` URI or a plain path names, judged by its text."""
    if not isinstance(uri, str) or not uri:
        raise _refused(str(uri), "no path")
    scheme = _SCHEME.match(uri)
    text = uri
    if scheme and scheme.group(1).lower() == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise _refused(uri, "a file:// URI must name a local path (no host, query, fragment)")
        text = unquote(parts.path)
    elif scheme:
        reason = f"URI scheme {scheme.group(1)!r} not accepted (file:// URIs and absolute paths)"
        raise _refused(uri, reason)
    if "\x00" in text:
        raise _refused(uri, "a NUL character in the path")
    if not text.startswith("/"):
        raise _refused(uri, "not an absolute path")
    if ".." in PurePosixPath(text).parts:
        raise _refused(uri, "'..' in the path")
    return Path(text)


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _refused(uri: str, why: str) -> InputRefusedError:
    """The refusal: ``why`` alone (the event carries its URI), so that it says the same of a
    path that exists and of one that does not."""
    return InputRefusedError(f"input refused: {why}", where="uri")


# ---------------------------------------------------------------- how big


@dataclass(frozen=True)
class DeclaredHdu:
    """What one HDU's header declares, from its raw cards (no data read)."""

    index: int
    name: str  # EXTNAME, upper-cased ("" if none)
    cards: int
    end: int  # file offset just past its (padded) data
    keys: dict[str, Any] = field(default_factory=dict)  # the few keys read
    data_bytes: int = 0  # stored: |BITPIX|/8 x GCOUNT x (PCOUNT + prod NAXISn)

    @property
    def axes(self) -> tuple[int, ...] | None:
        """The image's axes in FITS order (NAXIS1, NAXIS2, ...; of a tile-compressed image its
        ZNAXISn), or None when the header does not say them plainly."""
        prefix = "ZNAXIS" if self.keys.get("ZIMAGE") is True else "NAXIS"
        return _axes(self.keys, prefix)

    @property
    def compressed(self) -> bool:
        return self.keys.get("ZIMAGE") is True


def declared_hdus(
    path: str | os.PathLike[str], limits: LimitsConfig, *, first_only: bool = False
) -> list[DeclaredHdu]:
    """Every HDU's header as declared, up to the first that is not plain FITS or is cut
    short (the reader reports those); over ``max_hdus`` or ``max_header_cards``: an error."""
    found: list[DeclaredHdu] = []
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        offset = 0
        while offset < size and not (first_only and found):
            if len(found) >= limits.max_hdus:
                _over(f"HDU {len(found)}", f"more than {limits.max_hdus} HDUs", "max_hdus", limits)
            hdu = _read_header(handle, offset, len(found), limits)
            if hdu is None:
                break
            found.append(hdu)
            offset = hdu.end
    return found


def _read_header(handle, offset: int, index: int, limits: LimitsConfig) -> DeclaredHdu | None:
    """The header starting at ``offset``; None if it is not one or ends before its END card."""
    handle.seek(offset)
    keys: dict[str, Any] = {}
    cards = blocks = 0
    while True:
        block = handle.read(BLOCK)
        blocks += 1
        if len(block) < BLOCK:
            return None
        if blocks == 1 and not block.startswith(b"XTENSION" if index else b"SIMPLE  "):
            return None
        for start in range(0, BLOCK, CARD):
            card = block[start : start + CARD]
            key = card[:8].decode("ascii", "replace").rstrip()
            if key == "END":
                return _declared(index, keys, cards, offset + blocks * BLOCK)
            cards += 1
            if cards > limits.max_header_cards:
                where = f"HDU {index}"
                what = f"{where}'s header has more than {limits.max_header_cards:,} cards"
                _over(where, what, "max_header_cards", limits)
            if key in _KEYS or _AXIS.match(key):
                keys[key] = _value(card)


def _declared(index: int, keys: dict[str, Any], cards: int, data_start: int) -> DeclaredHdu | None:
    """The HDU whose header ``keys`` were read, with where its data ends."""
    bitpix, pcount, gcount = keys.get("BITPIX"), keys.get("PCOUNT", 0), keys.get("GCOUNT", 1)
    axes = _axes(keys, "NAXIS")
    if bitpix not in (8, 16, 32, 64, -32, -64) or axes is None:
        return None
    if not (_count(pcount) and _count(gcount)):
        return None
    data_bytes = abs(bitpix) // 8 * gcount * (pcount + (math.prod(axes) if axes else 0))
    end = data_start + -(-data_bytes // BLOCK) * BLOCK
    name = str(keys.get("EXTNAME") or "").strip().upper() if index else ""
    return DeclaredHdu(index, name, cards, end, keys, data_bytes)


def _axes(keys: dict[str, Any], prefix: str) -> tuple[int, ...] | None:
    naxis = keys.get(prefix)
    if not (_count(naxis) and naxis <= 999):
        return None
    axes = tuple(keys.get(f"{prefix}{i}") for i in range(1, naxis + 1))
    return axes if all(_count(a) for a in axes) else None  # type: ignore[return-value]


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _value(card: bytes) -> Any:
    try:
        return fits.Card.fromstring(card.decode("ascii")).value
    except Exception:  # a card astropy cannot parse: the reader will say so
        return None


def check_declared(hdus: Sequence[DeclaredHdu], limits: LimitsConfig) -> None:
    """The declared planes, PSF and tables within ``limits``, and the memory the exposure is
    estimated to need (:func:`estimated_memory`) within ``max_memory_bytes``."""
    named: dict[str, DeclaredHdu] = {}
    for hdu in hdus[1:]:
        named.setdefault(hdu.name, hdu)
    pixels = stored = 0
    for name in PLANES:
        axes = named[name].axes if name in named else None
        if axes is None:
            continue
        n = math.prod(axes)
        if n > limits.max_image_pixels:
            what = f"{name} declares {_shape(axes)} = {n:,} pixels"
            _over(name, what, "max_image_pixels", limits)
        pixels = max(pixels, n)
        stored += named[name].data_bytes if named[name].compressed else 0
    _check_psf(named.get("PSF"), limits)
    for name in TABLES:
        if name in named and named[name].data_bytes > limits.max_table_bytes:
            what = f"{name} declares {named[name].data_bytes:,} bytes"
            _over(name, what, "max_table_bytes", limits)
    memory = estimated_memory(pixels, stored)
    if memory > limits.max_memory_bytes:
        what = f"an exposure of {pixels:,} pixels is estimated to need {memory:,} bytes"
        _over("IMAGE", what, "max_memory_bytes", limits)


def _check_psf(psf: DeclaredHdu | None, limits: LimitsConfig) -> None:
    if psf is None:
        return
    axes = psf.axes
    if axes is not None and any(side > limits.max_psf_size for side in axes):
        _over("PSF", f"PSF image declares {_shape(axes)} pixels", "max_psf_size", limits)
    fwhm = psf.keys.get("FWHM")
    number = isinstance(fwhm, int | float) and not isinstance(fwhm, bool)
    if number and fwhm > limits.max_psf_fwhm:
        _over("FWHM", f"PSF FWHM = {fwhm:g} pixels", "max_psf_fwhm", limits)


def estimated_memory(pixels: int, compressed_bytes: int = 0) -> int:
    """Bytes one exposure of ``pixels`` per plane is estimated to take to detect and measure."""
    return MEMORY_BASE_BYTES + MEMORY_BYTES_PER_PIXEL * pixels + compressed_bytes


def _shape(axes: tuple[int, ...]) -> str:
    return " x ".join(str(a) for a in axes)


def _over(where: str, what: str, limit: str, limits: LimitsConfig) -> None:
    value = getattr(limits, limit)
    raise ResourceLimitError(f"{what}, over [limits] {limit} = {value:,}", where=where)
