"""rpo_replicated_s on a real VM: the worst lag between a write the app acknowledged and its presence
in the restorable replica, over a bounded window of steady writes (issue 12's replicated tier).

One county of the `replicated` tier is cloned from the primary's template in a state folder
(COUNTYCLOUD_BENCH_REPL_STATE, default /var/lib/countycloud-bench-repl; the VM suite's folder
/var/lib/countycloud-test may be given to reuse its templates: the bench has its own platform
database file there, bench-replication.db, and its own ports); the secondary's replica target
(`rclone serve sftp`) runs on 127.0.0.1:31250; Litestream streams the county database from the
guest through its guestfwd.
A writer commits one certification every half second through the county's address (as
bench/failover.py does); meanwhile this process restores the replica from the served folder every
`--poll` seconds (backup.replication.restore_database, the DR path) and notes when each
acknowledged certification is first in a restored database. lag = first restored - acknowledged
(an upper bound: it includes up to one poll interval and one restore). The window of steady
writes (`--window` s) starts at the first restore that works: until then Litestream is starting in
the guest after `enable` (stream_start_s), and the writes acknowledged meanwhile are reported apart
(startup_writes, startup_lag_max_s). After the window the writer stops and the poll goes on
`--grace` seconds; a write never seen is counted `missing`. A thread lists the folder every 50 ms:
to_host = acknowledged -> the first level-0 LTX file that reached the host after it (a lower
bound of the write's own file), host_to_restored = the rest of the lag.

Last line: {"rpo_replicated_s", "rpo_replicated_p50_s", "writes", "missing", "window_s", "poll_s",
"restore_s", "restores", "restores_failed", "to_host_p50_s", "to_host_max_s",
"host_to_restored_p50_s", "host_to_restored_max_s", "stream_start_s", "startup_writes",
"startup_lag_max_s"}.
Run (under the machine's VM lock): flock /work/vm.lock .venv/bin/python bench/replication.py --window 600
[--log FILE: every poll with the LTX listing, each write's times, each level-0 file's arrival]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backup import replica, replicaserver, replication  # noqa: E402
from bench.inventories import set_up, two_sites  # noqa: E402
from provisioning.platform import Platform, host_domain_type  # noqa: E402
from tests.integration.vm.conftest import Cloud  # noqa: E402
from tests.integration.vm.test_failover import _writer  # noqa: E402

STATE = Path(os.environ.get("COUNTYCLOUD_BENCH_REPL_STATE", "/var/lib/countycloud-bench-repl"))
REPLICA_PORT = 31250  # this bench's own (the replication helper's block 31200-31299)
ENV = {
    **os.environ, "COUNTYCLOUD_STATE_DIR": str(STATE),
    "COUNTYCLOUD_DATABASE_URL": f"sqlite:///{STATE}/bench-replication.db",
    "COUNTYCLOUD_GUEST_PORT_FIRST": "31200", "COUNTYCLOUD_GUEST_PORT_LAST": "31239",
    "COUNTYCLOUD_GATEWAY_PORT_FIRST": "31240", "COUNTYCLOUD_GATEWAY_PORT_LAST": "31249",
    "COUNTYCLOUD_REPLICA_PORT": str(REPLICA_PORT),
}
COUNTY = "taipei"
INVENTORY = two_sites([COUNTY], protection="replicated")


def restored_purposes(site: replica.ReplicaSite, scratch: Path) -> tuple[set[str], float]:
    """The certifications' purposes in a database restored from the replica now, and the restore's
    duration."""
    target = scratch / f"r-{time.monotonic_ns()}.db"
    began = time.monotonic()
    replication.restore_database(site, COUNTY, target)
    took = time.monotonic() - began
    with sqlite3.connect(target) as db:
        found = {row[0] for row in db.execute("SELECT purpose FROM certification")}
    for leftover in scratch.glob(f"{target.name}*"):
        leftover.unlink()
    return found, took


class Arrivals:
    """When each level-0 LTX file first appeared in the served folder (host clock), listed every
    50 ms by a thread: where a write's lag splits into reaching the host and becoming restored."""

    def __init__(self, site: replica.ReplicaSite) -> None:
        self.site = site
        self.seen: dict[int, tuple[float, float]] = {}  # max txid -> (on the host, header time)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="arrivals", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            for entry in replica.listing(self.site, COUNTY):
                if entry.level == 0 and entry.header is not None and entry.header.max_txid not in self.seen:
                    self.seen[entry.header.max_txid] = (now, entry.header.timestamp.timestamp())
            self.stop.wait(0.05)

    def start(self) -> None:
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def first_after(self, moment: float) -> float:
        """The first level-0 file's arrival after `moment` (a write acknowledged then is in it or a
        later one: a lower bound of when its changes reached the host)."""
        return min((seen for seen, _ in self.seen.values() if seen >= moment), default=math.inf)


def note(log: TextIO | None, entry: dict[str, object]) -> None:
    if log is not None:
        log.write(json.dumps(entry) + "\n")
        log.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=float, default=120.0)
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--start-within", type=float, default=120.0,
                        help="seconds the stream may take to start after enable (writes acknowledged "
                        "before its first restorable state are reported apart, as startup_*)")
    parser.add_argument("--keep", action="store_true", help="leave the county running")
    parser.add_argument("--log", type=Path, help="JSON lines: every poll's time, outcome and the LTX "
                        "folder's listing before and after it, then each write's times and each "
                        "level-0 file's arrival")
    args = parser.parse_args()
    log = args.log.open("w") if args.log else None

    STATE.mkdir(parents=True, exist_ok=True)
    cloud = Cloud(env=ENV)
    set_up(cloud, INVENTORY)
    site = replica.replica_site(STATE, "secondary")
    target = replicaserver.server(site, REPLICA_PORT)
    replicaserver.stop(target)
    subprocess.run(["rm", "-rf", str(site.served)], check=True)
    replicaserver.start(target)
    from inventory.db import make_engine

    platform = Platform(engine=make_engine(ENV["COUNTYCLOUD_DATABASE_URL"]), state_dir=STATE,
                        cache_dir=STATE / "cache", domain_type=host_domain_type())
    try:
        cloud.create(COUNTY)
        writer = _writer(cloud, COUNTY)
        replication.enable(platform, COUNTY, target=target)
        first_seen: dict[str, float] = {}
        restores: list[float] = []
        failed: list[str] = []
        arrivals = Arrivals(site)
        enabled_at = time.time()
        steady_from: float | None = None  # the first restore that worked: the stream is up
        with tempfile.TemporaryDirectory(dir=STATE) as scratch:
            writer.start()
            arrivals.start()
            ends = time.monotonic() + args.window + args.start_within
            while time.monotonic() < ends + args.grace:
                if steady_from is None and time.time() - enabled_at > args.start_within:
                    raise SystemExit(f"no restorable replica {args.start_within} s after enable")
                if time.monotonic() >= ends and not writer.stop.is_set():
                    writer.halt()
                began = time.time()
                before = replica.listing(site, COUNTY)
                try:
                    found, took = restored_purposes(site, Path(scratch))
                except replication.ReplicationError as error:
                    if steady_from is not None:
                        failed.append(str(error)[-300:])
                    note(log, {"t": began, "ok": False, "error": str(error)[-300:],
                               "before": [f.as_dict() for f in before],
                               "after": [f.as_dict() for f in replica.listing(site, COUNTY)]})
                    time.sleep(args.poll)
                    continue
                now = time.time()
                if steady_from is None:
                    steady_from = began
                    ends = time.monotonic() + args.window  # the window of steady writes from here
                note(log, {"t": began, "ok": True, "took": took,
                           "before": [f.as_dict() for f in before]})
                restores.append(took)
                for purpose in found:
                    first_seen.setdefault(purpose, now)
                if writer.stop.is_set() and all(p in first_seen for p, _ in writer.acked):
                    break
                time.sleep(args.poll)
            writer.halt()
            arrivals.halt()
        if log is not None:
            for purpose, acked in writer.acked:
                note(log, {"write": purpose, "acked": acked, "seen": first_seen.get(purpose)})
            for txid, (seen, at) in sorted(arrivals.seen.items()):
                note(log, {"ltx": txid, "on_host": seen, "header_at": at})
        assert steady_from is not None
        steady = [(p, acked) for p, acked in writer.acked if acked >= steady_from]
        startup = [first_seen[p] - acked for p, acked in writer.acked
                   if acked < steady_from and p in first_seen]
        lags = [first_seen[p] - acked for p, acked in steady if p in first_seen]
        split = [(arrivals.first_after(acked), acked, first_seen[p]) for p, acked in steady
                 if p in first_seen]
        to_host = [landed - acked for landed, acked, _ in split if landed < math.inf]
        rest = [seen - landed for landed, _, seen in split if landed < math.inf]
        missing = sum(1 for purpose, _ in writer.acked if purpose not in first_seen)
        figures = {
            "rpo_replicated_s": round(max(lags), 2) if lags else None,
            "rpo_replicated_p50_s": round(statistics.median(lags), 2) if lags else None,
            "writes": len(steady), "missing": missing, "window_s": args.window, "poll_s": args.poll,
            "restore_s": round(statistics.median(restores), 3) if restores else None,
            "restores": len(restores), "restores_failed": len(failed),
            "to_host_p50_s": round(statistics.median(to_host), 2) if to_host else None,
            "to_host_max_s": round(max(to_host), 2) if to_host else None,
            "host_to_restored_p50_s": round(statistics.median(rest), 2) if rest else None,
            "host_to_restored_max_s": round(max(rest), 2) if rest else None,
            "stream_start_s": round(steady_from - enabled_at, 2),
            "startup_writes": len(startup), "startup_lag_max_s": round(max(startup), 2) if startup else None,
        }
        if failed:
            print(f"restores that failed: {len(failed)}; last: {failed[-1]}", file=sys.stderr)
    finally:
        if not args.keep:
            cloud.cli("tenant", "retire", COUNTY, "--purge", timeout=900)
            replicaserver.stop(target)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
