"""The console in a real browser (Debian's chromium, driven by Playwright) against a real
`countycloud serve` process on 127.0.0.1: sign in with the first start's admin password, see both
sites and every county on the dashboard, create a county from its page and watch the job's steps
arrive live (server-sent events) until it succeeds, switch to English. Screenshots are kept in
artifacts/screenshots/.

The service runs with the fake use-case backend (the county's job is recorded, not a VM); the test
runs that job with steps of its own that take a moment each, so the live view has something to show.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from controlplane import jobs
from inventory.db import make_engine
from inventory.jobs import JobKind, Step, StepContext
from tests.support.browser import shot

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
COUNTY = "taichung"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    state = tmp_path_factory.mktemp("service")
    port = _free_port()
    env = {**os.environ, "COUNTYCLOUD_STATE_DIR": str(state), "COUNTYCLOUD_SERVICE_PORT": str(port),
           "COUNTYCLOUD_SERVICE_OPERATIONS": "tests.support.fake_service_operations", "PYTHONPATH": str(REPO)}
    log = (state / "serve.out").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "controlplane", "serve"], env=env, cwd=REPO,
                               stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start; see {state / 'serve.out'}")
            time.sleep(0.2)
        name, password = (state / "admin-password").read_text().split()
        yield {"base": base, "user": name, "password": password,
               "db": f"sqlite:///{state / 'countycloud.db'}"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _slow_steps(_args: Mapping[str, Any], _context: Any) -> list[Step]:
    def step(name: str) -> Step:
        def run(ctx: StepContext) -> str:
            ctx.log(f"{name}: working")
            time.sleep(1.5)
            return f"{name} done"
        return Step(name, run, f"the {name} step")

    return [step("make-disks"), step("clone"), step("wait-ready")]


def test_sign_in_see_the_counties_and_watch_a_create_live(service: dict[str, str], browser: Browser) -> None:
    context = browser.new_context(locale="zh-TW", viewport={"width": 1360, "height": 900})
    context.set_default_timeout(30_000)
    expect.set_options(timeout=20_000)
    page = context.new_page()

    page.goto(f"{service['base']}/")
    expect(page).to_have_url(f"{service['base']}/login?next=/")
    page.fill("#username", service["user"])
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    expect(page.locator(".problem")).to_have_text("使用者名稱或密碼錯誤。")
    page.fill("#password", service["password"])
    page.click("button[type=submit]")

    expect(page.locator("h1")).to_have_text("總覽")
    expect(page.locator(".site")).to_have_count(2)
    expect(page.locator("table.counties tr[data-tenant]")).to_have_count(13)
    expect(page.locator("tr[data-tenant=keelung]")).to_contain_text("基隆市")
    shot(page, "console_dashboard_zh.png")

    page.click(f"tr[data-tenant={COUNTY}] a")
    expect(page.locator("h1")).to_contain_text("臺中市")
    page.click("#create-form button[type=submit]")
    expect(page.locator("#job-status")).to_have_text("pending")
    job_id = page.url.rsplit("/", 1)[1]
    assert job_id.startswith(f"provision-{COUNTY}-")

    # The job runs now (in this process, with slow fake steps); the open page follows it live.
    engine = make_engine(service["db"])
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["id"] = jobs.start(engine, JobKind.PROVISION, COUNTY, {"tenant": COUNTY, "cold": False},
                                       _slow_steps)
        except Exception as error:  # reported by the assertion below
            outcome["error"] = error

    runner = threading.Thread(target=run)
    runner.start()
    try:
        expect(page.locator("#job-status")).to_have_text("running")
        expect(page.locator("#steps tr[data-step]")).to_have_count(3)
        shot(page, "console_job_live.png")
        expect(page.locator("#job-status")).to_have_text("succeeded", timeout=60_000)
        expect(page.locator("#steps tr[data-step=wait-ready]")).to_contain_text("wait-ready done")
        expect(page.locator("#live")).to_be_hidden()
        expect(page.locator("#job-controls")).to_be_hidden()  # nothing left to cancel
        shot(page, "console_job_done.png")
    finally:
        runner.join(timeout=90)
        jobs.shutdown()
        engine.dispose()
    assert outcome.get("id") == job_id, outcome

    page.click("#lang-switch")
    expect(page.locator("#job-status")).to_have_text("succeeded")
    page.goto(f"{service['base']}/")
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator(f"tr[data-tenant={COUNTY}]")).to_contain_text("provision")
    shot(page, "console_dashboard_en.png")
    page.goto(f"{service['base']}/audit")
    expect(page.locator("#chain")).to_contain_text("intact")
    expect(page.locator("#events")).to_contain_text("tenant.provision")
    shot(page, "console_audit_en.png")
    context.close()
