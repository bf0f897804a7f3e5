"""The quality verdicts (calibstream/verdicts.py): each a flag and a reason code, every
threshold from ``[verdicts]``, judged only on what was fitted; the status they give."""

from __future__ import annotations

import numpy as np

from calibstream.config import Config, config_from_dict
from calibstream.summary_stats import SummaryStats
from calibstream.verdicts import CODES, Figures, Partial, flagged, judge, status_of

FIDUCIAL = Config().fiducials["r"]
#: An exposure at the fiducial conditions, calibrated well.
GOOD = SummaryStats(psfSigma=1.682, skyBg=1000.0, magLim=24.12, astromOffsetMean=0.012)
FIGURES = Figures(12.0, 40, 0.02, 30, np.linspace(-0.2, 1.2, 30))


def test_a_good_exposure_is_ok_and_every_verdict_is_judged():
    verdicts = judge(GOOD, FIGURES, 30.0, FIDUCIAL, Config().verdicts)
    assert [v.code for v in verdicts] == list(CODES)
    assert flagged(verdicts) == [] and status_of(verdicts, None) == "ok"
    assert all(v.reason and v.group == CODES[v.code][0] for v in verdicts)


def test_each_figure_past_its_threshold_flags_its_code_with_words():
    cases = {
        "astrom_offset": ({"astromOffsetMean": 0.6}, {}),
        "astrom_scatter": ({}, {"astrms_mas": 80.0}),
        "astrom_few_matches": ({}, {"astnmatch": 4}),
        "phot_scatter": ({}, {"magzero_rms": 0.09}),
        "phot_few_stars": ({}, {"magzero_nobj": 3}),
        "phot_colour_coverage": ({}, {"colours": np.full(30, 0.4)}),
        "psf_too_large": ({"psfSigma": 2.7}, {}),
        "sky_too_bright": ({"skyBg": 2500.0}, {}),
        "too_shallow": ({"magLim": 23.4}, {}),
    }
    for code, (stats, figures) in cases.items():
        verdicts = judge(
            SummaryStats(**{**GOOD.as_record(), **stats}),
            Figures(**{**FIGURES.__dict__, **figures}),
            30.0, FIDUCIAL, Config().verdicts,
        )  # fmt: skip
        assert flagged(verdicts) == [code], code
        [verdict] = [v for v in verdicts if v.flag]
        assert "allowed" in verdict.reason and verdict.value is not None
        assert status_of(verdicts, None) == "warning"


def test_thresholds_are_configuration():
    strict = config_from_dict({"verdicts": {"max_astrms": 10.0, "min_photometric_stars": 50}})
    verdicts = judge(GOOD, FIGURES, 30.0, FIDUCIAL, strict.verdicts)
    assert flagged(verdicts) == ["astrom_scatter", "phot_few_stars"]
    # depth against the fiducial m5 scaled to the exposure time: 60 s goes 0.38 mag deeper
    deeper = SummaryStats(**{**GOOD.as_record(), "magLim": 24.12 + 0.376})
    assert flagged(judge(deeper, FIGURES, 60.0, FIDUCIAL, Config().verdicts)) == []
    assert "too_shallow" in flagged(judge(GOOD, FIGURES, 240.0, FIDUCIAL, Config().verdicts))


def test_only_what_was_fitted_is_judged_and_unknown_is_not_flagged():
    no_astrometry = Figures(None, None, 0.02, 30, FIGURES.colours)
    groups = {v.group for v in judge(GOOD, no_astrometry, 30.0, FIDUCIAL, Config().verdicts)}
    assert groups == {"photometric", "image"}
    no_photometry = Figures(12.0, 40, None, None, None)
    groups = {v.group for v in judge(GOOD, no_photometry, 30.0, FIDUCIAL, Config().verdicts)}
    assert groups == {"astrometric", "image"}
    # ASTRMS undefined (a fit without freedom): its verdict unknown, the others judged
    unknown = judge(GOOD, Figures(None, 1, 0.02, 30, None), 30.0, FIDUCIAL, Config().verdicts)
    by_code = {v.code: v for v in unknown}
    assert not by_code["astrom_scatter"].flag and "unknown" in by_code["astrom_scatter"].reason
    assert by_code["astrom_few_matches"].flag
    assert {v.group for v in judge(GOOD, FIGURES, 30.0, None, Config().verdicts)} == {
        "astrometric",
        "photometric",
    }  # no fiducial for the band: no image verdict


def test_partial_wins_over_warnings():
    partial = Partial("photometry", "photometry", "too few stars")
    verdicts = judge(SummaryStats(psfSigma=3.0), Figures(12.0, 40, None, None, None), 30.0,
                     FIDUCIAL, Config().verdicts)  # fmt: skip
    assert flagged(verdicts) == ["psf_too_large"]
    assert status_of(verdicts, partial) == "partial"
