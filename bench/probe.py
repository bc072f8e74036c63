"""Monitoring's costs and accuracy, with real components on 127.0.0.1.

- attribution_error_ms: 200 ms injected on the network side (a delaying TCP proxy between the
  gateway and the app) and, separately, on the server side (the app waits inside its own timing),
  requests round-robin over the three counties (one app process);
  the largest error, over probe and real-user splits, of "it went to the right side and only there".
- probe_cpu_pct_per_county: CPU of one probe run (the prober's own + what the county's app spends
  answering it), averaged over whole ProbeSessions cycles as the service runs them (a log-in every
  fifth run, the session kept between), as a percentage of one core when probed every 60 s.
- rum_overhead_pct: the gateway's throughput lost with its request log on versus off, side by side:
  from HAProxy's CPU per request under wrk (see rum_overhead for why CPU, not wrk's noisy rate).
- chart_p99_ms: a county's console monitoring page (GET /tenants/keelung/monitoring?days=30: the
  stacked chart of 30 days of hourly rollups, the last hour's table) from a real uvicorn serving the
  service's app over SQLite, signed in; p99 over --chart-requests after a warm-up. The rollups are
  made up (tests/support/monitoring_seed.py): no VM needed. The drawn chart is memoized on its rows
  (monitoring.charts.stacked_hours_of); the same requests with that memo emptied before each one
  (the rows changed since the last view: a flush every probe interval) are in the details,
  interleaved with the others.

Last line: {"attribution_error_ms", "probe_cpu_pct_per_county", "rum_overhead_pct", "chart_p99_ms"}.
Run: .venv/bin/python bench/probe.py [--probes 5] [--wrk-seconds 4] [--rounds 3] [--chart-requests 200]
     [--chart-port 24210] [--only attribution|rum|chart] (figures not measured print null)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitoring.edge import RequestLogReader, process_cpu_seconds  # noqa: E402
from monitoring.engine import MonitoringEngine  # noqa: E402
from monitoring.probes import ProbeSessions, ProbeStep, Target, probe_county  # noqa: E402
from monitoring.rum import ParseStats, parse_lines  # noqa: E402
from monitoring.timings import Split  # noqa: E402
from monitoring.transactions import Transaction  # noqa: E402
from provisioning.haproxy import HAProxyGateway, ServerState  # noqa: E402
from tenant_app.devserver import free_port  # noqa: E402
from tests.integration.monitoring.support import (  # noqa: E402
    DelayProxy,
    app_server,
    attribution_errors,
    gateway,
    interleaved_splits,
    request_log_reader,
    seed_county,
)

INJECTED_MS = 200.0
REQUESTS = 20
WARM_UP = 2
WRK = "/usr/bin/wrk"
FAST_BACKEND = """global
    maxconn 2000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fast
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string ok hdr Server-Timing "{timing}"
"""


def _listener_pid(port: int) -> int:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
            return int(conn.pid)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def attribution_and_probe_cost(work: Path, probes: int) -> tuple[float, dict[str, float], dict[str, float]]:
    template = work / "seed.db"
    account = seed_county(f"sqlite:///{template}")

    def copy(name: str) -> str:
        (work / f"{name}.db").write_bytes(template.read_bytes())
        return f"sqlite:///{work / name}.db"

    # One app process behind all three counties; slowapp's requests ask it for the delay (header).
    # Every county through a proxy (the same hops); only slownet's one delays.
    with (app_server(copy("base")) as base_port,
          DelayProxy(base_port, one_way_s=INJECTED_MS / 2000) as proxy,
          DelayProxy(base_port, one_way_s=0.0) as plain):
        backends = {"base": plain.port, "slownet": proxy.port, "slowapp": plain.port}
        lines: list[str] = []
        with (gateway(backends) as (gw, addresses),
              request_log_reader(gw, lambda read: lines.extend(read.lines))):
            for county in backends:
                gw.wait_for(county, f"{county}-vm", ServerState.UP)
            targets = {c: Target(c, f"http://127.0.0.1:{addresses[c]}", account) for c in backends}
            proxy.lateness_s.clear()
            probe, server_injected = interleaved_splits(targets, INJECTED_MS, REQUESTS, WARM_UP)
            injected = (proxy.injected_ms(), server_injected)
            time.sleep(1.0)
            rum: dict[str, list[Split]] = {c: [] for c in backends}
            for sample in parse_lines(list(lines), ParseStats()):
                if sample.transaction is Transaction.BUDGET_LINE:
                    rum[sample.county].append(sample.timing)
            rum = {c: v[WARM_UP:] for c, v in rum.items()}
            errors = {f"probe {k}": v for k, v in attribution_errors(probe, *injected).items()}
            errors |= {f"rum {k}": v for k, v in attribution_errors(rum, *injected).items()}
            errors |= {"network_injected_ms": injected[0], "server_injected_ms": injected[1]}

            # Probe cost: runs as the service makes them (ProbeSessions: a log-in every LOG_IN_EVERY
            # runs, the session kept between), whole cycles, against the undelayed county, CPU on
            # both sides.
            app = psutil.Process(_listener_pid(base_port))  # the probe below goes base -> plain proxy -> app
            probe_county(targets["base"])  # warm
            sessions = ProbeSessions()
            probes = max(probes // sessions.every, 1) * sessions.every
            ours, theirs = process_cpu_seconds(), app.cpu_times()
            began = time.perf_counter()
            results = [sessions.run(targets["base"]) for _ in range(probes)]
            sessions.close()
            wall = time.perf_counter() - began
            ours_s = (process_cpu_seconds() - ours) / probes
            after = app.cpu_times()
            theirs_s = (after.user + after.system - theirs.user - theirs.system) / probes
            if not all(r.ok for r in results):
                raise RuntimeError(f"a probe failed: {[r.message for r in results if not r.ok]}")
            cost = {"prober_cpu_s_per_walk": ours_s, "app_cpu_s_per_walk": theirs_s,
                    "walk_wall_s": wall / probes,
                    "prober_pct_of_core_at_60s": 100 * ours_s / 60,
                    "app_pct_of_core_at_60s": 100 * theirs_s / 60}
            steps = {step.value: statistics.mean(r.step_ms().get(step, 0.0) for r in results)
                     for step in ProbeStep}
    worst = max(v for k, v in errors.items() if "->" in k)
    return worst, {**errors, **cost}, steps


def _wrk(port: int, seconds: int, counted: list[int] | None = None) -> float:
    out = subprocess.run([WRK, "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/api/v1/budget-lines/1"],
                         capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    total = re.search(r"([0-9]+) requests in", out)
    if not match or not total:
        raise RuntimeError(f"wrk printed no rate: {out}")
    if counted is not None:
        counted.append(int(total.group(1)))
    return float(match.group(1))


def _gateway_cpu_s(gw: HAProxyGateway) -> float:
    """CPU seconds used so far by the gateway's HAProxy (master and workers)."""
    pid = gw.master_pid()
    if pid is None:
        raise RuntimeError("the gateway is not running")
    master = psutil.Process(pid)
    total = 0.0
    for proc in [master, *master.children(recursive=True)]:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def _caught_up(engine: MonitoringEngine, quiet_s: float = 2.5, limit_s: float = 30.0) -> None:
    """Wait until no line has arrived for quiet_s (at most limit_s; the reader reads every second)."""
    deadline = time.monotonic() + limit_s
    seen, since = engine.rum_stats.lines, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        time.sleep(0.1)
        if engine.rum_stats.lines != seen:
            seen, since = engine.rum_stats.lines, time.monotonic()


def rum_overhead(work: Path, seconds: int, rounds: int) -> tuple[float, dict[str, object]]:
    """The gateway's CPU per request with its request log on versus off, measured side by side
    (pairs, order alternating) with wrk through it to a fast backend (a second HAProxy answering
    itself), so the gateway is the busy part. At saturation a gateway's throughput is 1 / its CPU
    per request, so the loss is extra / (base + extra). CPU per request is used rather than wrk's
    rate because the machine is shared: rates drift by tens of percent between runs, CPU accounting
    per process does not. With the log on, the gateway's CPU is read once the reader has caught up
    (its reads of the whole ring once a second are counted too), and lines_kept_pct is what
    reached the reader of what wrk counted. The rates, and what reading and rolling up the lines
    costs this service (its own process, not the gateway), are in the details."""
    port = free_port()
    config = work / "fast.cfg"
    config.write_text(FAST_BACKEND.format(port=port, timing="app;dur=0.05, db;dur=0.00"))
    fast = subprocess.Popen(["/usr/sbin/haproxy", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    engine = MonitoringEngine()  # what the service does with each line: parse and roll up
    cpu_per_request: dict[bool, list[float]] = {True: [], False: []}
    rates: dict[bool, list[float]] = {True: [], False: []}
    reader_cpu_s = 0.0
    requests_on = 0

    def run(on: bool) -> None:
        nonlocal reader_cpu_s, requests_on
        with gateway({"fast": port}, real_user_timing=on) as (gw, addresses):
            gw.wait_for("fast", "fast-vm", ServerState.UP)
            counted: list[int] = []
            # The service's reader as it runs there: the whole ring once a second.
            listener = RequestLogReader(gw.paths.runtime_socket, gw.paths.request_log_mark,
                                        engine.ingest_ring_read) if on else None
            ours = process_cpu_seconds()
            if listener:
                listener.start()
            before = _gateway_cpu_s(gw)
            try:
                rates[on].append(_wrk(addresses["fast"], seconds, counted))
                if listener:
                    # The ring forwards what a burst left in it after the burst: the gateway's CPU is
                    # read once the reader has caught up, so that work is counted too.
                    _caught_up(engine)
                used = _gateway_cpu_s(gw) - before
            finally:
                if listener:
                    listener.stop()
            cpu_per_request[on].append(used / counted[0])
            if on:
                reader_cpu_s += process_cpu_seconds() - ours
                requests_on += counted[0]

    try:
        time.sleep(0.5)
        for i in range(rounds):
            for on in ((False, True) if i % 2 == 0 else (True, False)):
                run(on)
    finally:
        fast.terminate()
        fast.wait(10)
    off, on_ = statistics.median(cpu_per_request[False]), statistics.median(cpu_per_request[True])
    extra = max(on_ - off, 0.0)
    kept = engine.rum_stats.samples
    return 100 * extra / (off + extra), {
        "gateway_cpu_us_per_request_off_on": [round(off * 1e6, 1), round(on_ * 1e6, 1)],
        "wrk_rps_off": [round(r) for r in rates[False]], "wrk_rps_on": [round(r) for r in rates[True]],
        "service_cpu_us_per_line": round(1e6 * reader_cpu_s / max(kept, 1), 1),
        "lines_kept_pct": round(100 * kept / max(requests_on, 1), 1),
        "lines_skipped": {k.value: v for k, v in engine.rum_stats.skipped.items()}}


CHART_PORT = 24210  # this issue's own port block (24200-24299)


def chart_p99(work: Path, requests: int, port: int = CHART_PORT) -> tuple[float, dict[str, object]]:
    """p99 of the county's 30-day chart page, from a real uvicorn on 127.0.0.1; beside it, the same
    page drawn afresh each time (the memo of drawn charts emptied before the request)."""
    import os
    import threading

    import httpx
    import uvicorn

    os.environ.update({"COUNTYCLOUD_STATE_DIR": str(work / "chart"),
                       "COUNTYCLOUD_DATABASE_URL": f"sqlite:///{work / 'chart' / 'countycloud.db'}"})
    from controlplane import auth, bootstrap, service
    from controlplane.actors import cli_actor
    from controlplane.roles import Role
    from inventory import declare
    from inventory.db import session_scope
    from inventory.loader import load_sample
    from monitoring import charts
    from tests.support.monitoring_seed import seed_rollups

    engine = bootstrap.engine()
    with session_scope(engine) as session:
        declare.apply(session, load_sample(), actor="bench")
    began = time.perf_counter()
    rows = seed_rollups(engine, "keelung", days=30, now=time.time())
    seeded_s = time.perf_counter() - began
    password = "bench password 0123456789"
    auth.create_user(engine, cli_actor(), "bench", Role.ADMIN, password=password)
    app = service.build_app(service.context_from_settings(bootstrap.settings()))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the console did not start")
        time.sleep(0.05)
    page = "/tenants/keelung/monitoring?days=30&transaction=certify"
    times: list[float] = []
    drawn: list[float] = []  # the memo emptied first: the chart drawn for this request
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            client.get("/login")
            client.post("/login", data={"username": "bench", "password": password, "next": "/",
                                        "csrf": client.cookies["cc_login_csrf"]})
            for _ in range(5):
                answer = client.get(page)
                bars = re.search(r'<path class="network" fill="#\w+" d="([^"]*)"', answer.text)
                if answer.status_code != 200 or bars is None or bars.group(1).count("z") != 30 * 24:
                    raise RuntimeError(f"the chart page is not the 30-day chart ({answer.status_code})")
            for _ in range(requests):
                for fresh in (False, True):  # interleaved: both see the same load on the machine
                    if fresh:
                        charts.stacked_hours_of.cache_clear()
                    start = time.perf_counter()
                    client.get(page).raise_for_status()
                    (drawn if fresh else times).append((time.perf_counter() - start) * 1000)
    finally:
        server.should_exit = True
        thread.join(10)
    times.sort()
    drawn.sort()

    def p99_of(values: list[float]) -> float:
        return values[min(len(values) - 1, int(0.99 * len(values)))]

    return p99_of(times), {
        "rollup_rows": rows, "seeded_s": round(seeded_s, 1), "requests": requests,
        "p50_ms": round(statistics.median(times), 1), "max_ms": round(times[-1], 1),
        "drawn_afresh_p50_ms": round(statistics.median(drawn), 1),
        "drawn_afresh_p99_ms": round(p99_of(drawn), 1),
        "page_bytes": len(answer.content)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--wrk-seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--chart-requests", type=int, default=200)
    parser.add_argument("--chart-port", type=int, default=CHART_PORT)
    parser.add_argument("--only", choices=["attribution", "rum", "chart"], default=None)
    args = parser.parse_args()
    error = overhead = chart = probe_cpu = None
    with tempfile.TemporaryDirectory(prefix="ccbench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "attribution"):
            error, details, steps = attribution_and_probe_cost(work, args.probes)
            probe_cpu = details["prober_pct_of_core_at_60s"] + details["app_pct_of_core_at_60s"]
            print(json.dumps({"details": {k: round(v, 3) for k, v in details.items()}}, ensure_ascii=False))
            print(json.dumps({"probe_step_ms": {k: round(v, 1) for k, v in steps.items()}}))
        if args.only in (None, "rum"):
            overhead, rum_details = rum_overhead(work, args.wrk_seconds, args.rounds)
            print(json.dumps({"rum": rum_details}, default=str))
        if args.only in (None, "chart"):
            chart, chart_details = chart_p99(work, args.chart_requests, args.chart_port)
            print(json.dumps({"chart": chart_details}))
    print(json.dumps({
        "attribution_error_ms": None if error is None else round(error, 2),
        "probe_cpu_pct_per_county": None if probe_cpu is None else round(probe_cpu, 3),
        "rum_overhead_pct": None if overhead is None else round(overhead, 2),
        "chart_p99_ms": None if chart is None else round(chart, 1),
    }))


if __name__ == "__main__":
    main()
