"""One simulated characterized exposure and its truth (:func:`simulate_exposure`).

Each component draws from its own child of the exposure's seed (geometry,
photometric conditions, noise, defects, measurement, sky), so switching
cosmic rays off does not change the noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from calibstream.detection.apcorr import ApCorrMap, ApCorrTerm
from calibstream.detection.psfmodel import moffat_enclosed, psf_image
from calibstream.io.exposure import Exposure, Metadata, Psf
from calibstream.simulate.conditions import Conditions, draw_conditions
from calibstream.simulate.config import MASK_PLANES, SimConfig
from calibstream.simulate.geometry import first_guess, make_wcs, sip_polynomials, tan_project
from calibstream.simulate.icsrc import make_icsrc
from calibstream.simulate.pixels import add_defects, expose
from calibstream.simulate.render import noiseless_model
from calibstream.simulate.sky import Pointing, Sky, make_sky
from calibstream.simulate.sources import add_pixel_truth, place_sources
from calibstream.simulate.truth import Truth


@dataclass(frozen=True)
class _Seeds:
    """One independent seed per component of an exposure."""

    geometry: np.random.SeedSequence
    photometry: np.random.SeedSequence
    noise: np.random.SeedSequence
    defects: np.random.SeedSequence
    measurement: np.random.SeedSequence
    sky: np.random.SeedSequence


@dataclass(frozen=True)
class _Astrometry:
    """The true WCS and the header's first guess, with how far off the guess is."""

    true: WCS
    guess: WCS
    offset: float  # arcsec at the chip centre
    rotation: float  # deg


@dataclass(frozen=True)
class _Optics:
    """The PSF HDU and the aperture corrections that go with it."""

    psf: Psf
    apcorr: ApCorrMap
    apcorr_psf: float  # 1 / f_in
    apcorr_ap12: float  # 1 / enclosed fraction at r = 12 px


def simulate_exposure(
    config: SimConfig | None = None,
    seed: int | np.random.SeedSequence = 0,
    *,
    index: int = 0,
    sky: Sky | None = None,
    pointing: Pointing | None = None,
    wcs: tuple[WCS, WCS] | None = None,
) -> tuple[Exposure, Truth]:
    """One characterized exposure and its truth.

    Without ``sky`` a sky covering just this exposure is made from the seed
    (then the reference catalog is ``truth``-consistent but not returned: use
    :func:`~calibstream.simulate.survey.simulate_survey` when the refcat
    matters). ``index`` sets EXPID (1000+index), VISIT, DETECTOR and the MJD offset.
    ``wcs`` (true, first guess) replaces the drawn ones: a visit's detectors share one
    pointing error (:mod:`calibstream.simulate.visit`).
    """
    config = config or SimConfig()
    seeds = _seeds(seed)
    geom_rng = np.random.default_rng(seeds.geometry)
    if pointing is None:
        pointing = Pointing(*config.center, rotation=float(geom_rng.uniform(0.0, 360.0)))
    if sky is None:
        sky = make_sky(config, [pointing], seeds.sky)
    cond = draw_conditions(config, np.random.default_rng(seeds.photometry), index)
    astrometry = _astrometry(config, pointing, geom_rng) if wcs is None else _given(config, *wcs)
    sources = place_sources(sky, astrometry.true, config, cond.epoch, cond.magzero)
    shape = (config.size[1], config.size[0])
    pixels = expose(noiseless_model(sources, cond, shape), config, cond, seeds.noise)
    bad_x = add_defects(pixels, config, np.random.default_rng(seeds.defects))
    add_pixel_truth(sources, pixels, cond, bad_x)
    optics = _optics(config, cond)
    meas_rng = np.random.default_rng(seeds.measurement)
    icsrc = make_icsrc(
        sources, pixels.mask, astrometry.guess, config, cond.fwhm, optics.apcorr_psf, meas_rng
    )
    exposure = Exposure(
        image=pixels.image,
        mask=pixels.mask,
        variance=pixels.variance,
        mask_planes=MASK_PLANES,
        psf=optics.psf,
        apcorr=optics.apcorr,
        icsrc=icsrc,
        metadata=_metadata(config, cond, index, astrometry.guess),
        wcs=astrometry.guess,
    )
    truth = _truth(config, cond, index, astrometry, optics, bad_x, sources)
    return exposure, truth


def _seeds(seed: int | np.random.SeedSequence) -> _Seeds:
    """Children built by key, not root.spawn(): reusing one SeedSequence gives the same exposure."""
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return _Seeds(
        *(np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, k)) for k in range(6))
    )


def _astrometry(config: SimConfig, pointing: Pointing, rng: np.random.Generator) -> _Astrometry:
    """A random camera distortion (drawn even when switched off), the true WCS, the first guess."""
    sip = sip_polynomials(rng, config.size, config.sip_corner_shift)
    true_wcs = make_wcs(
        pointing.ra,
        pointing.dec,
        pointing.rotation,
        config.size,
        config.pixel_scale,
        sip if config.sip_corner_shift > 0 else None,
    )
    guess, offset, rotation = first_guess(true_wcs, rng, config)
    return _Astrometry(true=true_wcs, guess=guess, offset=offset, rotation=rotation)


def _given(config: SimConfig, true_wcs: WCS, guess: WCS) -> _Astrometry:
    """A given true WCS and first guess, with the guess's offset (arcsec) and rotation (deg)."""
    centre = ((config.size[0] - 1) / 2.0, (config.size[1] - 1) / 2.0)
    true_c = true_wcs.all_pix2world([centre], 0)[0]
    guess_c = guess.all_pix2world([centre], 0)[0]
    xi, eta = tan_project(guess_c[0], guess_c[1], true_c[0], true_c[1])
    turn = guess.wcs.cd @ np.linalg.inv(true_wcs.wcs.cd)
    rotation = float(np.degrees(np.arctan2(turn[1, 0], turn[0, 0])))
    return _Astrometry(
        true=true_wcs, guess=guess, offset=float(np.hypot(xi, eta)), rotation=rotation
    )


def _optics(config: SimConfig, cond: Conditions) -> _Optics:
    """The PSF HDU (centred, truncated to psf_size², sum 1) and the flux-scale corrections.

    The HDU holds the fraction f_in of a star's flux, so the psf_flux correction is 1 / f_in.
    """
    nx, ny = config.size
    psf_img, f_in = psf_image(cond.fwhm, cond.beta, config.psf_size, cond.order)
    apcorr_psf = 1.0 / f_in
    apcorr_ap12 = 1.0 / float(moffat_enclosed(12.0, cond.fwhm, cond.beta))
    psf = Psf(image=psf_img.astype(np.float32), x=(nx - 1) / 2.0, y=(ny - 1) / 2.0, fwhm=cond.fwhm)
    terms = {
        name: ApCorrTerm(name, 1, np.array([[value, 0.0], [0.0, 0.0]]), config.apcorr_err)
        for name, value in (("psf_flux", apcorr_psf), ("ap_flux_12", apcorr_ap12))
    }
    apcorr = ApCorrMap(terms=MappingProxyType(terms), width=nx, height=ny)
    return _Optics(psf=psf, apcorr=apcorr, apcorr_psf=apcorr_psf, apcorr_ap12=apcorr_ap12)


def _metadata(config: SimConfig, cond: Conditions, index: int, guess: WCS) -> Metadata:
    """The header of exposure ``index``; the boresight is where the first guess points."""
    return Metadata(
        expid=1000 + index,
        visit=2000 + index,
        detector=index % 9,
        band="r",
        mjd_obs=cond.mjd,
        exptime=config.exptime,
        airmass=cond.airmass,
        bore_ra=float(guess.wcs.crval[0]),
        bore_dec=float(guess.wcs.crval[1]),
    )


def _truth(
    config: SimConfig,
    cond: Conditions,
    index: int,
    astrometry: _Astrometry,
    optics: _Optics,
    bad_x: int,
    sources: Table,
) -> Truth:
    """Everything the pipeline should recover, and the true sources."""
    return Truth(
        expid=1000 + index,
        wcs=astrometry.true,
        magzero=cond.magzero,
        colorterm=tuple(config.colorterm),
        fwhm=cond.fwhm,
        moffat_beta=cond.beta,
        sky=config.sky,
        read_noise=config.read_noise,
        sky_variance=cond.sky_var,
        exptime=config.exptime,
        mjd_obs=cond.mjd,
        epoch=cond.epoch,
        saturation=config.saturation - config.sky,
        bad_column=bad_x,
        apcorr_psf=optics.apcorr_psf,
        apcorr_ap12=optics.apcorr_ap12,
        first_guess_offset=astrometry.offset,
        first_guess_rotation=astrometry.rotation,
        sip_corner_shift=config.sip_corner_shift,
        size=tuple(config.size),
        sources=sources,
    )
