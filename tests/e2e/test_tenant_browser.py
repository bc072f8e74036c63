"""The county's main flow in a real browser: Debian's chromium, driven by Playwright, against a real
uvicorn server on 127.0.0.1 with a seeded SQLite database.

clerk: certify (and see an over-balance refusal) → prepare a voucher → submit it;
chief accountant: sign; agency head: sign; accountant: pay; then the execution report shows the
payment. Screenshots of the refusal, the approved voucher and the report are kept in artifacts/screenshots/.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tenant_app.seed import DEMO_PASSWORD
from tests.support.browser import shot

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
AMOUNT = 50_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m tenant_app seed`, then `serve` on a free port; yields the base URL."""
    work = tmp_path_factory.mktemp("tenant")
    port = _free_port()
    env = {**os.environ, "TENANT_APP_DATABASE_URL": f"sqlite:///{work / 'county.db'}",
           "TENANT_APP_HOST": "127.0.0.1", "TENANT_APP_PORT": str(port),
           "TENANT_APP_SECRET": "browser-test-secret-0123456789", "TENANT_APP_COUNTY_NAME": "示範縣"}
    subprocess.run([sys.executable, "-m", "tenant_app", "seed"], env=env, cwd=REPO, check=True,
                   capture_output=True, timeout=300)
    log = (work / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "tenant_app", "serve", "--log-level", "info"],
                               env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tenant app did not start; see {work / 'server.log'}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _login(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#username", username)
    page.fill("#password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#flash.ok")).to_contain_text("歡迎")
    expect(page.locator("#current-agency")).to_have_text("財政處")


def _logout(page: Page) -> None:
    page.click("header.top button:has-text('登出')")
    expect(page.locator("#flash")).to_have_text("您已登出。")


def test_clerk_to_report_in_a_real_browser(server: str, browser: Browser) -> None:
    context = browser.new_context(locale="zh-TW", viewport={"width": 1280, "height": 900})
    # Two cores shared with other jobs: allow slow pages rather than fail on a busy machine.
    context.set_default_timeout(30_000)
    expect.set_options(timeout=15_000)
    page = context.new_page()

    # --- clerk: budget, a refused and an accepted certification, a voucher, submit it -------------
    _login(page, server, "fin-clerk")
    page.goto(f"{server}/budget")
    equipment = page.locator("#budget-lines tbody tr", has_text="01 一般行政").filter(has_text="設備及投資")
    available_before = int(equipment.locator("td.available").inner_text().replace(",", ""))
    assert available_before > AMOUNT

    page.goto(f"{server}/certifications")
    line_option = page.locator("#budget_line_id option", has_text="01 一般行政／行政管理／設備及投資")
    line_value = line_option.get_attribute("value")
    assert line_value
    page.select_option("#budget_line_id", line_value)
    page.fill("#amount", f"{available_before + 1:,}")
    page.fill("#purpose", "超額測試")
    page.click("#certify-form button[type=submit]")
    refusal = page.locator("#certify-refusal")
    expect(refusal).to_contain_text("簽證未通過")
    expect(page.locator("#refusal-available")).to_have_text(f"{available_before:,} 元")
    expect(page.locator("#refusal-requested")).to_have_text(f"{available_before + 1:,} 元")
    shot(page, "tenant_certify_refused.png")

    page.select_option("#budget_line_id", line_value)
    page.fill("#amount", f"{AMOUNT:,}")
    page.fill("#purpose", "購置會議室投影設備")
    page.click("#certify-form button[type=submit]")
    expect(page.locator("#flash.ok")).to_contain_text(
        f"金額 {AMOUNT:,} 元，簽證後可用餘額 {available_before - AMOUNT:,} 元")

    certification_row = page.locator("#certifications tbody tr", has_text="購置會議室投影設備")
    certification_row.locator("a.prepare-voucher").click()
    page.fill("#payee", "大同資訊股份有限公司")
    page.fill("#payee_account", "004-1234567890")
    page.fill("#einvoices", "AB12345678")
    expect(page.locator("#line_0_amount")).to_have_value(f"{AMOUNT:,}")
    shot(page, "tenant_voucher_form.png")
    page.click("#voucher-form button[type=submit]")
    expect(page.locator("#flash.ok")).to_contain_text("已建立")
    voucher_url = page.url
    expect(page.locator("#voucher-amount")).to_have_text(f"{AMOUNT:,}")
    expect(page.locator("#einvoices")).to_contain_text("AB12345678")
    page.click("#sign-form button[type=submit]")
    expect(page.locator("#voucher-status")).to_have_text("簽核中")
    expect(page.locator("#next-step")).to_have_text("主辦會計")
    _logout(page)

    # --- chief accountant, then agency head: sign -------------------------------------------------
    for username, after in (("fin-chief", "機關首長"), ("fin-head", None)):
        _login(page, server, username)
        page.goto(voucher_url)
        page.click("#sign-form button[type=submit]")
        expect(page.locator("#flash.ok")).to_contain_text("已簽核")
        if after:
            expect(page.locator("#next-step")).to_have_text(after)
        _logout(page)
    _login(page, server, "fin-accountant")
    page.goto(voucher_url)
    expect(page.locator("#voucher-status")).to_have_text("已核准")
    expect(page.locator("#chain-status")).to_have_text("簽章鏈驗證通過。")
    expect(page.locator("#signatures tbody tr")).to_have_count(3)
    shot(page, "tenant_voucher_approved.png")

    # --- accountant: pay through the payments page -----------------------------------------------
    page.goto(f"{server}/payments")
    row = page.locator("#waiting tbody tr", has_text="大同資訊股份有限公司")
    expect(row.locator("td.num").nth(1)).to_have_text(f"{AMOUNT:,}")
    row.locator("button:has-text('撥付')").click()
    expect(page.locator("#flash.ok")).to_contain_text(f"已撥付 {AMOUNT:,} 元")
    expect(page.locator("#voucher-status")).to_have_text("已撥付")

    # --- the execution report shows the payment ---------------------------------------------------
    page.goto(f"{server}/reports")
    page.select_option("#kind", "execution")
    page.select_option("#period", "13")
    page.click("#report-form button[type=submit]")
    report = page.locator("#report")
    expect(report.locator(".report-title")).to_contain_text("歲出預算執行表")
    equipment_row = report.locator("tbody tr", has_text="設備及投資").filter(has_text="行政管理")
    expect(equipment_row.locator(f"td.num[data-value='{AMOUNT}']").first).to_have_text(f"{AMOUNT:,}")
    expect(report.locator("#download-xlsx")).to_be_visible()
    path = shot(page, "tenant_execution_report.png")
    assert path.stat().st_size > 10_000
    context.close()
