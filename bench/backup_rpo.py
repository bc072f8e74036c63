"""rpo_s on a real VM: the backup tier's worst RPO over a window of steady writes, with the service's
own schedule making the rounds (issue 12).

One county of the `backup` tier (`hualien`, its tier's default interval) is cloned from the primary's
template in the VM suite's state folder (COUNTYCLOUD_BENCH_RPO_STATE, default
/var/lib/countycloud-test: its templates are reused; the bench has its own platform database file
there, bench-rpo.db, and its own ports 24600-24649). `countycloud serve --background` runs the
schedule: rounds on the tier's interval, each copied offsite by the round. A writer commits one
certification every half second through the county's address and keeps the time each was
acknowledged. Meanwhile this process lists the offsite repository (the secondary's, by path, as a
failover reads it) every `--poll` seconds; each new restore point of the county is dumped and its
certifications noted with the moment the point was seen. A write's lag: from its acknowledgement to
the first offsite point holding it. rpo_s is the worst lag over the window: what a site failure at
the worst moment would lose (the lag is over-stated by at most one poll).

Last line: {"rpo_s", "rpo_p50_s", "writes", "missing", "window_s", "poll_s", "interval_s" (the tier's,
its RPO objective), "round_period_s" (how often the schedule rounds the county), "points"}.
Run (under the machine's VM lock): flock /work/vm.lock .venv/bin/python bench/backup_rpo.py --window 600
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backup import consistent, repository  # noqa: E402
from backup.policy import round_period  # noqa: E402
from backup.restic import Restic  # noqa: E402
from bench.inventories import set_up, two_sites  # noqa: E402
from controlplane.backup_schedule import ROUND_TICK  # noqa: E402
from tests.integration.vm.conftest import Cloud  # noqa: E402
from tests.integration.vm.test_failover import _writer  # noqa: E402

STATE = Path(os.environ.get("COUNTYCLOUD_BENCH_RPO_STATE", "/var/lib/countycloud-test"))
# Ports: guests 24600-24629, addresses 24630-24639, the offsite REST server 24640 (the primary's
# 24642), the service 24641.
ENV = {
    **os.environ, "COUNTYCLOUD_STATE_DIR": str(STATE),
    "COUNTYCLOUD_DATABASE_URL": f"sqlite:///{STATE}/bench-rpo.db",
    "COUNTYCLOUD_GUEST_PORT_FIRST": "24600", "COUNTYCLOUD_GUEST_PORT_LAST": "24629",
    "COUNTYCLOUD_GATEWAY_PORT_FIRST": "24630", "COUNTYCLOUD_GATEWAY_PORT_LAST": "24639",
    "COUNTYCLOUD_BACKUP_REST_PORT": "24640", "COUNTYCLOUD_BACKUP_REST_PORTS": '{"primary": 24642}',
    "COUNTYCLOUD_SERVICE_PORT": "24641",
    "COUNTYCLOUD_DR_WATCH": "false",  # the suite's sites are not this bench's to watch
}
COUNTY = "hualien"
INVENTORY = two_sites([COUNTY])


class Offsite:
    """The county's restore points at the secondary, as they land: each new one dumped once."""

    def __init__(self, scratch: Path) -> None:
        self.backup = repository.site_backup(STATE, "secondary")
        self.restic = Restic(cache_dir=self.backup.cache_dir)
        self.scratch = scratch
        self.seen: set[str] = set()

    def new_purposes(self) -> set[str]:
        """The certifications' purposes in restore points that landed since the last call."""
        if not (self.backup.repository_dir / "config").exists():
            return set()
        found: set[str] = set()
        for snapshot in self.restic.snapshots(self.backup.local(), no_lock=True):
            if snapshot.id in self.seen or consistent.county_tag(COUNTY) not in snapshot.tags:
                continue
            target = self.scratch / f"{snapshot.id[:12]}.db"
            self.restic.dump(self.backup.local(), snapshot.id, f"/{consistent.DATABASE_FILENAME}", target,
                             no_lock=True)
            with sqlite3.connect(target) as db:
                found |= {row[0] for row in db.execute("SELECT purpose FROM certification")}
            target.unlink()
            self.seen.add(snapshot.id)
        return found


def tier_interval() -> int:
    from inventory import queries
    from inventory.db import make_engine, session_scope

    engine = make_engine(ENV["COUNTYCLOUD_DATABASE_URL"])
    try:
        with session_scope(engine) as session:
            return queries.protection_of(session, COUNTY).interval_s
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--window", type=float, default=600.0, help="seconds of steady writes")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between offsite listings")
    parser.add_argument("--grace", type=float, default=180.0, help="seconds after the window for the "
                        "last writes to land offsite")
    args = parser.parse_args()

    cloud = Cloud(env=ENV)
    set_up(cloud, INVENTORY)
    interval = tier_interval()
    try:
        cloud.create(COUNTY)
        writer = _writer(cloud, COUNTY)
        cloud.cli("serve", "--background")
        with tempfile.TemporaryDirectory(dir=STATE) as scratch:
            offsite = Offsite(Path(scratch))
            first_seen: dict[str, float] = {}
            began = time.monotonic()
            while not offsite.seen:  # the schedule's first round landed offsite (it may hold no
                offsite.new_purposes()  # certification yet: the writer starts after it)
                if time.monotonic() - began > 300:
                    raise SystemExit("no offsite restore point within 300 s of the service's start")
                time.sleep(args.poll)
            writer.start()
            window_from = time.time()
            ends = time.monotonic() + args.window
            while time.monotonic() < ends + args.grace:
                if time.monotonic() >= ends and not writer.stop.is_set():
                    writer.halt()
                landed = offsite.new_purposes()
                now = time.time()
                for purpose in landed:
                    first_seen.setdefault(purpose, now)
                if writer.stop.is_set() and all(p in first_seen for p, _ in writer.acked):
                    break
                time.sleep(args.poll)
            writer.halt()
        lags = [first_seen[p] - acked for p, acked in writer.acked
                if p in first_seen and acked >= window_from]
        missing = sum(1 for purpose, _ in writer.acked if purpose not in first_seen)
        figures = {
            "rpo_s": round(max(lags), 2) if lags else None,
            "rpo_p50_s": round(statistics.median(lags), 2) if lags else None,
            "writes": len(lags), "missing": missing, "window_s": args.window, "poll_s": args.poll,
            "interval_s": interval, "round_period_s": round_period(timedelta(seconds=interval),
                                                                  ROUND_TICK).total_seconds(),
            "points": len(offsite.seen), "writer_errors": writer.errors,
        }
    finally:
        cloud.cli("serve", "--stop", check=False)
        cloud.cli("tenant", "retire", COUNTY, "--purge", timeout=900, check=False)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
