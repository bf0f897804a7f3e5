"""copyIcSourceFields: carry characterization's PSF-star flags to the deep catalog.

Each ICSRC source is matched to the nearest deep source within a radius (as
LSST's ``matchRadiusPix``); a deep source claimed by several keeps the closest.
"""

from __future__ import annotations

import numpy as np

from calibstream.io.exposure import ICSRC_FLAGS, IcSrc


def copy_icsrc_flags(
    x: np.ndarray, y: np.ndarray, icsrc: IcSrc | None, radius: float
) -> dict[str, np.ndarray]:
    """Boolean columns ``calib_psf_*`` for the deep sources at (x, y)."""
    n = len(x)
    flags = {name: np.zeros(n, dtype=bool) for name in ICSRC_FLAGS}
    if icsrc is None or len(icsrc) == 0 or n == 0:
        return flags
    from scipy.spatial import cKDTree  # 10 MB of imports, not held through detection's peak

    distance, nearest = cKDTree(np.column_stack([x, y])).query(
        np.column_stack([icsrc.x, icsrc.y]), distance_upper_bound=radius
    )
    matched = np.flatnonzero(np.isfinite(distance))
    # Closest claim first, so each deep source keeps only its nearest ICSRC source.
    matched = matched[np.argsort(distance[matched], kind="stable")]
    _, first = np.unique(nearest[matched], return_index=True)
    winners = matched[first]
    for name in ICSRC_FLAGS:
        flags[name][nearest[winners]] = getattr(icsrc, name)[winners]
    return flags
