"""The persisted outputs of ``shared/contracts/outputs.md``, one folder per exposure.

``<root>/exposures/<EXPID>/`` holds calexp.fits, src.fits and src.parquet, matches.fits and
matches.parquet, background.fits and summary.json, or only summary.json for a failure. A folder
is built beside its destination and swapped in with renames, so it is
complete or absent; nothing time-dependent is written, so the same inputs give
the same bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

from calibstream import __version__
from calibstream.assess import Assessment, assess, assessment_cards
from calibstream.config import Config
from calibstream.detection.background import Background
from calibstream.detection.pipeline import background_hdul, metadata_cards
from calibstream.frame import Frame
from calibstream.io.calexp import CalexpPixels, calexp_hdul
from calibstream.io.columns import described_table_hdu
from calibstream.io.exposure import Metadata
from calibstream.io.fitsio import DIR_MODE, FILE_MODE, hdulist_bytes, umask
from calibstream.io.parquet import parquet_bytes

if TYPE_CHECKING:  # the astrometric and photometric modules load after detection's peak
    from calibstream.astrometry.refcat import RefCatalog
    from calibstream.astrometry.solve import Matches
    from calibstream.photometry.photocal import PhotoCalResult
from calibstream.summary_stats import SummaryStats
from calibstream.verdicts import CALIBRATED, OK, Partial, flagged

SUMMARY = "summary.json"


def exposure_dir(root: Path, expid: int | str) -> Path:
    """``root/exposures/<name>``: always one exposure's folder inside ``root/exposures``."""
    return Path(root) / "exposures" / folder_name(expid)


def folder_name(expid: int | str) -> str:
    """An EXPID as a folder name: an integer as itself; any other name (an unreadable
    file's) with every character but letters, digits, ``_``, ``+`` and ``-`` replaced by
    ``_``, so it is never ``.``, ``..``, hidden, empty or a path."""
    if isinstance(expid, int) and not isinstance(expid, bool):
        return str(expid)
    name = re.sub(r"[^A-Za-z0-9_+-]", "_", str(expid))
    return name or "_"


@dataclass(frozen=True)
class CalibratedExposure:
    """What is persisted of a calibrated exposure: exactly the content of its folder."""

    metadata: Metadata
    header: fits.Header  # calexp.fits
    catalog: dict[str, np.ndarray]  # src.fits
    matches: dict[str, np.ndarray] | None  # matches.fits (None: astrometry did not fit)
    background: Background  # background.fits
    reserved_rms: float | None
    #: Summary statistics, verdicts, status (None: not assessed yet, see :func:`assessed`).
    assessment: Assessment | None = None
    #: calexp.fits's IMAGE, MASK and VARIANCE (None: the header only; ``[outputs] pixels``).
    pixels: CalexpPixels | None = None


def persisted_exposure(
    frame: Frame,
    astrms_mas: float | None,
    astnmatch: int,
    photometry: PhotoCalResult | None,
    catalog: dict[str, np.ndarray],
    references: tuple[RefCatalog, Matches] | None,
    background: Background,
    partial: Partial | None,
    config: Config,
) -> CalibratedExposure:
    """The folder's content from the results of the three steps (``frame``'s WCS as header
    cards: the fitted one, or the first guess when astrometry did not fit and ``astrms_mas``
    and ``references`` are None; ``photometry`` None when it did not fit), assessed."""
    metadata = frame.metadata
    calibrated = CalibratedExposure(
        metadata=metadata,
        header=calexp_header(metadata, frame.wcs_header, astrms_mas, astnmatch, photometry),
        catalog=catalog,
        matches=None if references is None else matches_columns(catalog, *references),
        background=background,
        reserved_rms=None if photometry is None else finite_or_none(photometry.reserved_rms),
    )
    return assessed(calibrated, frame.stats, partial, config)


def assessed(
    calibrated: CalibratedExposure,
    image: SummaryStats | None,
    partial: Partial | None,
    config: Config,
) -> CalibratedExposure:
    """``calibrated`` with its assessment (:func:`calibstream.assess.assess`) and the
    assessment's cards in its calexp header."""
    shape = calibrated.background.shape
    found = assess(
        calibrated.metadata, calibrated.header, calibrated.matches, image, partial, shape, config
    )
    header = calibrated.header.copy()
    for key, value, comment in assessment_cards(found):
        header[key] = (value, comment)
    return dataclasses.replace(calibrated, header=header, assessment=found)


def calexp_header(
    metadata: Metadata,
    wcs_header: fits.Header,
    astrms_mas: float | None,
    astnmatch: int,
    photometry: PhotoCalResult | None,
) -> fits.Header:
    """Fitted WCS, photometric calibration and metadata, as the contract names them; what
    was not fitted (``astrms_mas`` or ``photometry`` None) is left out."""
    header = fits.Header()
    for key, value, comment in metadata_cards(metadata):
        header[key] = (value, comment)
    for card in wcs_header.cards:  # values, not card images: formatted as any reader rebuilds them
        if card.keyword in ("COMMENT", "HISTORY", ""):
            header.append(fits.Card(card.keyword, card.value), bottom=True)
        else:
            header.set(card.keyword, card.value, card.comment)
    cards = []
    if astrms_mas is not None:
        cards += [
            ("ASTRMS", finite_or_none(astrms_mas), "[mas] scatter of astrometric matches"),
            ("ASTNMATCH", int(astnmatch), "astrometric matches used"),
        ]
    if photometry is not None:
        cards += [
            ("MAGZERO", float(photometry.magzero), "mag of 1 e-/s (psf_flux/EXPTIME)"),
            ("MAGZERO_ERR", float(photometry.magzero_err), "uncertainty of MAGZERO"),
            ("MAGZERO_RMS", finite_or_none(photometry.magzero_rms), "scatter of the stars used"),
            ("MAGZERO_NOBJ", int(photometry.nobj), "stars used for MAGZERO"),
            ("MAGZERO_FEW", bool(photometry.few_stars), "MAGZERO from few stars"),
        ]
        cards += [
            (f"COLORTERM{i + 1}", float(c), f"colour term c{i}")
            for i, c in enumerate(photometry.colorterm)
        ]
    for key, value, comment in cards:
        header[f"HIERARCH {key}" if len(key) > 8 else key] = (value, comment)
    return header


def summary_of(persisted: CalibratedExposure) -> dict:
    """summary.json: the status, metadata, the calexp header and, once assessed, the summary
    statistics, verdicts, flagged reason codes and what a partial calibration lacks (its
    stage, error and reason also at the top, as a failure's)."""
    found = persisted.assessment
    summary = {
        "status": OK if found is None else found.status,
        **_metadata_json(persisted.metadata),
        "n_sources": len(persisted.catalog["id"]),
        "reserved_rms": persisted.reserved_rms,
        "header": {key: _json_value(persisted.header[key]) for key in persisted.header},
    }
    if found is not None:
        summary["summary_stats"] = found.stats.as_record()
        summary["verdicts"] = [v.as_record() for v in found.verdicts]
        summary["flags"] = flagged(found.verdicts)
        summary["partial"] = None if found.partial is None else found.partial.as_record()
        if found.partial is not None:
            summary.update(found.partial.as_record())
    return summary


def _json_value(value):
    """A header value for JSON: an undefined card (ASTRMS without freedom) is null."""
    return None if isinstance(value, fits.card.Undefined) else value


def _metadata_json(meta: Metadata) -> dict:
    return {
        "expid": meta.expid,
        "visit": meta.visit,
        "detector": meta.detector,
        "band": meta.band,
        "mjd_obs": meta.mjd_obs,
        "exptime": meta.exptime,
        "software_version": __version__,
    }


def finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def matches_columns(
    catalog: Mapping[str, np.ndarray], refs: RefCatalog, matches: Matches
) -> dict[str, np.ndarray]:
    """One row per source matched to a reference star (astrometric catalog)."""
    m, cat = matches, catalog
    columns = {
        "src_id": cat["id"][m.source],
        "ref_id": refs.id[m.ref],
        "src_ra": cat["ra"][m.source],
        "src_dec": cat["dec"][m.source],
        "ref_ra": refs.ra[m.ref],
        "ref_dec": refs.dec[m.ref],
        "distance_mas": m.distance_mas,
        "x": cat["x"][m.source],
        "y": cat["y"][m.source],
        "psf_flux": cat["psf_flux"][m.source],
        "psf_mag": cat["psf_mag"][m.source],
    }
    for band, (mag, err) in sorted(refs.bands.items()):
        columns[f"ref_{band}_mag"] = mag[m.ref]
        columns[f"ref_{band}_mag_err"] = err[m.ref]
    for flag in ("calib_astrometry_used", "calib_photometry_used", "calib_photometry_reserved"):
        columns[flag] = cat[flag][m.source]
    return columns


def output_files(persisted: CalibratedExposure) -> dict[str, bytes]:
    """The bytes of every file of the folder, by name."""
    primary_cards = metadata_cards(persisted.metadata)

    def with_primary(*hdus: fits.hdu.base.ExtensionHDU) -> fits.HDUList:
        primary = fits.PrimaryHDU()
        for key, value, comment in primary_cards:
            primary.header[key] = (value, comment)
        return fits.HDUList([primary, *hdus])

    files = {
        "calexp.fits": hdulist_bytes(calexp_hdul(persisted.header, persisted.pixels)),
        "src.fits": hdulist_bytes(with_primary(described_table_hdu(persisted.catalog, "SRC"))),
        "src.parquet": parquet_bytes(persisted.catalog),
        "matches.fits": b"",
        "background.fits": hdulist_bytes(background_hdul(persisted.metadata, persisted.background)),
        SUMMARY: _json_bytes(summary_of(persisted)),
    }
    if persisted.matches is None:  # astrometry did not fit: nothing was matched
        del files["matches.fits"]
    else:
        matches = with_primary(described_table_hdu(persisted.matches, "MATCHES"))
        files["matches.fits"] = hdulist_bytes(matches)
        files["matches.parquet"] = parquet_bytes(persisted.matches)
    return files


def write_calibration(calibration: CalibratedExposure, root: Path) -> Path:
    """Persist a calibrated exposure; returns its folder."""
    folder = exposure_dir(root, calibration.metadata.expid)
    return publish_folder(folder, output_files(calibration))


def write_failure(
    root: Path,
    expid: int | str,
    stage: str,
    kind: str,
    reason: str,
    metadata: Metadata | None = None,
    extra: Mapping[str, object] | None = None,
) -> Path:
    """A failed exposure: only summary.json, with its status and a readable reason.

    A calibration already persisted for this EXPID (ok, with warnings or partial) is kept:
    a failure (say, a later broken copy of the file) never replaces results.
    """
    folder = exposure_dir(root, expid)
    if _status(folder) in CALIBRATED:
        return folder
    summary = {"status": "failed", "expid": expid, "stage": stage, "error": kind, "reason": reason}
    if metadata is not None:
        summary.update(_metadata_json(metadata))
    summary.update(extra or {})
    return publish_folder(exposure_dir(root, expid), {SUMMARY: _json_bytes(summary)})


def read_summary(folder: Path) -> dict | None:
    """A folder's summary.json, or None when there is none (or it is not readable yet)."""
    try:
        summary = json.loads((folder / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _status(folder: Path) -> str | None:
    summary = read_summary(folder)
    return None if summary is None else summary.get("status")


def _json_bytes(data: Mapping[str, object]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def publish_folder(target: Path, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` into a folder beside ``target`` and swap it in with renames.

    Readers see the old complete folder, no folder, or the new complete one.
    A folder already holding exactly these bytes is left untouched. The folder is 0755
    and its files 0644, less the umask (readable by the dashboard's and readers' users).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if _same_contents(target, files):
        return target
    _remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
    try:
        os.chmod(staging, DIR_MODE & ~umask())  # mkdtemp's are 0700
        for name, data in files.items():
            _write_new(staging / name, data)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.rename(target, old / "previous")
        os.rename(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write_new(path: Path, data: bytes) -> None:
    """A new file holding ``data``, on disk (fsync), 0644 less the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


#: A staging folder this old was left by a writer that died (kill -9) mid-write.
STALE_STAGING_S = 600.0


def _remove_stale_staging(target: Path) -> None:
    """Remove what writers of ``target`` that died mid-write left beside it (never a live
    writer's: only folders untouched for :data:`STALE_STAGING_S`)."""
    now = time.time()
    for leftover in target.parent.glob(f".{target.name}.*-*"):
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(leftover, ignore_errors=True)


def _same_contents(folder: Path, files: Mapping[str, bytes]) -> bool:
    if not folder.is_dir() or sorted(p.name for p in folder.iterdir()) != sorted(files):
        return False
    return all((folder / name).read_bytes() == data for name, data in files.items())
