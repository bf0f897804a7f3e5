"""Camera geometry as data: which detectors a visit holds and where they sit.

A visit is complete when every detector the camera expects has reported, and its
pointing is judged from where each detector lies in the focal plane, so both need
the geometry; it is data (a TOML table), never code. The shape, as a ``[camera]``
table of the configuration would hold it::

    [camera]
    name = "sim3x3"
    detectors = [
      { id = 0, x = -2148.0, y = -2148.0, rotation = 0.0, nx = 2048, ny = 2048 },
      { id = 1, x = 0.0, y = -2148.0 },   # rotation 0.0, nx = ny = 2048 by default
    ]

``x``, ``y``: the detector's centre (pixel ``((nx-1)/2, (ny-1)/2)``) in the focal
plane, in pixels from the boresight; ``rotation``: degrees from the focal plane's
x-axis to the detector's, counter-clockwise; ``nx``, ``ny``: its size in pixels.
:func:`camera_from_mapping` checks the types and names any bad or duplicate field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detector:
    """One detector: its centre in the focal plane (px from the boresight), rotation, size."""

    id: int
    x: float
    y: float
    rotation: float = 0.0  # deg, detector x-axis from the focal plane's x-axis
    nx: int = 2048
    ny: int = 2048

    def to_focal_plane(self, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based detector pixels to focal-plane pixels (rotated about the detector centre)."""
        c, s = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        u = np.asarray(px, float) - (self.nx - 1) / 2.0
        v = np.asarray(py, float) - (self.ny - 1) / 2.0
        return self.x + c * u - s * v, self.y + s * u + c * v


@dataclass(frozen=True)
class Camera:
    """A named set of detectors: what a visit is expected to hold."""

    name: str
    detectors: tuple[Detector, ...]

    def __post_init__(self) -> None:
        """Duplicate ids would make a visit's completeness ambiguous."""
        ids = [d.id for d in self.detectors]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"camera {self.name!r}: duplicate detector id(s) {dupes}")

    @property
    def expected(self) -> frozenset[int]:
        """The detector ids every visit should report."""
        return frozenset(d.id for d in self.detectors)

    def detector(self, id: int) -> Detector:
        """The detector ``id``; a ValueError naming it (and the camera) if there is none."""
        for det in self.detectors:
            if det.id == id:
                return det
        raise ValueError(f"detector {id!r} is not in camera {self.name!r}")


#: Field name -> (accepted types, default or None when required).
_FIELDS: dict[str, tuple[tuple[type, ...], object]] = {
    "id": ((int,), None),
    "x": ((int, float), None),
    "y": ((int, float), None),
    "rotation": ((int, float), 0.0),
    "nx": ((int,), 2048),
    "ny": ((int,), 2048),
}


def _detector_from_mapping(item: object, where: str) -> Detector:
    """One detector table, its fields type-checked (bool is not a number here)."""
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: a detector must be a table, got {type(item).__name__}")
    unknown = sorted(set(item) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(_FIELDS)}")
    values: dict[str, object] = {}
    for name, (types, default) in _FIELDS.items():
        if name not in item:
            if default is None:
                raise ValueError(f"{where}: missing field {name!r}")
            values[name] = default
            continue
        value = item[name]
        if isinstance(value, bool) or not isinstance(value, types):
            kind = " or ".join(t.__name__ for t in types)
            raise ValueError(f"{where}: field {name!r} must be {kind}, got {value!r}")
        if types == (int, float) and not math.isfinite(value):
            raise ValueError(f"{where}: field {name!r} must be finite, got {value!r}")
        values[name] = float(value) if types == (int, float) else int(value)
    if values["nx"] < 1 or values["ny"] < 1:
        raise ValueError(f"{where}: nx and ny must be positive, got {values['nx']}, {values['ny']}")
    return Detector(**values)  # type: ignore[arg-type]


def camera_from_mapping(data: Mapping) -> Camera:
    """A camera from its TOML table (see this module); ValueError naming a bad field."""
    if not isinstance(data, Mapping):
        raise ValueError(f"camera: expected a table, got {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "detectors"})
    if unknown:
        raise ValueError(f"camera: unknown field(s) {unknown}; known: ['detectors', 'name']")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"camera: field 'name' must be a non-empty string, got {name!r}")
    items = data.get("detectors")
    if not isinstance(items, list | tuple) or not items:
        raise ValueError(f"camera {name!r}: field 'detectors' must be a non-empty list")
    detectors = tuple(
        _detector_from_mapping(item, f"camera {name!r} detectors[{k}]")
        for k, item in enumerate(items)
    )
    return Camera(name=name, detectors=detectors)


def grid_camera(
    n: int = 3, size: tuple[int, int] = (2048, 2048), gap: int = 100, name: str = "sim3x3"
) -> Camera:
    """``n``×``n`` unrotated detectors ``gap`` px apart about the boresight, ids row-major."""
    if n < 1:
        raise ValueError(f"grid_camera: n must be at least 1, got {n}")
    nx, ny = int(size[0]), int(size[1])
    offsets = np.arange(n) - (n - 1) / 2.0
    detectors = tuple(
        Detector(
            id=row * n + col,
            x=float(offsets[col] * (nx + gap)),
            y=float(offsets[row] * (ny + gap)),
            nx=nx,
            ny=ny,
        )
        for row in range(n)
        for col in range(n)
    )
    return Camera(name=name, detectors=detectors)


DEFAULT_CAMERA = grid_camera()
