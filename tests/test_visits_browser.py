"""The visits on the dashboard in Debian's Chromium (Playwright, as
tests/test_dashboard_browser.py; no browser download): a dashboard process on its own
against a Redis rebuilt from hand-made visit folders (no brokers, no workers).

The night: six visits of the 3×3 default camera, their zero-points drifting, visit 7 with
detector 4 failed and detector 8 missing. The night's page draws a zero-point per visit with
its error bar; the focal plane of visit 7 draws 9 detectors, 1 an outline (missing) and 1
failed, changes colours when the quantity changes, links each detector to its exposure's
page, asks nothing of any other origin, logs no error, and follows the late detector 8
without a reload. Screenshots: ``visits-night.png``, ``visit-focal-plane.png`` (and
``visit-focal-plane-status.png``) in ``test-output/``.
"""

from __future__ import annotations

import pytest
from conftest_services import *  # noqa: F403 (the fixtures: redis_factory)
from test_dashboard_browser import Page
from test_dashboard_browser import browser as browser  # the fixture
from test_visits_dashboard import (
    FAILED,
    MISSING,
    MJD0,
    VISIT,
    expid_of,
    record_exposures,
    visit_state,
    write_visit_folder,
)

from harness.processes import free_port
from harness.workers import DashboardProcess
from streams.readmodel import RedisReadModel
from streams.rebuild import rebuild_read_model, record_visit_folder
from streams.settings import write_stream_config

pytestmark = pytest.mark.slow

#: visit -> its zero-point (the night's transparency drifting); VISIT is the bad one.
NIGHT = {3: 28.00, 4: 27.98, 5: 27.95, 6: 27.97, VISIT: 27.99, 8: 28.01}


@pytest.fixture(scope="module")
def night(tmp_path_factory, redis_factory):
    root = tmp_path_factory.mktemp("visits")
    out = root / "out"
    redis = redis_factory(workdir=root / "redis")
    model = RedisReadModel(redis.url)
    for i, (visit, zp) in enumerate(NIGHT.items()):
        state = visit_state(visit, None if visit == VISIT else range(9), zp=zp)
        write_visit_folder(out, state, timed_out=visit == VISIT)
        record_exposures(model, state, MJD0 + i * 0.01)
    assert rebuild_read_model(out, model) == 0  # the visits, from their folders
    assert len(model.visits()) == len(NIGHT)
    config = write_stream_config(
        root / "stream.toml", broker=f"kafka://127.0.0.1:{free_port()}", redis=redis.url,
        output_root=str(out),
    )  # fmt: skip
    with DashboardProcess(config, root / "dashboard") as dashboard:
        yield out, model, dashboard.url
    model.close()


def fills(page: Page) -> dict[str, str]:
    """Each detector shape's fill attribute, by detector id."""
    return page.page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#focal-plane polygon')]
            .map((p) => [p.dataset.detector, p.getAttribute('fill')]))"""
    )


def test_the_nights_visit_zero_points(browser, night):
    _, _, url = night
    page = Page(browser)
    page.open(f"{url}visits")
    assert page.points("visit-zp-chart") == len(NIGHT)
    chart = page.page.evaluate(
        """() => document.getElementById('visit-zp-chart').data.map((t) =>
            ({name: t.name, y: t.y, err: t.error_y.array, visits: t.customdata}))"""
    )
    [trace] = chart
    assert trace["name"] == "band r" and sorted(trace["visits"]) == sorted(NIGHT)
    assert all(0 < e < 0.01 for e in trace["err"])  # an error bar on every visit
    for visit, y in zip(trace["visits"], trace["y"], strict=True):
        assert abs(y - NIGHT[visit]) < 0.005, visit
    assert page.page.locator("#n-complete").inner_text() == str(len(NIGHT) - 1)
    assert page.page.locator("#n-incomplete").inner_text() == "1"
    rows = page.page.locator("#visits tbody tr")
    assert rows.count() == len(NIGHT)
    bad = page.page.locator("#visits tbody tr.st-partial")
    assert bad.count() == 1 and "7 / 0 / 1 / 1" in bad.inner_text()
    assert page.page.locator(f"#visits a[href='/visits/{VISIT}']").count() == 1
    assert page.errors == []
    assert all(u.startswith(url) for u in page.requests), page.requests
    page.screenshot("visits-night.png")


def test_the_focal_plane_of_a_visit(browser, night):
    out, model, url = night
    page = Page(browser)
    page.open(f"{url}visits/{VISIT}")
    shapes = page.page.locator("#focal-plane polygon")
    assert shapes.count() == 9
    missing = page.page.locator("#focal-plane polygon[data-status='missing']")
    assert missing.count() == 1 and missing.get_attribute("data-detector") == str(MISSING)
    assert missing.evaluate("(p) => getComputedStyle(p).fill") == "none"  # an outline
    assert missing.evaluate("(p) => getComputedStyle(p).strokeDasharray") != "none"
    failed = page.page.locator("#focal-plane polygon[data-status='failed']")
    assert failed.count() == 1 and failed.get_attribute("data-detector") == str(FAILED)
    assert page.page.locator("#focal-plane polygon[data-status='ok']").count() == 7

    links = page.page.locator("#focal-plane a")
    hrefs = {links.nth(i).get_attribute("href") for i in range(links.count())}
    assert hrefs == {f"/exposure/{expid_of(VISIT, d)}" for d in range(9) if d != MISSING}

    by_offset = fills(page)
    assert by_offset[str(MISSING)] == "none"
    assert len({by_offset[str(d)] for d in range(9) if d not in (FAILED, MISSING)}) == 7
    page.page.select_option("#quantity", "seeing")
    by_seeing = fills(page)
    assert by_seeing != by_offset and by_seeing[str(MISSING)] == "none"
    assert "seeing" in page.page.locator("#legend").inner_text()
    page.page.select_option("#quantity", "astrms")
    assert fills(page) not in (by_offset, by_seeing)
    page.page.select_option("#quantity", "offset")
    assert fills(page) == by_offset
    page.screenshot("visit-focal-plane.png")
    page.page.select_option("#quantity", "status")
    by_status = fills(page)
    assert by_status[str(FAILED)] == "rgb(179, 38, 30)"
    assert {by_status[str(d)] for d in range(9) if d not in (FAILED, MISSING)} == {
        "rgb(27, 127, 76)"
    }

    summary = page.page.locator("#summary").inner_text()
    assert "truncated file" in summary and "timed out" in summary
    assert page.page.locator("#detectors tbody tr.st-missing").count() == 1
    assert page.errors == []
    assert all(u.startswith(url) for u in page.requests), page.requests
    page.screenshot("visit-focal-plane-status.png")

    # The late detector reports: the visit agent persists the folder again and records
    # it; the page follows (it polls), with no reload.
    late = visit_state(VISIT, range(9), zp=NIGHT[VISIT])
    folder = write_visit_folder(out, late, timed_out=False)
    assert record_visit_folder(model, folder)
    page.page.wait_for_function(
        "() => !document.querySelector(\"#focal-plane polygon[data-status='missing']\")",
        timeout=15000,
    )
    assert page.page.locator("#status").inner_text() == "complete"
    assert page.page.locator("#focal-plane a").count() == 9
    assert page.errors == []

    page.page.click(f"#focal-plane a[href='/exposure/{expid_of(VISIT, 0)}']")
    page.page.wait_for_url(f"{url}exposure/{expid_of(VISIT, 0)}")
