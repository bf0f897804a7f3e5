"""The night's quality on the dashboard, in Debian's Chromium (Playwright, as
tests/test_dashboard_browser.py): per-band charts of seeing, sky, m5 and t_eff beside the
zero-point, seeing and depth in the latest exposures, status colours for warnings and
partial calibrations, and on an exposure's page the PSF-star whiskers and the summary in
readable units; ``/metrics``' gauges of the latest seeing, depth and t_eff per band.

The night: 1024² exposures whose seeing worsens and sky brightens as it goes on, a cloud
over two of them, every fourth relabelled band g (an r-band simulation: the g fiducials'
sky is fainter, so those are "ok with warnings"), one 10° from every reference star
(partial) and one truncated (failed). Screenshots go to ``test-output/``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest_services import *  # noqa: F403 (the fixtures: redis_factory)
from test_dashboard_browser import Page, metrics
from test_dashboard_browser import browser as browser  # the fixture

from calibstream.io.exposure import write_exposure
from calibstream.io.outputs import read_summary
from calibstream.simulate.config import SimConfig
from calibstream.simulate.exposure import simulate_exposure
from calibstream.simulate.sky import dithered_pointings, make_sky
from harness.processes import free_port
from harness.workers import DashboardProcess
from streams.cli import main as cli_main
from streams.readmodel import RedisReadModel
from streams.rebuild import rebuild_read_model
from streams.settings import write_stream_config

pytestmark = pytest.mark.slow

N = 10


def simulate_night(folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    base = SimConfig(size=(1024, 1024), zeropoint_scatter=0.0)
    pointings = dithered_pointings(base, N, np.random.default_rng(3))
    sky = make_sky(base, pointings, 4)
    paths = []
    for i in range(N):
        config = dataclasses.replace(
            base, fwhm=3.2 + 0.25 * i, sky=800.0 + 120.0 * i,
            zeropoint=base.zeropoint - (0.3 if i in (4, 5) else 0.0),
        )  # fmt: skip
        seed = np.random.SeedSequence([5, i])
        exposure, truth = simulate_exposure(config, seed, index=i, sky=sky, pointing=pointings[i])
        if i % 4 == 3:
            metadata = dataclasses.replace(exposure.metadata, band="g")
            exposure = dataclasses.replace(exposure, metadata=metadata)
        paths.append(folder / f"exp_{truth.expid}.fits")
        write_exposure(exposure, paths[-1])
    sky.refcat.write(folder / "refcat.fits")
    far, cut = folder / "far.fits", folder / "cut.fits"
    with fits.open(paths[2]) as hdul:
        hdul["IMAGE"].header["CRVAL2"] += 10.0
        hdul[0].header["EXPID"], hdul[0].header["MJD-OBS"] = 1098, hdul[0].header["MJD-OBS"] + 0.02
        hdul.writeto(far)
    with fits.open(paths[1]) as hdul:
        hdul[0].header["EXPID"] = 1099
        hdul.writeto(cut)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    return [*paths, far, cut]


@pytest.fixture(scope="module")
def night(tmp_path_factory, redis_factory):
    root = tmp_path_factory.mktemp("night")
    files = simulate_night(root / "sim")
    store = root / "store"
    assert cli_main(["ingest-refcat", str(root / "sim" / "refcat.fits"), "--out", str(store)]) == 0
    out = root / "out"
    assert cli_main(["calibrate", *map(str, files), "--refcat", str(store), "--out", str(out)]) == 1
    redis = redis_factory(workdir=root / "redis")
    assert rebuild_read_model(out, RedisReadModel(redis.url)) == N + 2
    config = write_stream_config(
        root / "stream.toml", broker=f"kafka://127.0.0.1:{free_port()}", redis=redis.url,
        output_root=str(out),
    )  # fmt: skip
    with DashboardProcess(config, root / "dashboard") as dashboard:
        yield out, dashboard.url


def statuses(out: Path) -> dict[str, str]:
    return {p.name: read_summary(p)["status"] for p in (out / "exposures").iterdir()}


def test_the_night_charts_and_the_status_colours(browser, night):
    out, url = night
    found = statuses(out)
    assert found["1098"] == "partial" and found["1099"] == "failed"
    warned = sorted(k for k, v in found.items() if v == "warning")
    assert {"1003", "1007", "1009"} <= set(warned)  # the g relabels, the worst seeing
    calibrated = [k for k, v in found.items() if v != "failed"]
    page = Page(browser)
    page.open(url)
    for chart in ("seeing-chart", "sky-chart", "m5-chart", "teff-chart"):
        with_zero_point = len(calibrated) - 1  # the partial one has no m5 or t_eff
        expected = len(calibrated) if chart in ("seeing-chart", "sky-chart") else with_zero_point
        if chart == "seeing-chart":
            expected -= 1  # no pixel scale without astrometry: no seeing in arcsec
        assert page.points(chart) == expected, chart
    names = page.page.evaluate("document.getElementById('m5-chart').data.map((t) => t.name)")
    assert names == ["band g", "band r"]
    seeing = page.page.evaluate(
        "document.getElementById('seeing-chart').data.flatMap((t) => t.y)"
    )  # fmt: skip
    assert 0.7 < min(seeing) < max(seeing) < 1.4  # worsening through the night
    rows = page.page.locator("#recent tbody tr")
    classes = [rows.nth(i).get_attribute("class") for i in range(rows.count())]
    assert classes.count("st-warning") == len(warned)
    assert classes.count("st-partial") == 1 and classes.count("st-failed") == 1
    assert page.page.locator("#n-warning").inner_text() == str(len(warned))
    assert page.page.locator("#n-partial").inner_text() == "1"
    text = page.page.locator("#recent").inner_text()
    assert "ok with warnings (phot_scatter, sky_too_bright)" in text  # a g relabel
    assert "ok with warnings (psf_too_large, too_shallow)" in text  # the worst seeing
    assert "partial (astrometry)" in text
    assert page.errors == []
    page.screenshot("dashboard-night.png")
    gauges = metrics(url)
    for name in ("calibstream_seeing_arcsec", "calibstream_maglim", "calibstream_efftime_seconds"):
        assert {labels for n, labels in gauges if n == name} == {
            (("band", "g"),),
            (("band", "r"),),
        }, name
    assert gauges[("calibstream_exposures", (("status", "partial"),))] == 1
    assert gauges[("calibstream_exposures", (("status", "warning"),))] == len(warned)


def test_an_exposure_page_in_readable_units_with_psf_whiskers(browser, night):
    out, url = night
    page = Page(browser)
    page.open(f"{url}exposure/1009")  # the worst seeing: PSF too large
    summary = page.page.locator("#summary").inner_text()
    assert "UTC (MJD 61000.01080)" in summary  # a date, not epoch milliseconds
    assert not re.search(r"\b1[6-9]\d{11}\b", summary), "epoch milliseconds shown"
    assert re.search(r"seeing \(PSF FWHM\)\s+1\.\d\d″", summary)
    assert "mag" in summary and "e⁻/px" in summary
    verdicts = page.page.locator("#verdicts").inner_text()
    assert "psf_too_large" in verdicts and "flagged" in verdicts
    stars = int(fits.getheader(out / "exposures" / "1009" / "calexp.fits")["NPSFSTAR"])
    assert page.points("whiskers-chart", 2) == stars > 5  # a whisker per PSF star
    assert "warning" in page.page.locator("#status").get_attribute("class")
    assert page.errors == []
    page.screenshot("exposure-quality.png")

    page = Page(browser)
    page.open(f"{url}exposure/1098")  # astrometry did not fit
    assert "partial" in page.page.locator("#status").get_attribute("class")
    assert "no reference stars" in page.page.locator("#summary").inner_text()
    assert "no astrometric residuals" in page.page.locator("#astrometry-note").inner_text()
    assert "first-guess WCS" in page.page.locator("#distortion-note").inner_text()
    assert page.points("whiskers-chart", 2) > 5
    assert page.errors == []
    page.screenshot("exposure-partial.png")
