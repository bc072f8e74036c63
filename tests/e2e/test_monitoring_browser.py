"""The county's monitoring page in a real browser (Debian's chromium, Playwright) against a real
`countycloud serve` over 30 days of made-up hourly rollups (no VM): reached from the county's page,
the stacked chart drawn (four component paths, a bar per hour, a size on screen), another transaction
and window chosen with the form, the last hour's table; every request stays on the service (no CDN).
Screenshots in artifacts/screenshots/."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Browser, expect

from inventory.db import make_engine
from monitoring.rollups import HOUR_S, hour_of
from tests.support.browser import shot
from tests.support.monitoring_seed import seed_rollups

from .test_console_browser import service  # noqa: F401  (module fixture; `browser` is tests/e2e's)

pytestmark = pytest.mark.browser


def test_the_chart_page_draws_thirty_days(service: dict[str, str], browser: Browser) -> None:  # noqa: F811 (fixture)
    now = time.time()
    engine = make_engine(service["db"])
    try:
        seed_rollups(engine, "keelung", days=30, now=now, slow_hour=hour_of(now) - 30 * HOUR_S)
    finally:
        engine.dispose()
    context = browser.new_context(locale="en-US", viewport={"width": 1360, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    elsewhere: list[str] = []
    page.on("request", lambda request: None if request.url.startswith(service["base"])
            else elsewhere.append(request.url))
    page.goto(f"{service['base']}/login?next=/tenants/keelung")
    page.fill("#username", service["user"])
    page.fill("#password", service["password"])
    page.click("button[type=submit]")
    page.click("#monitoring-link")
    expect(page.locator("#timing-chart svg.chart")).to_be_visible()
    expect(page.locator("#last-hour tr")).to_have_count(1 + 5)  # header + the five seeded transactions
    # one day by default: 24 bars, each with its tooltip
    assert page.locator("#timing-chart path.network").get_attribute("d").count("z") == 24  # type: ignore[union-attr]
    expect(page.locator("#timing-chart rect.hour")).to_have_count(24)

    page.select_option("select[name=transaction]", "report")
    page.fill("input[name=days]", "30")
    page.click("#chart-form button[type=submit]")
    expect(page).to_have_url(f"{service['base']}/tenants/keelung/monitoring?transaction=report&source=real_user"
                             "&days=30")
    for component in ("network", "queue", "app", "db"):
        d = page.locator(f"#timing-chart path.{component}").get_attribute("d")
        assert d is not None and d.count("z") == 30 * 24
    box = page.locator("#timing-chart svg.chart").bounding_box()
    assert box is not None and box["width"] > 600 and box["height"] > 120
    expect(page.locator("#timing-chart polyline.p95")).to_have_count(1)
    shot(page, "console_monitoring_30d.png")
    assert elsewhere == []
    context.close()
