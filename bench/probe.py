"""Monitoring's costs and accuracy, with real components on 127.0.0.1.

- attribution_error_ms: 200 ms injected on the network side (a delaying TCP proxy between the
  gateway and the app) and, separately, on the server side (the app waits inside its own timing);
  the largest error, over probe and real-user splits, of "it went to the right side and only there".
- probe_cpu_pct_per_county: CPU of one probe walk (the prober's own + what the county's app spends
  answering it), as a percentage of one core when a county is probed every 60 s.
- rum_overhead_pct: the gateway's throughput (wrk through HAProxy to a fast backend) lost with the
  request log on (and this service reading and parsing it) versus off, side by side.
- chart_p99_ms: null - the console's chart page is not built yet (the service/console owner's part).

Last line: {"attribution_error_ms", "probe_cpu_pct_per_county", "rum_overhead_pct", "chart_p99_ms"}.
Run: .venv/bin/python bench/probe.py [--probes 5] [--wrk-seconds 4] [--rounds 3]
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

from monitoring.edge import CurlClient, RumListener, process_cpu_seconds  # noqa: E402
from monitoring.probes import ProbeStep, Target, _Run, probe_county  # noqa: E402
from monitoring.rum import ParseStats, parse_lines  # noqa: E402
from monitoring.timings import Split  # noqa: E402
from monitoring.transactions import Transaction  # noqa: E402
from provisioning.haproxy import ServerState  # noqa: E402
from tenant_app.devserver import free_port  # noqa: E402
from tests.integration.monitoring.support import (  # noqa: E402
    DelayProxy,
    app_server,
    attribution_errors,
    gateway,
    seed_county,
)

INJECTED_MS = 200.0
REQUESTS = 15
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


def _timed(base_url: str, target: Target) -> list[Split]:
    with CurlClient(base_url) as client:
        run = _Run(target, client, 15.0, step=ProbeStep.BUDGET_LINE)
        for _ in range(REQUESTS + WARM_UP):
            run.call("GET", f"/api/v1/budget-lines/{target.account.budget_line_id}", bearer=True)
    return [r.timing for r in run.requests[WARM_UP:]]


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

    with (app_server(copy("base")) as base_port,
          app_server(copy("slowapp"), server_delay_ms=INJECTED_MS) as slow_port,
          DelayProxy(base_port, one_way_s=INJECTED_MS / 2000) as proxy):
        backends = {"base": base_port, "slownet": proxy.port, "slowapp": slow_port}
        lines: list[str] = []
        with gateway(backends) as (gw, addresses), RumListener(gw.paths.rum_socket, lines.extend):
            for county in backends:
                gw.wait_for(county, f"{county}-vm", ServerState.UP)
            targets = {c: Target(c, f"http://127.0.0.1:{addresses[c]}", account) for c in backends}
            probe = {c: _timed(t.base_url, t) for c, t in targets.items()}
            time.sleep(1.0)
            rum: dict[str, list[Split]] = {c: [] for c in backends}
            for sample in parse_lines(list(lines), ParseStats()):
                if sample.transaction is Transaction.BUDGET_LINE:
                    rum[sample.county].append(sample.timing)
            rum = {c: v[WARM_UP:] for c, v in rum.items()}
            errors = {f"probe {k}": v for k, v in attribution_errors(probe, INJECTED_MS).items()}
            errors |= {f"rum {k}": v for k, v in attribution_errors(rum, INJECTED_MS).items()}

            # Probe cost: whole walks against the undelayed county, CPU on both sides.
            app = psutil.Process(_listener_pid(base_port))
            probe_county(targets["base"])  # warm
            ours, theirs = process_cpu_seconds(), app.cpu_times()
            began = time.perf_counter()
            results = [probe_county(targets["base"]) for _ in range(probes)]
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
    return max(errors.values()), {**errors, **cost}, steps


def _wrk(port: int, seconds: int) -> float:
    out = subprocess.run([WRK, "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/api/v1/budget-lines/1"],
                         capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not match:
        raise RuntimeError(f"wrk printed no rate: {out}")
    return float(match.group(1))


def rum_overhead(work: Path, seconds: int, rounds: int) -> tuple[float, dict[str, object]]:
    """Paired runs, off and on back to back (order alternating), on one gateway per run; the
    figure is the median of the per-pair losses: the machine is shared, so rates drift between
    pairs more than within one."""
    port = free_port()
    config = work / "fast.cfg"
    config.write_text(FAST_BACKEND.format(port=port, timing="app;dur=0.05, db;dur=0.00"))
    fast = subprocess.Popen(["/usr/sbin/haproxy", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    parsed = ParseStats()

    def consume(lines: list[str]) -> None:
        for _ in parse_lines(lines, parsed):
            pass

    def rate(on: bool) -> float:
        with gateway({"fast": port}, real_user_timing=on) as (gw, addresses):
            gw.wait_for("fast", "fast-vm", ServerState.UP)
            if not on:
                return _wrk(addresses["fast"], seconds)
            with RumListener(gw.paths.rum_socket, consume):
                return _wrk(addresses["fast"], seconds)

    pairs: list[tuple[float, float]] = []
    try:
        time.sleep(0.5)
        for i in range(rounds):
            if i % 2:
                on_rate = rate(True)
                off_rate = rate(False)
            else:
                off_rate = rate(False)
                on_rate = rate(True)
            pairs.append((off_rate, on_rate))
    finally:
        fast.terminate()
        fast.wait(10)
    losses = [100 * (off - on) / off for off, on in pairs]
    return max(0.0, statistics.median(losses)), {
        "pairs_rps_off_on": [(round(a), round(b)) for a, b in pairs],
        "loss_pct_per_pair": [round(x, 1) for x in losses],
        "lines_parsed": parsed.samples, "lines_skipped": {k.value: v for k, v in parsed.skipped.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--wrk-seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ccbench-") as tmp:
        work = Path(tmp)
        error, details, steps = attribution_and_probe_cost(work, args.probes)
        overhead, rum_details = rum_overhead(work, args.wrk_seconds, args.rounds)
    print(json.dumps({"details": {k: round(v, 3) for k, v in details.items()}}, ensure_ascii=False))
    print(json.dumps({"probe_step_ms": {k: round(v, 1) for k, v in steps.items()}}))
    print(json.dumps({"rum": rum_details}, default=str))
    print(json.dumps({
        "attribution_error_ms": round(error, 2),
        "probe_cpu_pct_per_county": round(details["prober_pct_of_core_at_60s"]
                                          + details["app_pct_of_core_at_60s"], 3),
        "rum_overhead_pct": round(overhead, 2),
        "chart_p99_ms": None,
    }))


if __name__ == "__main__":
    main()
