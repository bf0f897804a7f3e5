"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright (from
PyPI, pointed at /usr/bin/chromium; no browser download), against a running
``calibstream demo --keep`` and against a read model holding 10,000 exposures.

Screenshots go to ``$CALIBSTREAM_TEST_OUTPUT`` (default: ``test-output/`` in the repo).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest_services import *  # noqa: F403 (the fixtures: redis_factory)
from test_dashboard import metric_samples

from harness.processes import free_port
from harness.workers import DashboardProcess
from streams.dashboard_guard import TOKEN_ENV
from streams.kafka_admin import port_open
from streams.readmodel import RedisReadModel
from streams.settings import write_stream_config

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CALIBSTREAM_CHROMIUM", "/usr/bin/chromium")
OUTPUT = Path(os.environ.get("CALIBSTREAM_TEST_OUTPUT", Path(__file__).parents[1] / "test-output"))
FIRST_RENDER_BUDGET_MS = 2000


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package chromium; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Page:
    """A browser page that records console errors and uncaught exceptions."""

    def __init__(self, browser) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 1700})
        self.errors: list[str] = []
        self.requests: list[str] = []  # every URL the page asked for (offline: all local)
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        self.page.on(
            "console",
            lambda msg: self.errors.append(msg.text) if msg.type == "error" else None,
        )

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready='1']", timeout=30000)

    def points(self, chart: str, trace: int | None = None) -> int:
        """Points drawn in a plotly chart (all traces, or one)."""
        return self.page.evaluate(
            """([id, trace]) => {
                const data = document.getElementById(id).data || [];
                const traces = trace === null ? data : [data[trace]];
                return traces.reduce((n, t) => n + t.x.filter((v) => v !== null).length, 0);
            }""",
            [chart, trace],
        )

    def screenshot(self, name: str) -> Path:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        path = OUTPUT / name
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path


def metrics(url: str) -> dict[tuple[str, tuple], float]:
    return metric_samples(urllib.request.urlopen(url + "metrics", timeout=10).read().decode())


# ---------------------------------------------------------------- against a running demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[tuple[str, Path, Path]]:
    """``calibstream demo --keep``: (dashboard URL, its stream.toml, its output folder)."""
    out = tmp_path_factory.mktemp("demo")
    log = open(out / "demo.log", "w+")  # noqa: SIM115 - closed below
    argv = ["demo", "--out", str(out), "--n", "4", "--size", "768", "768", "--port", "0"]
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "streams.cli", *argv, "--keep"],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 400
    text = ""
    while "running until ^C" not in text:
        assert process.poll() is None, f"the demo stopped:\n{(out / 'demo.log').read_text()}"
        assert time.monotonic() < deadline, f"the demo did not settle:\n{text}"
        time.sleep(0.5)
        text = (out / "demo.log").read_text()
    url = re.search(r"the dashboard: (http://\S+)", text).group(1)
    config = Path(re.search(r"--config (\S+) FILE", text).group(1))
    yield url, config, out
    process.send_signal(signal.SIGTERM)
    process.wait(120)
    log.close()
    text = (out / "demo.log").read_text()
    port = int(re.search(r":(\d+)/$", url).group(1))
    assert not port_open("127.0.0.1", port), "the dashboard was left running"
    assert "stopping the dashboard" in text, text


def test_the_page_follows_the_demo_live(browser, demo):
    url, config, out = demo
    page = Page(browser)
    page.open(url)
    # Three calibrated exposures (the fourth is the truncated file): one point each.
    assert page.points("zp-chart") == 3
    failure = page.page.locator("#failures tbody tr")
    assert failure.count() == 1
    assert "truncated" in failure.locator("td.reason").inner_text()
    assert page.page.locator("#n-ok").inner_text() == "3"

    # A new exposure, submitted now, appears without a reload.
    source = sorted((out / "simulated").glob("exp_*[0-9].fits"))[0]
    fresh = out / "fresh.fits"
    with fits.open(source) as hdul:
        hdul[0].header["EXPID"] = 1100
        hdul[0].header["VISIT"] = 2100
        hdul.writeto(fresh)
    submit = [sys.executable, "-m", "streams.cli", "submit", "--config", str(config), str(fresh)]
    subprocess.run(submit, check=True, capture_output=True, timeout=60)
    page.page.wait_for_function(
        "() => document.getElementById('zp-chart').data.reduce((n, t) => n + t.x.length, 0) === 4",
        timeout=90000,
    )
    # The EXPID column, matched exactly: "1100" may also appear in a time or a figure.
    expids = page.page.locator("#recent tbody tr td:nth-child(2)").all_inner_texts()
    assert expids.count("1100") == 1, expids
    page.screenshot("dashboard-demo.png")
    assert page.errors == []
    assert page.requests and all(u.startswith(url) for u in page.requests), page.requests

    # The counters agree with what happened: 4 calibrated, 1 failed (at reading).
    m = metrics(url)
    assert m[("calibstream_events_processed_total", (("stage", "sink"),))] == 4
    assert m[("calibstream_events_processed_total", (("stage", "sink-failures"),))] == 1
    assert m[("calibstream_events_failed_total", (("stage", "read"),))] == 1
    assert m[("calibstream_exposures", (("status", "ok"),))] == 4
    assert m[("calibstream_exposures", (("status", "failed"),))] == 1
    assert m[("calibstream_stage_duration_seconds_count", (("stage", "detect"),))] == 5
    assert m[("calibstream_latency_seconds_count", ())] == 4
    # Every topic read to its end, once the workers have committed (every second).
    deadline = time.monotonic() + 30
    while True:
        lag = [v for (name, _), v in metrics(url).items() if name == "calibstream_consumer_lag"]
        if (lag and sum(lag) == 0) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(lag) == 6 * 4 and sum(lag) == 0  # 6 consumed topics x 4 partitions


def test_the_exposure_page_draws_its_quality_plots(browser, demo):
    url, _, out = demo
    page = Page(browser)
    page.open(f"{url}exposure/1000")
    summary = (out / "results" / "exposures" / "1000" / "summary.json").read_text()
    astnmatch = int(re.search(r'"ASTNMATCH": (\d+)', summary).group(1))
    assert page.points("astrometry-chart", 1) == astnmatch  # one marker per used match
    assert page.points("astrometry-chart", 0) == 2 * astnmatch  # and its residual vector
    fitted, reserved = page.points("zp-mag-chart", 0), page.points("zp-mag-chart", 1)
    assert fitted >= 5 and reserved >= 1
    assert page.points("zp-colour-chart", 1) == reserved
    assert page.points("distortion-chart", 1) == 81
    assert "SIP order" in page.page.locator("#distortion-note").inner_text()
    page.screenshot("dashboard-exposure.png")

    page.open(f"{url}exposure/1003")  # the truncated file: its reason, no plots
    assert "failed" in page.page.locator("#status").inner_text()
    assert "truncated" in page.page.locator("#summary").inner_text()
    assert page.errors == []
    assert all(u.startswith(url) for u in page.requests), page.requests


# ---------------------------------------------------------------- 10,000 exposures


def test_ten_thousand_exposures_render_within_budget(browser, redis_factory, tmp_path):
    redis = redis_factory(workdir=tmp_path / "redis")
    model = RedisReadModel(redis.url)
    rng = np.random.default_rng(1)
    t0 = time.time() * 1000 - 10_000 * 500
    for i in range(10_000):
        ok = i % 50 != 0
        row = {
            "status": "ok" if ok else "failed",
            "expid": 100_000 + i,
            "visit": 3000 + i // 9,
            "detector": i % 9,
            "band": "ugrizy"[(i // 900) % 6],
            "mjd_obs": 61000 + i * 40 / 86400,
            "persisted_ms": t0 + 500 * i,
        }
        if ok:
            row.update(
                magzero=28 + rng.normal(0, 0.03),
                magzero_err=0.002,
                magzero_rms=abs(rng.normal(0.02, 0.003)),
                astrms_mas=abs(rng.normal(12, 2)),
                astnmatch=int(rng.integers(40, 200)),
                latency_s=float(rng.gamma(4, 0.5)),
                exptime=30.0,  # the night's quality charts draw these too
                psf_fwhm_arcsec=abs(rng.normal(0.8, 0.1)),
                sky_bg=abs(rng.normal(1000, 100)),
                maglim=24.1 + rng.normal(0, 0.1),
                efftime=abs(rng.normal(28, 4)),
            )
        else:
            row.update(stage="astrometry", error="NoReferenceStarsError", reason=f"case {i}")
        model.record_metrics(row["expid"], row)
    config = write_stream_config(
        tmp_path / "stream.toml",
        broker=f"kafka://127.0.0.1:{free_port()}",  # nothing there: lag is reported missing
        redis=redis.url,
        output_root=str(tmp_path / "out"),
    )
    with DashboardProcess(config, tmp_path / "dashboard") as dashboard:
        page = Page(browser)
        page.open(dashboard.url)
        timings = page.page.evaluate("window.calibstreamTimings")
        first_render = timings["drawnMs"]
        print(
            f"10,000 exposures: first render {first_render:.0f} ms after navigation "
            f"(scripts loaded {timings['scriptsMs']:.0f}, data {timings['dataMs']:.0f}); "
            f"the night's quality charts by {timings['nightMs']:.0f} ms"
        )
        assert first_render < FIRST_RENDER_BUDGET_MS
        assert page.page.locator("#n-ok").inner_text() == "9800"
        shown = page.points("zp-chart")
        assert 475 <= shown < 500  # the newest page of 500 (2% of them failed)
        page.page.click("#older")
        page.page.wait_for_function(
            f"() => document.getElementById('zp-chart').data"
            f".reduce((n, t) => n + t.x.length, 0) > {shown}"
        )
        assert "no answer" in page.page.locator("#broker").inner_text()
        page.screenshot("dashboard-10000.png")

        page.open(f"{dashboard.url}?band=r&detector=4")  # a filtered view is a link
        names = page.page.evaluate("document.getElementById('zp-chart').data.map((t) => t.name)")
        assert names == ["band r"]
        expected = sum(1 for i in range(10_000) if (i // 900) % 6 == 2 and i % 9 == 4 and i % 50)
        assert page.points("zp-chart") == expected
        assert page.page.locator("#recent tbody tr").count() == min(50, expected)
        assert page.errors == []


# ---------------------------------------------------------------- with a token


def status_of(url: str, **headers: str) -> int:
    try:
        return urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=10
        ).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_dashboard_that_asks_for_a_token(browser, redis_factory, tmp_path, monkeypatch):
    """Bound to 127.0.0.1 but asking for the token all the same (dashboard_require_token):
    nothing answers without it; the page opened once with ?token= draws, and follows live
    (its fetch and EventSource calls carry the cookie it got)."""
    redis = redis_factory(workdir=tmp_path / "redis")
    model = RedisReadModel(redis.url)
    t0 = time.time() * 1000 - 300 * 1000
    rows = [
        {"status": "ok", "expid": 7000 + i, "visit": 400 + i // 10, "detector": i % 10,
         "band": "gr"[i % 2], "mjd_obs": 61000 + i / 1000, "persisted_ms": t0 + 1000 * i,
         "magzero": 28 + 0.01 * (i % 7), "magzero_err": 0.002, "magzero_rms": 0.02,
         "astrms_mas": 11.0, "astnmatch": 80, "latency_s": 2.0}
        for i in range(300)
    ]  # fmt: skip
    model.record_metrics_batch((row["expid"], row) for row in rows)
    token = secrets.token_urlsafe(32)  # made here: no token is written in the repository
    monkeypatch.setenv(TOKEN_ENV, token)
    config = write_stream_config(
        tmp_path / "stream.toml",
        broker=f"kafka://127.0.0.1:{free_port()}",
        redis=redis.url,
        output_root=str(tmp_path / "out"),
        dashboard_require_token=True,
    )
    with DashboardProcess(config, tmp_path / "dashboard") as dashboard:
        url = dashboard.url
        for path in ("", "exposure/7000", "static/dashboard.js", "api/summary", "metrics"):
            assert status_of(url + path) == 401, path
        assert status_of(url + "metrics", Authorization=f"Bearer {token}") == 200

        stranger = Page(browser)
        assert stranger.page.goto(url).status == 401
        stranger.page.close()

        page = Page(browser)
        page.open(f"{url}?token={token}")
        assert page.page.url == url  # the token left the address bar
        assert page.points("zp-chart") == 300
        assert page.page.locator("#n-ok").inner_text() == "300"
        new = {**rows[-1], "expid": 7999, "persisted_ms": time.time() * 1000}
        model.record_metrics(7999, new)  # arrives through the live stream
        page.page.wait_for_function(
            "() => document.getElementById('zp-chart').data"
            ".reduce((n, t) => n + t.x.length, 0) === 301",
            timeout=30000,
        )
        assert page.page.locator("#live").inner_text() == "live"
        page.screenshot("dashboard-token.png")
        page.open(f"{url}exposure/7999")  # another page, the same cookie
        assert "7999" in page.page.locator("body").inner_text()
        assert page.errors == [] and all(u.startswith(url) for u in page.requests)
