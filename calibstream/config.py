"""Configuration as data: dataclasses with documented defaults, loaded from TOML.

Every key has a default here; a TOML file given with ``--config`` overrides
any of them by section, e.g.::

    [detection]
    threshold = 5.0

Unknown sections or keys are an error, so a typo never passes silently, and every value
is checked against its field's type when loaded (``threshold = "five"`` is
``config: [detection] threshold: expected a number, got 'five'``).
"""

from __future__ import annotations

import copyreg
import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_type_hints

from calibstream.camera import DEFAULT_CAMERA, Camera, camera_from_mapping
from calibstream.colorterm_config import (
    DEFAULT_COLORTERMS,
    FIELD,
    ColorTerm,
    split_libraries,
)
from calibstream.config_bounds import LimitsConfig, SanityConfig
from calibstream.config_types import checked
from calibstream.errors import ConfigError
from calibstream.quality_config import (
    DEFAULT_FIDUCIALS,
    Fiducial,
    SummaryConfig,
    VerdictConfig,
)


# A Config crosses to worker processes (pickled); its read-only mappings must too.
def _read_only(mapping: dict) -> MappingProxyType:
    return MappingProxyType(mapping)


copyreg.pickle(MappingProxyType, lambda proxy: (_read_only, (dict(proxy),)))


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
    #: The centroid window's sigma (SExtractor's, from the half-light radius) is capped at
    #: this many PSF sigmas: neighbours inflate the half-light radius in crowded fields, and
    #: a wider window adds only their light and the cost of its area (a star's window is one
    #: PSF sigma; 3 leaves galaxies three times the PSF's half-light radius).
    window_max_psf_sigmas: float = 3.0
    icsrc_match_radius: float = 3.0  # pixels, as LSST's copyIcSourceFields


@dataclass(frozen=True)
class PhotometryConfig:
    """Photometric zero-point fit (``calibstream.photometry.photocal``)."""

    min_snr: float = 20.0  # psf_flux / psf_flux_err of a calibration star
    #: Largest reference error (mag) of a calibration star: the error of the
    #: colour-term-corrected reference magnitude (primary and secondary propagated).
    max_mag_err: float = 0.05
    clip_sigma: float = 3.0  # clip at this many robust (MAD) sigmas of normalised residuals
    clip_iterations: int = 5
    #: Fraction of the calibration stars held out of the fit (chosen from the
    #: exposure id, so a replay reserves the same stars), to judge the fit.
    reserve_fraction: float = 0.1
    min_stars: int = 1  # fewer stars left to fit: PhotometryError
    #: A zero-point from this many stars or fewer is flagged (MAGZERO_FEW) and its
    #: intrinsic scatter is at least ``few_sigma_int`` (mag): from so few stars the
    #: χ²/dof = 1 estimate is too noisy to trust (at n = 2 it rests on one difference).
    few_stars: int = 5
    few_sigma_int: float = 0.02
    #: Catalog flags that disqualify a calibration star.
    reject_flags: tuple[str, ...] = (
        "flag_edge",
        "flag_saturated",
        "flag_bad",
        "flag_cr",
        "flag_interpolated",
        "flag_nodata",
        "flag_suspect",
        "flag_deblended",
        "flag_bad_centroid",
        "flag_psf_flux",
    )
    #: Unresolved test: this aperture flux against psf_flux. A source is
    #: resolved when ap/psf - 1 exceeds both ``max_extendedness`` and
    #: ``extendedness_nsigma`` of its error. The ratio expected for a point
    #: source is 1 when the catalog has ``<flux>_apcorr`` (both fluxes total),
    #: otherwise the median over ``calib_psf_used`` stars. "" disables the test.
    extendedness_flux: str = "ap_flux_12"
    max_extendedness: float = 0.02
    extendedness_nsigma: float = 3.0
    #: Another detection closer than this many PSF FWHM spoils a PSF flux. 0 disables.
    isolation_fwhm: float = 2.0

    def __post_init__(self) -> None:
        checks = {
            "min_snr": self.min_snr >= 0,
            "max_mag_err": self.max_mag_err > 0,
            "clip_sigma": self.clip_sigma > 0,
            "clip_iterations": self.clip_iterations >= 0,
            "reserve_fraction": 0.0 <= self.reserve_fraction < 1.0,
            "min_stars": self.min_stars >= 1,
            "few_stars": self.few_stars >= 0,
            "few_sigma_int": self.few_sigma_int >= 0,
            "max_extendedness": self.max_extendedness >= 0,
            "extendedness_nsigma": self.extendedness_nsigma >= 0,
            "isolation_fwhm": self.isolation_fwhm >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                value = getattr(self, name)
                raise ConfigError(f"invalid value {value!r}", where=f"photometry.{name}")


@dataclass(frozen=True)
class AstrometryConfig:
    """Astrometric fit: pattern matching to the reference stars, then a TAN-SIP fit."""

    sip_order: int = 3  # total order of the pixel → sky polynomial (A_ORDER = B_ORDER)
    #: Search range of the first-guess WCS's errors: shift of the chip centre,
    #: rotation and relative scale error.
    max_offset_arcsec: float = 180.0
    max_rotation_deg: float = 6.0
    max_scale_error: float = 0.06
    #: Re-matching radius after the pattern solution; it shrinks over the
    #: iterations (never below a few times the scatter of the matches).
    match_radius_arcsec: float = 1.0
    n_bright: int = 60  # brightest sources used for pattern matching (refs: 2× per unit area)
    rejection_sigma: float = 3.0  # outliers beyond this many robust σ of the normalised residual
    iterations: int = 4  # TAN-SIP fits, each followed by a re-match but the last
    min_matches: int = 10  # fewer reference stars in the footprint, or matches: a failure
    max_rms_mas: float = 200.0  # a fit whose ASTRMS exceeds this is a failure
    #: Use the first guess's SIP distortion (plus a fitted affine map) instead of
    #: the full polynomial when the matches do not support the full fit (too
    #: few for its coefficients, or no significant improvement: F-test at 1 %).
    first_guess_distortion: bool = True
    #: The prior on the first guess's error (arcsec, its chip centre's displacement):
    #: with too few sources or reference stars for a pattern (``min_matches``), the
    #: shift that most source-reference pairs within 3× this agree on, if unique and
    #: above chance, pairs them directly. 0: pattern matching only.
    first_guess_error_arcsec: float = 5.0
    #: The prior on the first guess's rotation (deg, 1σ; the same in radians of relative
    #: scale): what the shift rung (1–2 stars), which fits neither, adds to its uncertainty.
    first_guess_rotation_deg: float = 0.02

    def __post_init__(self) -> None:
        checks = {
            "sip_order": 1 <= self.sip_order <= 9,
            "first_guess_error_arcsec": self.first_guess_error_arcsec >= 0,
            "first_guess_rotation_deg": self.first_guess_rotation_deg >= 0,
            "max_offset_arcsec": self.max_offset_arcsec > 0,
            "max_rotation_deg": 0 < self.max_rotation_deg <= 45,
            "max_scale_error": 0 < self.max_scale_error < 0.5,
            "match_radius_arcsec": self.match_radius_arcsec > 0,
            "n_bright": self.n_bright >= 5,
            "rejection_sigma": self.rejection_sigma > 0,
            "iterations": self.iterations >= 1,
            "min_matches": self.min_matches >= 3,
            "max_rms_mas": self.max_rms_mas > 0,
        }
        for name, ok in checks.items():
            if not ok:
                value = getattr(self, name)
                raise ConfigError(f"invalid value {value!r}", where=f"astrometry.{name}")


@dataclass(frozen=True)
class CalibrationConfig:
    """Reference loading and the final source-to-reference matches."""

    #: Reference stars are loaded this far beyond the first-guess footprint, so
    #: that a first guess within the astrometric search range (180″, and 6% of
    #: a 4k chip's half-diagonal) still finds its stars.
    footprint_margin_deg: float = 0.06
    #: After the astrometric fit, sources and references this close are matched
    #: (matches.fits and the photometric calibration).
    match_radius_arcsec: float = 0.5
    #: At most this many sources (the brightest by psf_flux) enter the astrometric fit
    #: (Rubin's ``downsample_max_footprints``); 0: all. The catalogue stays complete and
    #: every source is matched after the fit.
    max_footprints: int = 20000


@dataclass(frozen=True)
class OutputsConfig:
    """What the sink writes beyond the contract's minimum (:mod:`calibstream.io.calexp`)."""

    #: calexp.fits with IMAGE, MASK and VARIANCE (read again from the input the event
    #: names), the fitted WCS in each header; false: the header only.
    pixels: bool = False


@dataclass(frozen=True)
class Config:
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    measurement: MeasurementConfig = field(default_factory=MeasurementConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    astrometry: AstrometryConfig = field(default_factory=AstrometryConfig)
    photometry: PhotometryConfig = field(default_factory=PhotometryConfig)
    #: Instrument band -> colour term; a ``[colorterms.<band>]`` table replaces
    #: the keys it gives of that band (a new band must give primary and secondary).
    colorterms: Mapping[str, ColorTerm] = field(default_factory=lambda: DEFAULT_COLORTERMS)
    #: Reference catalogue (its name, or a glob of names) -> band -> colour term, from
    #: ``[colorterms.<catalogue>.<band>]`` tables (:mod:`calibstream.colorterms`); a
    #: catalogue none names uses ``colorterms`` above.
    colorterm_libraries: Mapping[str, Mapping[str, ColorTerm]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    sanity: SanityConfig = field(default_factory=SanityConfig)
    #: Band -> its nominal observation (effTime, the image verdicts); a
    #: ``[fiducials.<band>]`` table replaces the keys it gives (a new band gives them all).
    fiducials: Mapping[str, Fiducial] = field(default_factory=lambda: DEFAULT_FIDUCIALS)
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    verdicts: VerdictConfig = field(default_factory=VerdictConfig)
    #: The detectors a visit is expected to hold and where they sit in the focal
    #: plane (:mod:`calibstream.camera`); a ``[camera]`` table replaces it whole.
    camera: Camera = DEFAULT_CAMERA


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
    data, libraries = split_libraries(data)
    config = _build(Config, data, "")
    return dataclasses.replace(config, **{FIELD: libraries}) if libraries else config


def _build(cls: type, data: dict[str, Any], prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"[{prefix}] must be a table", where=prefix or "config")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)}", where=prefix or "config")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        default = getattr(cls(), name)
        where = f"{prefix}.{name}" if prefix else name
        if isinstance(default, Camera):
            kwargs[name] = _camera(value)
        elif dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, where)
        elif isinstance(default, Mapping):
            kwargs[name] = _build_mapping(default, value, where)
        else:
            kwargs[name] = checked(value, hints[name], prefix, name)
    return cls(**kwargs)


def _camera(data: Any) -> Camera:
    """A ``[camera]`` table, whole (a partial camera is no camera): one-line errors naming
    the field, as for every other key (``config: [camera] ... field 'id' must be int``)."""
    try:
        return camera_from_mapping(data)
    except ValueError as exc:
        reason = str(exc).removeprefix("camera: ")
        raise ConfigError(f"[camera] {reason}", where="config") from None


def camera_toml(camera: Camera) -> str:
    """The ``[camera]`` table giving ``camera`` back when loaded: what a deployment's file
    appends so its visit agent expects the detectors a simulation wrote."""
    lines = ["[camera]", f"name = {json.dumps(camera.name)}"]
    for det in camera.detectors:
        lines += ["", "[[camera.detectors]]"]
        lines += [f"{f.name} = {getattr(det, f.name)!r}" for f in dataclasses.fields(det)]
    return "\n".join(lines) + "\n"


def _build_mapping(default: Mapping[str, Any], data: Any, prefix: str) -> Mapping[str, Any]:
    """A mapping of dataclasses (e.g. colorterms): each table updates or adds one entry."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{prefix}] must be a table", where=prefix)
    kind = type(next(iter(default.values())))
    merged = dict(default)
    for key, table in data.items():
        where = f"{prefix}.{key}"
        if not isinstance(table, dict):
            raise ConfigError(f"[{where}] must be a table", where=where)
        known = {f.name for f in dataclasses.fields(kind)}
        unknown = set(table) - known
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)}", where=where)
        try:
            base = merged.get(key)
            merged[key] = dataclasses.replace(base, **table) if base else kind(**table)
        except TypeError as exc:
            raise ConfigError(f"incomplete table ({exc})", where=where) from exc
        except ConfigError as exc:
            field_name = (exc.where or "").rsplit(".", 1)[-1]
            raise ConfigError(exc.reason, where=f"{where}.{field_name}") from exc
    return MappingProxyType(merged)
