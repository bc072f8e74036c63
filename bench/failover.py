"""Failover figures on real VMs: detection, RTO (clone and cold), RPO, failback with nothing lost.

N counties (`--counties`, default 13) are provisioned at the primary site by cloning its template
in a state folder of its own (/var/lib/countycloud-bench-dr), each gets a writer committing one
certification every half second through its address and one backup round (its restore point).
Three vantage points watch the sites (this process as "service", two `python -m dr.witness`
processes as "witness" and "secondary"). Then, side by side in one run:

1. kill the primary (`countycloud site stop primary`); detect_s: until the watch declares it DOWN;
   `countycloud dr failover --failed-at KILL` by clone: rto_s (kill -> last county serving through
   its address), rto_first_tier_s, rpo_backup_s (worst: restore point -> kill);
2. primary back, `countycloud dr failback`: failback_lost (acknowledged writes missing at home);
3. kill again, `dr failover --cold` (boot the golden image instead of cloning): rto_cold_s, and
   bare_boot_s: the fastest county's boot alone in that run (start + app ready, no restore), the
   machine's bare boot of the same image at that moment; rto_ratio = rto_s / bare_boot_s;
4. failback again, retire everything.

rpo_replicated_s is null: there is no replication stream (the backup issue's replicated tier).
Without a recovery plan file the counties fail over in one tier, 3 at a time.

Last line: {"counties", "bare_boot_s", "detect_s", "rto_s", "rto_ratio", "rto_first_tier_s",
"rpo_backup_s", "rpo_replicated_s", "failback_lost", "rto_cold_s"}.
Run (under the machine's VM lock): flock /work/vm.lock .venv/bin/python bench/failover.py --counties 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.inventories import two_sites  # noqa: E402
from dr import observations, witness  # noqa: E402
from dr.health import SiteVerdict, WatchRules  # noqa: E402
from tests.integration.vm.conftest import Cloud  # noqa: E402
from tests.integration.vm.test_failover import Writer, _writer  # noqa: E402

STATE = Path(os.environ.get("COUNTYCLOUD_BENCH_DR_STATE", "/var/lib/countycloud-bench-dr"))
# Ports of the DR helper's block: guests 24300-24349, addresses 24350-24379, backup REST 24390.
ENV = {
    **os.environ, "COUNTYCLOUD_STATE_DIR": str(STATE), "COUNTYCLOUD_DATABASE_URL": f"sqlite:///{STATE}/cc.db",
    "COUNTYCLOUD_GUEST_PORT_FIRST": "24300", "COUNTYCLOUD_GUEST_PORT_LAST": "24349",
    "COUNTYCLOUD_GATEWAY_PORT_FIRST": "24350", "COUNTYCLOUD_GATEWAY_PORT_LAST": "24379",
    "COUNTYCLOUD_BACKUP_REST_PORT": "24390",
}
SLUGS = ["taichung", "taoyuan", "changhua", "hsinchu-county", "hsinchu-city", "keelung", "yunlin",
         "chiayi-county", "pingtung", "chiayi-city", "penghu", "kinmen", "lienchiang"]


def inventory(count: int) -> str:
    return two_sites(SLUGS[:count])


def cli(*args: str, timeout: float = 3600) -> str:
    done = subprocess.run([sys.executable, "-m", "controlplane", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"countycloud {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    return done.stdout


def cli_json(*args: str) -> Any:
    out = cli(*args, "--json")
    return json.loads(out[min(i for i in (out.find("{"), out.find("[")) if i >= 0):])


BACKUP = """
import sys
from controlplane import bootstrap, jobs
from inventory.jobs import JobKind
bootstrap.register_job_builders()
platform = bootstrap.platform()
try:
    for county in sys.argv[1:]:
        jobs.start(platform.engine, JobKind.BACKUP, county, {"tenant": county, "rest_port": 24390},
                   context=platform, artifacts_root=platform.artifacts_dir)
finally:
    jobs.shutdown()
"""


def make_writers(counties: list[str]) -> dict[str, Writer]:
    """A writer per county, the counties seeded at once (minutes each under TCG)."""
    from concurrent.futures import ThreadPoolExecutor

    cloud = Cloud(env=ENV)
    with ThreadPoolExecutor(max_workers=len(counties)) as pool:
        return dict(zip(counties, pool.map(lambda county: _writer(cloud, county), counties), strict=True))


def watch_down(since: float, timeout_s: float = 60) -> float:
    """Seconds from `since` until the watch declares the primary DOWN (its declared_at)."""
    rules = WatchRules()
    ends = time.time() + timeout_s
    while time.time() < ends:
        status = observations.verdicts(STATE, ["primary"], rules)["primary"]
        if status.verdict is SiteVerdict.DOWN and status.declared_at is not None:
            return round(status.declared_at - since, 2)
        time.sleep(0.2)
    raise SystemExit("the watch did not declare the primary down within a minute")


def failover(*extra: str) -> tuple[dict[str, Any], float, float]:
    """Kill the primary, wait for the watch, fail over: the report, detect_s, the kill's time."""
    killed = time.time()
    cli("site", "stop", "primary")
    detect = watch_down(killed)
    out = cli("dr", "failover", "--failed-at", str(killed), "--json", *extra)
    return json.loads(out[out.index("{"):]), detect, killed


def failback() -> None:
    cli("site", "start", "primary")
    cli("dr", "failback")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counties", type=int, default=13)
    args = parser.parse_args()
    counties = SLUGS[:args.counties]
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / "bench.yaml").write_text(inventory(args.counties))
    cli("setup", timeout=3600)
    cli("inventory", "apply", str(STATE / "bench.yaml"))
    cli("tenant", "create", *counties)
    writers = make_writers(counties)
    for writer in writers.values():
        writer.start()
    from dr import targets
    from inventory.db import make_engine, session_scope

    engine = make_engine(ENV["COUNTYCLOUD_DATABASE_URL"])
    with session_scope(engine) as session:
        targets.write_targets(STATE, targets.from_database(session, STATE))
    stop = threading.Event()
    service = threading.Thread(target=witness.run, args=(STATE, "service"), kwargs={"stop": stop},
                               daemon=True)
    service.start()
    others = [subprocess.Popen([sys.executable, "-m", "dr.witness", "--state-dir", str(STATE),
                                "--vantage", name], cwd=ROOT, env=ENV) for name in ("witness", "secondary")]
    try:
        time.sleep(3)
        subprocess.run([sys.executable, "-c", BACKUP, *counties], cwd=ROOT, env=ENV, check=True, timeout=3600)
        time.sleep(5)  # writes after the restore points
        clone, detect_s, _ = failover()
        failed_over = time.time()
        kept = {county: writer.present() for county, writer in writers.items()}
        with session_scope(engine) as session:  # the watch follows the counties to the secondary
            targets.write_targets(STATE, targets.from_database(session, STATE))
        time.sleep(3)
        failback()
        time.sleep(3)
        for writer in writers.values():
            writer.halt()
        # Failback's loss: what the secondary held (brought by the failover, or acknowledged there
        # after it) missing at home. Writes acknowledged between the kill's start and its effect
        # went to the primary: the failover's loss, not this.
        lost = sum(len((kept[county] | {p for p, at in writer.acked if at > failed_over}) - writer.present())
                   for county, writer in writers.items())
        with session_scope(engine) as session:
            targets.write_targets(STATE, targets.from_database(session, STATE))
        time.sleep(4)  # the watch sees the primary up again before the next kill
        cold, _, _ = failover("--cold")
        bare = min(row["parts"].get("start", 0) + row["parts"].get("ready", 0) for row in cold["counties"])
        failback()
    finally:
        stop.set()
        for process in others:
            process.terminate()
        for writer in writers.values():
            writer.halt()
    for county in counties:
        cli("tenant", "retire", county, "--purge")
    print(json.dumps({"clone_report": clone, "cold_report": cold}, ensure_ascii=False))
    figures = {
        "counties": len(counties), "bare_boot_s": round(bare, 2), "detect_s": detect_s,
        "rto_s": clone["rto_s"], "rto_ratio": round(clone["rto_s"] / bare, 3) if bare else None,
        "rto_first_tier_s": clone["rto_first_tier_s"], "rpo_backup_s": clone["rpo_worst_s"],
        "rpo_replicated_s": None, "failback_lost": lost, "rto_cold_s": cold["rto_s"],
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
