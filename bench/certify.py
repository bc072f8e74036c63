"""Certification throughput and safety: 32 concurrent clients against ONE budget line over HTTP.

For SQLite and PostgreSQL, a real `python -m tenant_app serve` (uvicorn, one process) is started on
127.0.0.1 with a fresh database holding one hot line; `wrk -t2 -c32` posts certifications of 1 元 to
it for a bounded time. The same run is made against the naive read-then-write route (bench-only,
TENANT_APP_ENABLE_NAIVE_CERTIFY) as the reference. Afterwards the database is read: over-commit is
money certified beyond the line's balance, plus any certification rows the line's running total
lost (a lost update). Each server first gets a one-second warm-up on another line, not counted.

Last line: {"sqlite_per_s", "postgres_per_s", "p99_ms", "overcommits", "naive_overcommits",
"ratio_vs_naive"}; ratio_vs_naive = (sqlite + postgres requests/s) / (the same for the naive route).
Run: .venv/bin/python bench/certify.py [--duration 6] [--available 30000]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tenant_app import hotline  # noqa: E402
from tenant_app.devserver import running_server  # noqa: E402
from tests.support import postgres  # noqa: E402  (the suite's PostgreSQL on 127.0.0.1:55432)

WRK = "/usr/bin/wrk"
CLIENTS = 32
WARM_UP_BALANCE = 1_000_000_000
AMOUNT = 1  # 元 per certification, so the over-commit in 元 is also a count of requests

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.body = '{{"budget_line_id": {line_id}, "amount": {amount}}}'
"""


@dataclass
class Run:
    database: str
    route: str
    available: int
    requests: int
    per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    server_p99_ms: float | None  # bound from the app's own latency histogram (no queueing before it)
    accepted: int
    accepted_per_s: float  # certifications committed per second (the rest were refusals)
    overcommit: int  # 元 certified beyond the balance + 元 missing from the running total


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def _wrk(base: str, path: str, token: str, line_id: int, duration: int, scratch: Path) -> dict[str, float]:
    script = scratch / "certify.lua"
    script.write_text(LUA.format(token=token, line_id=line_id, amount=AMOUNT))
    out = subprocess.run([WRK, "-t2", f"-c{CLIENTS}", f"-d{duration}s", "--latency", "-s", str(script),
                          base + path], check=True, capture_output=True, text=True,
                         timeout=duration + 30).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    if "99" not in percentiles:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(percentiles["50"]),
        "p99_ms": _ms(percentiles["99"]),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def _server_p99_ms(metrics: str, path: str) -> float | None:
    """The smallest histogram bound under which 99% of the route's requests finished in the app."""
    buckets = [(float("inf") if le == "+Inf" else float(le), float(count)) for le, count in re.findall(
        r'tenant_app_request_seconds_bucket\{le="([^"]+)",method="POST",route="'
        + re.escape(path) + r'"\} (\S+)', metrics)]
    if not buckets:
        return None
    total = buckets[-1][1]
    return next(le for le, count in buckets if count >= 0.99 * total) * 1000


def run(database: str, url: str, route: str, available: int, duration: int,
        extra_env: dict[str, str] | None = None) -> Run:
    line = hotline.prepare(url, available)
    warm_line = hotline.prepare(url, WARM_UP_BALANCE)
    naive = route == "naive"
    env = {"TENANT_APP_ENABLE_NAIVE_CERTIFY": "true"} if naive else {}
    env.update(extra_env or {})
    path = "/api/v1/naive/certifications" if naive else "/api/v1/certifications"
    with tempfile.TemporaryDirectory() as scratch, running_server(url, extra_env=env) as base:
        # A one-second warm-up on another line (connections, caches, first statements), not counted.
        _wrk(base, path, warm_line.token, warm_line.budget_line_id, 1, Path(scratch))
        figures = _wrk(base, path, line.token, line.budget_line_id, duration, Path(scratch))
        server_p99 = _server_p99_ms(httpx.get(f"{base}/metrics").text, path)
    done = hotline.committed(url, line.budget_line_id)
    overcommit = max(0, done.rows_total - available) + (done.rows_total - done.line_certified)
    return Run(database, route, available, int(figures["requests"]), figures["per_s"], figures["p50_ms"],
               figures["p99_ms"], int(figures["non_2xx"]), server_p99, done.rows_count,
               round(done.rows_count / duration, 1), overcommit)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=6, help="seconds per wrk run")
    parser.add_argument("--available", type=int, default=30_000,
                        help="the hot line's balance in 元 (1 元 per request); --available 10000 runs it dry")
    parser.add_argument("--synchronous", action="store_true",
                        help="only SQLite's durability: the writer route with synchronous=NORMAL and FULL, "
                             "alternated --repeat times each (issue 12)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.synchronous:
        # a balance no run exhausts: every request is a committed certification (a refusal commits nothing)
        compare_synchronous(args.duration, WARM_UP_BALANCE, args.repeat)
        return

    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as scratch:
        urls = {"sqlite": lambda: f"sqlite:///{scratch}/{len(runs)}.db", "postgres": postgres.fresh_database}
        for database, make_url in urls.items():
            for route in ("writer", "naive"):
                url = make_url()
                try:
                    runs.append(run(database, url, route, args.available, args.duration))
                finally:
                    if database == "postgres":
                        postgres.drop_database(url)
                print(json.dumps(asdict(runs[-1]), ensure_ascii=False), flush=True)

    by = {(r.database, r.route): r for r in runs}
    real = [by[("sqlite", "writer")], by[("postgres", "writer")]]
    naive = [by[("sqlite", "naive")], by[("postgres", "naive")]]
    print(json.dumps({
        "sqlite_per_s": round(real[0].per_s, 1),
        "postgres_per_s": round(real[1].per_s, 1),
        "p99_ms": round(max(r.p99_ms for r in real), 2),
        "server_p99_ms": round(max(r.server_p99_ms or 0.0 for r in real), 2),
        "overcommits": sum(r.overcommit for r in real),
        "naive_overcommits": sum(r.overcommit for r in naive),
        "ratio_vs_naive": round(sum(r.per_s for r in real) / sum(r.per_s for r in naive), 2),
    }))


def compare_synchronous(duration: int, available: int, repeat: int) -> None:
    """SQLite WAL with synchronous=NORMAL against FULL on the certification path, alternated so the
    machine's load falls on both alike. Last line: {"normal_per_s", "full_per_s", "full_cost_pct",
    "normal_p99_ms", "full_p99_ms", "overcommits"} (medians)."""
    import statistics

    runs: dict[str, list[Run]] = {"normal": [], "full": []}
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(repeat):
            for mode in ("normal", "full"):
                url = f"sqlite:///{scratch}/{mode}-{index}.db"
                done = run(f"sqlite-{mode}", url, "writer", available, duration,
                           {"TENANT_APP_SQLITE_SYNCHRONOUS": mode})
                runs[mode].append(done)
                print(json.dumps(asdict(done), ensure_ascii=False), flush=True)

    def median(mode: str, field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in runs[mode]))

    normal, full = median("normal", "accepted_per_s"), median("full", "accepted_per_s")
    print(json.dumps({
        "normal_per_s": round(median("normal", "per_s"), 1), "full_per_s": round(median("full", "per_s"), 1),
        "normal_accepted_per_s": round(normal, 1), "full_accepted_per_s": round(full, 1),
        "full_cost_pct": round(100 * (normal - full) / normal, 1) if normal else None,
        "normal_p99_ms": round(median("normal", "p99_ms"), 2),
        "full_p99_ms": round(median("full", "p99_ms"), 2),
        "overcommits": sum(r.overcommit for mode in runs for r in runs[mode]),
    }))


if __name__ == "__main__":
    main()
