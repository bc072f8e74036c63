"""Probes: each county exercised through its address the way a user works, timed and split.

One probe run is a browser-like session: log in (web form), list the budget lines, open one (API),
the 簽證 path, the execution report and its XLSX, log out. Every request's time comes from curl
(monitoring.edge) and is split into network and server with the app's `Server-Timing`.

It never changes what the county's users see (choice recorded in docs/monitoring.md): it works in
the probe-only agency of tenant_app.probe_account, granted to no county user, and its 簽證 asks
for one dollar more than the probe line has, so the app runs the whole certification path up to
the balance check and refuses it: nothing is written.

Failures say what went wrong in words an operator acts on: the county down (no connection, or the
gateway's 503 with no server behind it) fails in about the connect timeout; the probe user locked
out (throttled) or refused at log-in; an unexpected status or page.
"""

from __future__ import annotations

import enum
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from monitoring.edge import Answer, CurlClient, FetchError, FetchFailed, Phases
from monitoring.rum import Sample
from monitoring.timings import Source, Split, parse_server_timing, split
from monitoring.transactions import DEFAULT_TABLE, Transaction

DEFAULT_INTERVAL_S = 60.0
CONNECT_TIMEOUT_S = 1.5
REQUEST_TIMEOUT_S = 15.0
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_XLSX_MAGIC = b"PK\x03\x04"  # an XLSX is a zip archive


class ProbeStep(enum.StrEnum):
    LOG_IN = "log_in"
    BUDGET_LINES = "budget_lines"
    BUDGET_LINE = "budget_line"
    CERTIFY = "certify"
    REPORT = "report"
    EXPORT = "export"
    LOG_OUT = "log_out"


class ProbeFailure(enum.StrEnum):
    COUNTY_DOWN = "county_down"  # nothing answers at the address, or the gateway has no server up
    TIMEOUT = "timeout"  # connected, but an answer took longer than the request timeout
    LOCKED_OUT = "locked_out"  # the app throttles the probe user's log-ins (too many failures)
    LOGIN_REFUSED = "login_refused"  # wrong password or the probe user deactivated
    SERVER_ERROR = "server_error"  # a 5xx from the app
    UNEXPECTED = "unexpected"  # another status or a page without what a user would see


MESSAGES: Mapping[ProbeFailure, str] = {
    ProbeFailure.COUNTY_DOWN: "縣市無回應 (county down: no server answers at its address)",
    ProbeFailure.TIMEOUT: "回應逾時 (an answer took longer than {timeout:.0f} s)",
    ProbeFailure.LOCKED_OUT: "探測帳號已被鎖定 (the probe user is locked out: too many failed log-ins)",
    ProbeFailure.LOGIN_REFUSED: "探測帳號登入被拒 (the probe user's log-in was refused: password or account)",
    ProbeFailure.SERVER_ERROR: "伺服器錯誤 (the app answered {status})",
    ProbeFailure.UNEXPECTED: "非預期的回應 (unexpected answer: {detail})",
}


@dataclass(frozen=True)
class ProbeAccount:
    """What tenant_app.probe_account printed for the county (kept by the platform)."""

    username: str
    password: str
    api_token: str
    budget_line_id: int


@dataclass(frozen=True)
class Target:
    county: str  # the county's slug, as in the gateway's fe_<slug>
    base_url: str  # the county's address, http://127.0.0.1:<port>
    account: ProbeAccount

    def __post_init__(self) -> None:
        host = urlsplit(self.base_url).hostname
        if host != "127.0.0.1":
            raise ValueError(f"probe target {self.base_url}: the network rule allows 127.0.0.1 only")


@dataclass(frozen=True)
class Request:
    step: ProbeStep
    method: str
    path: str  # with its query string
    transaction: Transaction
    status: int
    phases: Phases
    timing: Split


@dataclass(frozen=True)
class ProbeResult:
    county: str
    started_at: float
    elapsed_ms: float
    requests: tuple[Request, ...]
    failure: ProbeFailure | None = None
    failed_step: ProbeStep | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None

    def samples(self) -> list[Sample]:
        return [Sample(self.county, r.transaction, self.started_at, r.status, r.timing, Source.PROBE)
                for r in self.requests]

    def step_ms(self) -> dict[ProbeStep, float]:
        totals: dict[ProbeStep, float] = {}
        for r in self.requests:
            totals[r.step] = totals.get(r.step, 0.0) + r.timing.total_ms
        return totals


class HttpClient(Protocol):
    def request(self, method: str, path: str, *, form: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None) -> Answer: ...


class _Stop(Exception):
    def __init__(self, failure: ProbeFailure, message: str) -> None:
        super().__init__(message)
        self.failure = failure


@dataclass
class _Run:
    target: Target
    client: HttpClient
    request_timeout_s: float
    requests: list[Request] = field(default_factory=list)
    step: ProbeStep = ProbeStep.LOG_IN
    csrf: str = ""

    def call(self, method: str, path: str, *, form: Mapping[str, str] | None = None,
             bearer: bool = False, expect: Iterable[int] = (200,)) -> Answer:
        headers = {"Authorization": f"Bearer {self.target.account.api_token}"} if bearer else None
        try:
            answer = self.client.request(method, path, form=form, headers=headers)
        except FetchFailed as error:
            if error.kind is FetchError.TIMEOUT:
                raise _Stop(ProbeFailure.TIMEOUT,
                            MESSAGES[ProbeFailure.TIMEOUT].format(timeout=self.request_timeout_s)) from error
            raise _Stop(ProbeFailure.COUNTY_DOWN, f"{MESSAGES[ProbeFailure.COUNTY_DOWN]}: {error}") from error
        route, _, query = path.partition("?")
        timing = parse_server_timing(answer.headers.get("server-timing"))
        self.requests.append(Request(self.step, method, path, DEFAULT_TABLE.classify(method, route, query),
                                     answer.status, answer.phases, split(answer.phases.total_ms, timing)))
        if answer.status == 503 and timing is None:
            raise _Stop(ProbeFailure.COUNTY_DOWN, MESSAGES[ProbeFailure.COUNTY_DOWN])
        if answer.status >= 500:
            raise _Stop(ProbeFailure.SERVER_ERROR,
                        MESSAGES[ProbeFailure.SERVER_ERROR].format(status=answer.status))
        if answer.status not in tuple(expect):
            raise _Stop(ProbeFailure.UNEXPECTED, MESSAGES[ProbeFailure.UNEXPECTED].format(
                detail=f"{method} {route} answered {answer.status}, expected {'/'.join(map(str, expect))}"))
        match = _CSRF.search(answer.body.decode("utf-8", errors="replace")) if answer.body else None
        if match:
            self.csrf = match.group(1)  # the session's token, carried from page to page like a browser
        return answer

    def require(self, condition: bool, detail: str) -> None:
        if not condition:
            raise _Stop(ProbeFailure.UNEXPECTED, MESSAGES[ProbeFailure.UNEXPECTED].format(detail=detail))


def _log_in(run: _Run) -> None:
    account = run.target.account
    run.step = ProbeStep.LOG_IN
    run.call("GET", "/login")
    run.require(bool(run.csrf), "the log-in page has no form token")
    answer = run.call("POST", "/login", form={"username": account.username, "password": account.password,
                                              "next": "/", "csrf_token": run.csrf}, expect=(303, 401, 429))
    if answer.status == 429:
        raise _Stop(ProbeFailure.LOCKED_OUT, MESSAGES[ProbeFailure.LOCKED_OUT])
    if answer.status == 401:
        raise _Stop(ProbeFailure.LOGIN_REFUSED, MESSAGES[ProbeFailure.LOGIN_REFUSED])


def _walk(run: _Run, log_in: bool = True, log_out: bool = True) -> None:
    account = run.target.account
    if log_in:
        _log_in(run)
    run.step = ProbeStep.BUDGET_LINES
    page = run.call("GET", "/budget", expect=(200,) if log_in else (200, 303))
    if page.status == 303:  # the kept session ended (expired, the app restarted): log in again
        _log_in(run)
        run.step = ProbeStep.BUDGET_LINES
        page = run.call("GET", "/budget")
    run.require("業務費".encode() in page.body, "the budget page lists no budget line")

    run.step = ProbeStep.BUDGET_LINE
    line = json.loads(run.call("GET", f"/api/v1/budget-lines/{account.budget_line_id}", bearer=True).body)
    run.require(isinstance(line, dict) and "available" in line, "the budget line has no available balance")
    available = int(line["available"])

    run.step = ProbeStep.CERTIFY
    run.call("GET", "/certifications")
    # One dollar more than the line has: the app checks everything, then refuses; nothing is written.
    refused = run.call("POST", "/certifications", expect=(422,), form={
        "budget_line_id": str(account.budget_line_id), "amount": str(available + 1), "purpose": "平台監測",
        "period": "", "csrf_token": run.csrf})
    run.require(f"{available + 1:,}".encode() in refused.body or "餘額".encode() in refused.body,
                "the 簽證 refusal does not state the balance")

    run.step = ProbeStep.REPORT
    report = run.call("GET", "/reports?kind=execution")
    run.require("執行".encode() in report.body, "the execution report page has no report")

    run.step = ProbeStep.EXPORT
    xlsx = run.call("GET", "/reports/download?kind=execution&format=xlsx")
    run.require(xlsx.body.startswith(_XLSX_MAGIC), "the XLSX export is not a spreadsheet")

    if log_out:
        run.step = ProbeStep.LOG_OUT
        run.call("POST", "/logout", form={"csrf_token": run.csrf}, expect=(303,))


def probe(target: Target, client: HttpClient, *, clock: Callable[[], float] = time.time,
          request_timeout_s: float = REQUEST_TIMEOUT_S, log_in: bool = True,
          log_out: bool = True) -> ProbeResult:
    """One probe run through `client`; never raises for the county's faults. By default a whole
    session (log in ... log out); `log_in=False` continues the client's session (logging in again
    if it ended), `log_out=False` leaves it open for the next run."""
    started_at, began = clock(), time.perf_counter()
    run = _Run(target, client, request_timeout_s)
    failure: ProbeFailure | None = None
    message = ""
    try:
        _walk(run, log_in, log_out)
    except _Stop as stop:
        failure, message = stop.failure, str(stop)
    return ProbeResult(target.county, started_at, (time.perf_counter() - began) * 1000, tuple(run.requests),
                       failure, run.step if failure else None, message)


def probe_county(target: Target, *, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 request_timeout_s: float = REQUEST_TIMEOUT_S) -> ProbeResult:
    with CurlClient(target.base_url, connect_timeout_s=connect_timeout_s,
                    timeout_s=request_timeout_s) as client:
        return probe(target, client, request_timeout_s=request_timeout_s)


LOG_IN_EVERY = 5  # walks per session: the log-in (argon2 in the county's app) is most of a walk's cost


class ProbeSessions:
    """Each county's probe session kept across runs: a run logs in once every `every` runs (that
    run's log-in is timed as any other), the runs between continue the session, and the last of the
    cycle logs out, so a county holds at most one probe session. What one walk costs the county's
    app is then mostly the pages, not the password hash (docs/monitoring.md)."""

    def __init__(self, every: int = LOG_IN_EVERY, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.every = max(every, 1)
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self._clients: dict[str, tuple[CurlClient, int]] = {}

    def run(self, target: Target) -> ProbeResult:
        """One run for the county (one thread per county at a time)."""
        kept = self._clients.get(target.county)
        if kept is None or kept[0].base_url != target.base_url.rstrip("/"):
            if kept is not None:
                kept[0].close()
            kept = (CurlClient(target.base_url, connect_timeout_s=self.connect_timeout_s,
                               timeout_s=self.request_timeout_s), 0)
        client, walk = kept
        last = walk + 1 >= self.every
        result = probe(target, client, request_timeout_s=self.request_timeout_s, log_in=walk == 0,
                       log_out=last)
        # A failed run starts the cycle again (a fresh log-in next time, as a user would).
        self._clients[target.county] = (client, 0 if last or not result.ok else walk + 1)
        return result

    def close(self) -> None:
        for client, _ in self._clients.values():
            client.close()
        self._clients.clear()


def probe_all_kept(targets: Iterable[Target], executor: ThreadPoolExecutor,
                   sessions: ProbeSessions) -> list[ProbeResult]:
    """probe_all with each county's session kept between rounds (ProbeSessions)."""
    futures = [executor.submit(sessions.run, t) for t in targets]
    return [f.result() for f in futures]


def probe_all(targets: Iterable[Target], executor: ThreadPoolExecutor, *,
              connect_timeout_s: float = CONNECT_TIMEOUT_S) -> list[ProbeResult]:
    """Every county at once, each in its own thread and session: a county that is down costs its
    own probe the connect timeout and no other probe anything."""
    futures = [executor.submit(probe_county, t, connect_timeout_s=connect_timeout_s) for t in targets]
    return [f.result() for f in futures]
