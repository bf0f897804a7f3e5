"""The results lines of ``calibstream calibrate``: one per exposure, from its folder.

``PATH: STATUS -> FOLDER  MAGZERO 28.012 ± 0.004  ASTRMS 11.1 mas  seeing 0.79"  m5 24.11
t_eff 29.8 s [flags] (reason)``: the figures the folder's summary holds (a figure not fitted
is left out), the flagged verdicts' reason codes, a partial or failed exposure's reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from calibstream.io.outputs import read_summary
from calibstream.summary_stats import FWHM_PER_SIGMA

#: Statuses of a calibration in full; any other makes the batch command exit 1.
IN_FULL = ("ok", "warning")


def figures(summary: Mapping[str, Any]) -> str:
    """The summary's headline figures, as text."""
    header = summary.get("header") or {}
    stats = summary.get("summary_stats") or {}
    parts = []
    if "MAGZERO" in header:
        parts.append(f"MAGZERO {header['MAGZERO']:.3f} ± {header.get('MAGZERO_ERR', 0.0):.3f}")
    if "ASTRMS" in header:
        parts.append(f"ASTRMS {header['ASTRMS']:.1f} mas ({header.get('ASTNMATCH')} matches)")
    sigma, scale = stats.get("psfSigma"), stats.get("pixelScale")
    if sigma is not None and scale is not None:
        parts.append(f'seeing {sigma * FWHM_PER_SIGMA * scale:.2f}"')
    if stats.get("magLim") is not None:
        parts.append(f"m5 {stats['magLim']:.2f}")
    if stats.get("effTime") is not None:
        parts.append(f"t_eff {stats['effTime']:.1f} s")
    if summary.get("flags"):
        parts.append(f"[{', '.join(summary['flags'])}]")
    return "  ".join(parts)


def result_line(path: str | Path, status: str, folder: Path, reason: str = "") -> str:
    """One exposure's results line."""
    summary = read_summary(folder) or {}
    text = f"{path}: {status} -> {folder}"
    shown = figures(summary) if status in (*IN_FULL, "partial") else ""
    if shown:
        text += f"  {shown}"
    return text + (f" ({reason})" if reason else "")
