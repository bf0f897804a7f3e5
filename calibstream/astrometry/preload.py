"""Reference stars loaded while the pixels are still being measured.

As Rubin's Prompt Processing preloads the reference catalogues of the next visit, the detect
step starts :func:`start` as soon as it has an exposure's path: a thread reads the first-guess
WCS and the image's shape from the file's IMAGE header (its cards bounded by ``[limits]``
first), loads the references of the footprint (plus :data:`PAD_DEG`) through the shard
cache, so that the shared cache (Redis in the service) holds its shards for every worker,
and keeps the loaded rows in this process. The astrometric step, which runs next in the same
process (the batch command, replay, and a worker's chain), takes them from
:func:`take` instead of loading again: it waits for a preload still running, and uses it only
if its circle covers the one asked for and the store has not changed since (its manifest's,
or a HATS catalogue's, identity); the rows are then cut to the circle asked for, which gives
the very rows, in the same order, that a load of that circle gives (both read whole shards in
pixel order, then cut). A preload that fails says nothing: the step loads as before and
reports what is wrong.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibstream.astrometry.refcat import (
    RefCatalog,
    ShardCache,
    angular_separation,
    footprint_circle,
    load_refcat,
)

log = logging.getLogger("calibstream.preload")

#: Preloaded beyond the footprint and its margin, so that the fitted first guess (read again
#: from the event's cards) is covered however its last bits round.
PAD_DEG = 0.005
#: How long the astrometric step waits for a preload still running.
WAIT_S = 30.0
_KEEP = 4  # preloads kept per process (the latest ones)


@dataclass
class _Preload:
    store: str
    version: tuple
    thread: threading.Thread | None = None
    circle: tuple[float, float, float] | None = None
    refs: RefCatalog | None = None
    seconds: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


_LOCK = threading.Lock()
_PRELOADS: OrderedDict[tuple[str, str], _Preload] = OrderedDict()


def store_version(store: Path) -> tuple:
    """What changes when a store is re-ingested: its manifest's (or HATS files') identity."""
    marks = [store / n for n in ("manifest.json", "properties", "partition_info.csv")]
    return tuple(
        (m.stat().st_ino, m.stat().st_mtime_ns, m.stat().st_size) if m.exists() else None
        for m in marks
    )


def start(
    path: Path, store: Path, margin_deg: float, cache: ShardCache | None, limits=None
) -> _Preload | None:
    """Start preloading ``store``'s references for the exposure at ``path`` (a thread)."""
    try:
        store = Path(store)
        entry = _Preload(str(store.resolve()), store_version(store))
    except OSError:
        return None
    thread = threading.Thread(
        target=_run, args=(entry, Path(path), store, margin_deg, cache, limits),
        name="calibstream-preload", daemon=True,
    )  # fmt: skip
    entry.thread = thread
    with _LOCK:
        _PRELOADS[(entry.store, str(path))] = entry
        while len(_PRELOADS) > _KEEP:
            _PRELOADS.popitem(last=False)
    thread.start()
    return entry


def _run(entry: _Preload, path: Path, store: Path, margin_deg, cache, limits) -> None:
    began = time.perf_counter()
    try:
        wcs, shape = _first_guess(path, limits)
        ra, dec, radius = footprint_circle(wcs, shape, margin_deg + PAD_DEG)
        entry.refs = load_refcat(store, ra, dec, radius, shard_cache=cache)
        entry.circle = (ra, dec, radius)
    except Exception as exc:  # the detect and astrometry steps report what is wrong
        log.debug("preload of %s from %s: %s", path, store, exc)
    finally:
        entry.seconds = time.perf_counter() - began
        entry.done.set()


def _first_guess(path: Path, limits):
    """The IMAGE header's WCS and the image's (ny, nx), its cards bounded first."""
    import warnings

    from astropy.io import fits

    from calibstream.config_bounds import LimitsConfig
    from calibstream.io.exposure import _read_wcs
    from calibstream.io.inputs import declared_hdus

    declared_hdus(path, limits or LimitsConfig())
    with warnings.catch_warnings(), fits.open(path, memmap=True) as hdul:
        warnings.simplefilter("ignore")
        header = hdul["IMAGE"].header
        return _read_wcs(header), (int(header["NAXIS2"]), int(header["NAXIS1"]))


def take(store: Path, ra: float, dec: float, radius: float) -> RefCatalog | None:
    """The preloaded rows of ``store`` within the circle, if a preload covers it (waiting for
    one still running), the store unchanged since; else None."""
    try:
        key, version = str(Path(store).resolve()), store_version(Path(store))
    except OSError:
        return None
    with _LOCK:
        entries = [e for (s, _), e in reversed(_PRELOADS.items()) if s == key]
    for entry in entries:
        entry.done.wait(WAIT_S)
        if entry.refs is None or entry.circle is None or entry.version != version:
            continue
        ra0, dec0, radius0 = entry.circle
        if angular_separation(ra, dec, ra0, dec0) + radius > radius0:
            continue
        refs = entry.refs
        return refs.take(np.flatnonzero(angular_separation(refs.ra, refs.dec, ra, dec) <= radius))
    return None
