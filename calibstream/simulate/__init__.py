"""Simulated characterized exposures, their ground truth and one reference catalog.

This is the tests' ground truth, so each ingredient is there to catch a real
pipeline mistake: a TAN-SIP WCS with a first guess off by arcseconds
(astrometric fit), proper motions over ten years (epoch propagation), a colour
term and a per-exposure zero-point (photometric calibration), a truncated
PSF image with its aperture correction (flux scale), saturated stars, a bad
column, repaired cosmic rays and resolved galaxies (flags, star/galaxy
confusion), and noise exactly described by the variance plane.

All sources live on one patch of sky (:class:`~.sky.Sky`, made once per
survey), so overlapping exposures see the same stars and galaxies and one
reference catalog covers them all. Everything is vectorised numpy and
deterministic from the seed (one ``SeedSequence`` child per exposure and per
component, so switching cosmic rays off does not change the noise).

Conventions the pipeline must share (see also :class:`~.truth.Truth`):

* pixel coordinates are 0-based, pixel centres are integers;
* ``flux`` in the truth is the *total* flux in electrons; stars are rendered
  on stamps large enough to lose < 2e-4 of it; galaxies are Sérsic profiles
  truncated at 5 (n=1) or 8 (n=4) half-light radii, normalised so that the
  truncated profile holds exactly ``flux``;
* the PSF HDU is the pixel-integrated Moffat centred on a pixel, truncated to
  ``psf_size``² and normalised to sum 1; it holds the fraction ``f_in`` of a
  star's flux, and the APCORR ``psf_flux`` term is exactly ``1 / f_in``;
* ``MAGZERO``: ``m_ref_colour_corrected = MAGZERO - 2.5 log10(flux / EXPTIME)``
  with ``m_ref_colour_corrected = r + c0 + c1 (r-i) + c2 (r-i)²`` of the true
  magnitudes.

Import from the defining modules (this package re-exports nothing):

* :mod:`.config` — :class:`SimConfig`, ``MASK_PLANES`` and shared constants;
* :mod:`.geometry` — epochs, TAN projection, proper motion, the WCSs;
* :mod:`.sky` — pointings and the survey's true stars and galaxies;
* :mod:`.refcat` — the Gaia/PS1-like reference catalog drawn from the stars;
* :mod:`.conditions` — one exposure's seeing, zero-point, airmass and time;
* :mod:`.sources` — one exposure's truth table (positions, fluxes, S/N);
* :mod:`.render` — the noiseless model (Moffat stars, Sérsic galaxies ⊗ PSF);
* :mod:`.pixels` — noise, detection and saturation masks, bad column, cosmic rays;
* :mod:`.icsrc` — characterization's bright-source catalog;
* :mod:`.truth` — :class:`Truth` and its FITS file (``write_truth``, ``read_truth``);
* :mod:`.exposure` — :func:`simulate_exposure`, one exposure and its truth;
* :mod:`.survey` — :func:`simulate_survey` and :func:`write_simulation`.
"""
