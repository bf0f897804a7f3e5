"""The read model from the output folders: what the sinks record, and how Redis is rebuilt.

The truth is the folders (``ROOT/exposures/<EXPID>/summary.json``), so an exposure's row is
what its folder says: the sinks record it from the summary they leave (:func:`record_folder`),
a failure that did not replace a complete folder leaves the row ok, and
:func:`rebuild_read_model` records every folder again into an emptied Redis. A row carries the
folder's ``fingerprint`` (a digest of its summary.json, which holds the whole calexp header):
the same content recorded again keeps the time and latency of its first persistence (the
record script of :mod:`streams.readmodel`).

Self-healing (:func:`heal_read_model`, every ~10 s in each worker): a ``built`` marker is set
at each rebuild; when it is absent (Redis restarted without its data, or flushed) while
folders exist, one process (SET NX) rebuilds. The marker is not set by the sinks' writes: a
write into a Redis that just came back empty must not hide the rows it lost. A rebuild
records the visits too, from ``ROOT/visits/<VISIT>/summary.json`` and ``detectors.json``
(:func:`record_visit_folder`, the same call the visit agent may make once it has persisted
a visit).

The dashboard's per-value indexes (:mod:`streams.readmodel_index`) are kept by the record
script, so a rebuild keeps them too; rows recorded before the indexes existed (or whose
folders are gone) are indexed by :func:`heal_indexes` (an ``indexed`` marker, the same claim)
and at the end of every rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibstream.io.outputs import SUMMARY
from calibstream.verdicts import CALIBRATED, STATUSES
from streams.readmodel import ReadModel, RedisReadModel

__all__ = [
    "FolderState",
    "folder_state",
    "heal_indexes",
    "heal_read_model",
    "read_visit_folder",
    "rebuild_read_model",
    "rebuild_visits",
    "record_folder",
    "record_visit_folder",
    "row_of",
]

log = logging.getLogger("calibstream.rebuild")

#: summary.json's keys that a row keeps as they are (metadata; a failure's or a partial
#: calibration's stage and reason; the flagged verdicts' reason codes).
SUMMARY_FIELDS = (
    "status", "expid", "visit", "detector", "band", "mjd_obs", "exptime", "software_version",
    "n_sources", "reserved_rms", "stage", "error", "reason", "input", "flags",
)  # fmt: skip

#: The calexp header's figures in summary.json -> the row's names for them.
HEADER_FIGURES = {
    "MAGZERO": "magzero",
    "MAGZERO_ERR": "magzero_err",
    "MAGZERO_RMS": "magzero_rms",
    "MAGZERO_NOBJ": "magzero_nobj",
    "ASTRMS": "astrms_mas",
    "ASTNMATCH": "astnmatch",
    "PSFFWHM": "psf_fwhm_arcsec",
    "SKYBG": "sky_bg",
    "MAGLIM": "maglim",
    "EFFTIME": "efftime",
}

#: How long a rebuild's claim lasts without being renewed (a process that dies mid-rebuild
#: lets another one take over after this).
CLAIM_TTL_S = 120.0


@dataclass(frozen=True)
class FolderState:
    """What an exposure folder says: its summary, a digest of it, and when it was written."""

    summary: dict
    fingerprint: str
    mtime_ms: int


def folder_state(folder: Path) -> FolderState | None:
    """The folder's summary.json, or None when there is none (or it is not readable)."""
    path = Path(folder) / SUMMARY
    try:
        data = path.read_bytes()
        mtime_ns = path.stat().st_mtime_ns
        summary = json.loads(data)
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("status") not in STATUSES:
        return None
    return FolderState(summary, hashlib.sha256(data).hexdigest()[:32], mtime_ns // 1_000_000)


def row_of(summary: Mapping[str, Any]) -> dict:
    """The read model's row fields of a summary: status, metadata, the calexp figures (ok)
    or the stage, error and reason (failed)."""
    row = {name: summary[name] for name in SUMMARY_FIELDS if name in summary}
    header = summary.get("header")
    if isinstance(header, Mapping):
        row.update({field: header[key] for key, field in HEADER_FIGURES.items() if key in header})
    return row


def record_folder(
    readmodel: ReadModel,
    expid: int | str,
    folder: Path,
    *,
    submitted_ms: int | None = None,
    timings: Mapping[str, float] | None = None,
) -> float | None:
    """Record ``expid``'s row as its folder now says, and its ledger entry when ok.

    ``persisted_ms`` is when the folder's summary was written (a folder left as it was keeps
    its first time); the latency ``persisted_ms - submitted_ms`` is known when this record
    comes from the submission that persisted the folder (``submitted_ms`` given, the folder
    ok and written after it), null otherwise. Returns the latency in seconds when the row
    took it (a first persistence: the caller counts it in the histogram), else None."""
    state = folder_state(folder)
    if state is None:
        log.warning("exposure %s: no readable summary in %s: not recorded", expid, folder)
        return None
    status = state.summary["status"]
    ok = status in CALIBRATED  # ok, with warnings or partial: a calibration was persisted
    latency_s = None
    if ok and submitted_ms is not None and state.mtime_ms >= submitted_ms:
        latency_s = (state.mtime_ms - submitted_ms) / 1000
    row = {
        **row_of(state.summary),
        "fingerprint": state.fingerprint,
        "persisted_ms": state.mtime_ms,
        "submitted_ms": submitted_ms if ok else None,
        "latency_s": latency_s,
        "timings": dict(timings) if ok and timings is not None else None,
    }
    if ok:
        entry = {"status": status, "folder": str(folder), "fingerprint": state.fingerprint}
        readmodel.record_persisted(expid, entry)
    first = readmodel.record_metrics(expid, row)
    return latency_s if first else None


def exposure_folders(root: Path) -> Iterator[Path]:
    """Every exposure folder under ``root/exposures`` (not the writers' hidden staging)."""
    try:
        entries = list(os.scandir(Path(root) / "exposures"))
    except OSError:
        return
    for entry in sorted(entries, key=lambda e: e.name):
        if not entry.name.startswith(".") and entry.is_dir():
            yield Path(entry.path)


def rebuild_read_model(root: Path, readmodel: RedisReadModel) -> int:
    """Record a row (and an ok folder's ledger entry) for every exposure folder under
    ``root``, as its summary says; latency unknown (null) unless the row already holds the
    same folder content. Rows of folders that are gone are left. The visit folders are
    recorded too (:func:`rebuild_visits`). Sets the ``built`` marker; returns how many
    exposure folders were recorded."""
    recorded = 0
    for folder in exposure_folders(root):
        state = folder_state(folder)
        if state is None:
            continue
        expid = state.summary.get("expid", folder.name)
        record_folder(readmodel, expid, folder)
        recorded += 1
        if recorded % 1000 == 0:
            readmodel.renew_rebuild(CLAIM_TTL_S)
    visits = rebuild_visits(root, readmodel)
    if visits:
        log.info("read model: %d visits recorded from %s/visits", visits, root)
    readmodel.reindex_metrics()  # the rows of folders that are gone, recorded unindexed
    readmodel.mark_built()
    return recorded


def visit_folders(root: Path) -> Iterator[Path]:
    """Every visit folder under ``root/visits`` (not the writers' hidden staging)."""
    try:
        entries = list(os.scandir(Path(root) / "visits"))
    except OSError:
        return
    for entry in sorted(entries, key=lambda e: e.name):
        if not entry.name.startswith(".") and entry.is_dir():
            yield Path(entry.path)


def _json_object(path: Path) -> dict | None:
    """A JSON object read from ``path``, or None (absent, unreadable, not an object)."""
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_visit_folder(folder: Path) -> dict | None:
    """``{"summary", "state", "persisted_ms"}`` of a visit folder: its summary.json, its
    detectors.json (``VisitState.to_dict()``) and its write time (the folder's mtime: it
    is swapped in whole). None when it has no summary yet (a visit still waiting for
    detectors, not shown until it has one) or none readable."""
    folder = Path(folder)
    summary = _json_object(folder / SUMMARY)
    if summary is None or "visit" not in summary:
        log.debug("visit folder %s: no summary (yet)", folder)
        return None
    state = _json_object(folder / "detectors.json")
    if state is None:  # a summary alone still says what the visit is
        log.warning("visit folder %s: no readable detectors.json", folder)
        state = {"visit": summary["visit"], "outcomes": []}
    try:
        persisted_ms = folder.stat().st_mtime_ns // 1_000_000
    except OSError:
        return None
    return {"summary": summary, "state": state, "persisted_ms": persisted_ms}


def record_visit_folder(readmodel: ReadModel, folder: Path) -> bool:
    """Record a visit's row as its folder says (:func:`read_visit_folder`), at its write
    time, as the visit agent records it: recorded again unchanged, it keeps the time of
    its first persistence. False when the folder has no summary (yet)."""
    found = read_visit_folder(folder)
    if found is None:
        return False
    summary = found["summary"]
    readmodel.record_visit(summary["visit"], summary, found["state"], found["persisted_ms"])
    return True


def rebuild_visits(root: Path, readmodel: ReadModel) -> int:
    """Record every visit folder under ``root/visits``; how many were readable."""
    return sum(record_visit_folder(readmodel, folder) for folder in visit_folders(root))


def heal_indexes(readmodel: RedisReadModel) -> int | None:
    """Index the rows recorded before the per-value indexes existed, once (the ``indexed``
    marker; one process, by the rebuild's claim); the rows indexed, or None when nothing
    was to be done (or Redis is unavailable)."""
    if readmodel.indexed() is not False or not readmodel.claim_rebuild(CLAIM_TTL_S):
        return None
    try:
        done = readmodel.reindex_metrics()
        if done:
            log.warning("indexed %d read-model rows recorded before the indexes existed", done)
        return done
    finally:
        readmodel.release_rebuild()


def heal_read_model(root: Path, readmodel: RedisReadModel) -> int | None:
    """Rebuild the read model when Redis came back empty: the ``built`` marker absent while
    exposure folders exist. One process does it (a claim by SET NX); returns the rows
    rebuilt, or None when nothing was to be done (or Redis is unavailable). Indexes the
    rows that predate the per-value indexes first (:func:`heal_indexes`)."""
    heal_indexes(readmodel)
    if readmodel.built() is not False:  # built, or Redis unavailable
        return None
    if next(exposure_folders(root), None) is None:
        readmodel.mark_built()  # nothing to rebuild: the first rows will be written
        return None
    if not readmodel.claim_rebuild(CLAIM_TTL_S):
        return None  # another process rebuilds
    try:
        if readmodel.built() is not False:  # one finished between our look and our claim
            return None
        log.warning("the read model is empty (Redis restarted or flushed): rebuilding it")
        rebuilt = rebuild_read_model(root, readmodel)
        log.warning("read model rebuilt from %d exposure folders", rebuilt)
        return rebuilt
    finally:
        readmodel.release_rebuild()
