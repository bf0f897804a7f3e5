"""Configuration as data: dataclasses with documented defaults, loaded from TOML.

Every key has a default here; a TOML file given with ``--config`` overrides
any of them by section, e.g.::

    [detection]
    threshold = 5.0

Unknown sections or keys are an error, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigError


@dataclass(frozen=True)
class BackgroundConfig:
    """Residual background: SExtractor's mesh estimator, bad pixels masked."""

    mesh_size: int = 128  # pixels per mesh cell side
    filter_size: int = 3  # median filter over mesh cells
    #: Mask planes excluded from the background estimate.
    mask_planes: tuple[str, ...] = ("BAD", "SAT", "NO_DATA", "CR", "DETECTED", "SUSPECT", "EDGE")


@dataclass(frozen=True)
class DetectionConfig:
    """Detection: threshold in sigma of the filtered image, as LSST's calibrate."""

    threshold: float = 5.0
    #: ``psf``: the PSF model as matched filter, weighted by the inverse
    #: variance (S/N image computed by FFT). ``kernel``: a given kernel and a
    #: single noise level, as SExtractor (``kernel`` and ``noise`` below).
    filter: Literal["psf", "kernel"] = "psf"
    kernel: tuple[tuple[float, ...], ...] = ((1, 2, 1), (2, 4, 2), (1, 2, 1))
    #: ``variance``: the per-pixel variance plane; ``global``: one rms measured
    #: on the background (SExtractor's default).
    noise: Literal["variance", "global"] = "variance"
    min_area: int = 1
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005
    clean: bool = True
    clean_param: float = 1.0
    #: Mask planes whose pixels carry no weight in detection.
    mask_planes: tuple[str, ...] = ("BAD", "NO_DATA")


@dataclass(frozen=True)
class MeasurementConfig:
    """Per-source measurements."""

    aperture_radii: tuple[float, ...] = (3.0, 5.0, 9.0, 12.0)
    kron_factor: float = 2.5
    kron_min_radius: float = 3.5
    #: Saturation level in image units; ``None``: only the SAT mask plane flags it.
    saturation: float | None = None
    #: Windowed-centroid iterations are SExtractor's; a centroid that moves more
    #: than this (pixels) from the detection peak is flagged bad.
    max_centroid_shift: float = 2.0
    icsrc_match_radius: float = 3.0  # pixels, as LSST's copyIcSourceFields


@dataclass(frozen=True)
class Config:
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    measurement: MeasurementConfig = field(default_factory=MeasurementConfig)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """The defaults, overridden by the TOML file at ``path`` if given."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read configuration ({exc})", where=str(path)) from exc
    return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> Config:
    return _build(Config, data, "")


def _build(cls: type, data: dict[str, Any], prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"[{prefix}] must be a table", where=prefix or "config")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)}", where=prefix or "config")
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        where = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, where)
        elif isinstance(default, tuple):
            kwargs[name] = _tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _tuple(value: Any) -> tuple:
    if isinstance(value, list):
        return tuple(_tuple(v) for v in value)
    return value
