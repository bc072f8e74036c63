"""`/api/v1/dr`: only an operator (or admin) starts a failover, DR test or failback; the job is
recorded with its args; reports are read by the platform's roles; bad input is a 422."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from controlplane import bootstrap, jobs
from dr import report
from inventory.jobs import JobKind
from tests.unit.controlplane.service_support import Service, make_service, sign_in


@pytest.fixture
def service(state: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    for cached in (bootstrap.settings, bootstrap.engine, bootstrap.platform):
        cached.cache_clear()
    url = bootstrap.settings().database_url
    yield from make_service(url, state, real=True)


def test_only_operators_start_a_failover_and_the_job_keeps_its_args(service: Service) -> None:
    client = TestClient(service.app)
    body = {"counties": ["keelung"], "failed_at": 1000.0}
    for user in ("central", "auditor", "liaison"):
        assert client.post("/api/v1/dr/failover", json=body, headers=service.bearer(user)).status_code == 403
    answer = client.post("/api/v1/dr/failover", json=body, headers=service.bearer("oper"))
    assert answer.status_code == 202, answer.text
    view = jobs.get_job(service.engine, answer.json()["job_id"])
    assert view.kind is JobKind.FAILOVER and view.target == "primary"
    assert view.args["counties"] == ["keelung"] and view.args["failed_at"] == 1000.0
    assert view.args["to_site"] == "secondary"


def test_bad_dr_requests_are_refused_before_any_job(service: Service) -> None:
    client = TestClient(service.app)
    oper = service.bearer("oper")
    assert client.post("/api/v1/dr/failover", json={"cold": "maybe"}, headers=oper).status_code == 422
    to_itself = {"failed_site": "secondary"}
    assert client.post("/api/v1/dr/failover", json=to_itself, headers=oper).status_code == 422
    assert client.post("/api/v1/dr/failover", json={"to_site": "moon"}, headers=oper).status_code == 422
    assert client.post("/api/v1/dr/test", json={"counties": ["Not A Slug"]}, headers=oper).status_code == 422
    assert jobs.list_jobs(service.engine) == []


def test_failback_and_dr_test_are_jobs_of_their_own_kind(service: Service) -> None:
    client = TestClient(service.app)
    oper = service.bearer("oper")
    back = client.post("/api/v1/dr/failback", json={}, headers=oper)
    test = client.post("/api/v1/dr/test", json={"counties": ["keelung"]}, headers=oper)
    assert (back.status_code, test.status_code) == (202, 202)
    kinds = {view.kind for view in jobs.list_jobs(service.engine)}
    assert kinds == {JobKind.FAILBACK, JobKind.DR_TEST}


def test_the_last_report_is_read_by_platform_roles(service: Service, state: Path) -> None:
    client = TestClient(service.app)
    assert client.get("/api/v1/dr/reports/failover", headers=service.bearer("auditor")).status_code == 404
    done = report.build(report.RunKind.FAILOVER, "failover-primary-1", "primary", "secondary", 0.0, [], {},
                        [])
    report.save_last(bootstrap.settings().state_dir, done)
    answer = client.get("/api/v1/dr/reports/failover", headers=service.bearer("auditor"))
    assert answer.status_code == 200 and answer.json()["job_id"] == "failover-primary-1"
    assert client.get("/api/v1/dr/reports/failover", headers=service.bearer("liaison")).status_code == 403


def test_the_console_dr_page_shows_the_report_and_an_operator_starts_a_failover(service: Service) -> None:
    done = report.build(report.RunKind.FAILOVER, "failover-primary-9", "primary", "secondary", 0.0, [], {},
                        [])
    report.save_last(bootstrap.settings().state_dir, done)
    auditor = TestClient(service.app)
    sign_in(auditor, "auditor")
    page = auditor.get("/dr")
    assert page.status_code == 200 and "failover-primary-9" in page.text
    assert 'id="dr-failover"' not in page.text
    csrf = sign_in(auditor, "auditor")
    refused = auditor.post("/dr/failover", data={"csrf": csrf}, follow_redirects=False)
    assert refused.status_code == 403
    oper = TestClient(service.app)
    csrf = sign_in(oper, "oper")
    assert 'id="dr-failover"' in oper.get("/dr").text
    started = oper.post("/dr/failover", data={"csrf": csrf}, follow_redirects=False)
    assert started.status_code == 303 and started.headers["location"].startswith("/jobs/failover-primary-")
    assert [view.kind for view in jobs.list_jobs(service.engine)] == [JobKind.FAILOVER]


def test_the_site_watch_is_shown_on_the_console_and_the_api(service: Service) -> None:
    from dr import watchstate
    from dr.health import SiteVerdict
    from dr.outage import Outage, Status

    client = TestClient(service.app)
    auditor = service.bearer("auditor")
    assert client.get("/api/v1/dr/watch", headers=auditor).status_code == 404
    browser = TestClient(service.app)
    sign_in(browser, "auditor")
    assert "site-watch" not in browser.get("/dr").text
    state = watchstate.WatchState(
        automatic=True, grace_s=30,
        sites={"primary": watchstate.SiteView(site="primary", verdict=SiteVerdict.DOWN,
                                              reason="site primary down", status=Status.GRACE,
                                              status_args={"seconds": "17"}, checked_at=1_800_000_000.0)},
        outages={"primary": Outage(site="primary", declared_at=1.0, failed_since=0.5, noticed_at=1.0)})
    watchstate.save(bootstrap.settings().state_dir, state)
    answer = client.get("/api/v1/dr/watch", headers=auditor)
    assert answer.status_code == 200
    assert answer.json()["status_text"] == {"primary": "down; automatic failover in 17 s"}
    assert answer.json()["outages"]["primary"]["failed_since"] == 0.5
    assert client.get("/api/v1/dr/watch", headers=service.bearer("liaison")).status_code == 403
    page = browser.get("/dr").text
    assert 'id="site-watch"' in page and "verdict-down" in page
    browser.get("/lang/en")
    english = browser.get("/dr").text
    assert "automatic failover in 17 s" in english and "Automatic failover: on" in english
    browser.get("/lang/zh-TW")
    chinese = browser.get("/dr").text
    assert "17 秒後自動切換" in chinese and "機房監看" in chinese and "停擺" in chinese


def test_every_word_of_the_dr_page_and_every_watch_status_has_its_zh_tw() -> None:
    import re

    from controlplane.web import i18n
    from dr.health import SiteVerdict
    from dr.outage import STATUS_TEXT

    template = (Path(__file__).resolve().parents[3] / "controlplane/web/templates/dr.html").read_text()
    words = set(re.findall(r'\bt\("([^"]+)"\)', template))
    words |= set(STATUS_TEXT.values()) | {verdict.value for verdict in SiteVerdict}
    words |= {kind.value for kind in report.RunKind}
    missing = sorted(word for word in words if word not in i18n.ZH_TW)
    assert missing == []
    for english in STATUS_TEXT.values():  # the same placeholders, so a translation formats like its key
        assert set(re.findall(r"{(\w+)}", english)) == set(re.findall(r"{(\w+)}", i18n.ZH_TW[english]))


def test_the_watch_submits_a_real_failover_job_once_as_the_system(service: Service) -> None:
    from controlplane import audit, site_watch
    from dr.outage import Outage

    found = Outage(site="primary", declared_at=1000.0, failed_since=997.0, noticed_at=1000.5,
                   to_site="secondary")
    first = site_watch.submit_failover(found)
    again = site_watch.submit_failover(found)  # e.g. a second service process at the same moment
    assert first == again
    [job] = jobs.list_jobs(service.engine)
    assert (job.kind, job.target, job.args["failed_at"], job.args["to_site"]) == (
        JobKind.FAILOVER, "primary", 997.0, "secondary")
    submitted = [row for row in audit.list_events(service.engine, target="primary") if row.action == "dr"]
    assert submitted and {row.actor_kind.value for row in submitted} == {"system"}
