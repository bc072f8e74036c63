"""Failover figures on real VMs: detection, RTO (clone and cold), RPO per tier, failback with nothing lost.

N counties (`--counties`, default 13) are provisioned at the primary site by cloning its template
in a state folder of its own (/var/lib/countycloud-bench-dr). The recovery plan is the sample's
(inventory/samples/recovery-plan.yaml: tier-1 of 3 counties, then 6, then 4), kept to the counties
present; tier-1's counties are of the `replicated` protection tier: Litestream in their guests
streams to the secondary's replica target (rclone serve sftp) from before the writes start. Each
county gets a writer committing one certification a second through its address and one
backup round (its restore point). Three vantage points watch the sites (this process as "service",
two `python -m dr.witness` processes as "witness" and "secondary"). Then, side by side in one run:

1. kill the primary (`countycloud site stop primary`); detect_s: until the watch declares it DOWN;
   `countycloud dr failover --plan PLAN --failed-at KILL` by clone: rto_s (kill -> last county
   serving through its address), rto_first_tier_s; rpo_backup_s and rpo_replicated_s measured by
   the writers, per tier: the age at the kill of the oldest acknowledged write missing after the
   failover (0 when none is); the report's own (restore point -> kill) beside them;
2. primary back, `countycloud dr failback`: failback_lost (acknowledged writes missing at home);
3. kill again, `dr failover --cold` (boot the golden image instead of cloning): rto_cold_s, and
   bare_boot_s: the fastest county's boot alone in that run (start + app ready, no restore), the
   machine's bare boot of the same image at that moment; rto_ratio = rto_s / bare_boot_s;
4. failback again, retire everything.

Last line: {"counties", "bare_boot_s", "detect_s", "rto_s", "rto_ratio", "rto_first_tier_s",
"rpo_backup_s", "rpo_replicated_s", "failback_lost", "rto_cold_s"}.
Run (under the machine's VM lock): flock /work/vm.lock .venv/bin/python bench/failover.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.inventories import two_sites  # noqa: E402
from dr import observations, witness  # noqa: E402
from dr.health import SiteVerdict, WatchRules  # noqa: E402
from tests.integration.vm.conftest import Cloud  # noqa: E402
from tests.integration.vm.test_failover import Writer, _writer  # noqa: E402

STATE = Path(os.environ.get("COUNTYCLOUD_BENCH_DR_STATE", "/var/lib/countycloud-bench-dr"))
# Ports of the DR helper's block: guests 24300-24349, addresses 24350-24379, backup REST 24390,
# the replica target 24391.
REPLICA_PORT = 24391
ENV = {
    **os.environ, "COUNTYCLOUD_STATE_DIR": str(STATE), "COUNTYCLOUD_DATABASE_URL": f"sqlite:///{STATE}/cc.db",
    "COUNTYCLOUD_GUEST_PORT_FIRST": "24300", "COUNTYCLOUD_GUEST_PORT_LAST": "24349",
    "COUNTYCLOUD_GATEWAY_PORT_FIRST": "24350", "COUNTYCLOUD_GATEWAY_PORT_LAST": "24379",
    "COUNTYCLOUD_BACKUP_REST_PORT": "24390", "COUNTYCLOUD_REPLICA_PORT": str(REPLICA_PORT),
}
SLUGS = ["taichung", "taoyuan", "changhua", "hsinchu-county", "hsinchu-city", "keelung", "yunlin",
         "chiayi-county", "pingtung", "chiayi-city", "penghu", "kinmen", "lienchiang"]


FIRST_STATE_WITHIN_S = 300.0  # Litestream started in TCG guests, each first snapshot sent


def recovery_plan(counties: list[str]) -> tuple[str, list[str]]:
    """The sample plan kept to `counties` (tiers left empty dropped), and its first tier's counties."""
    from dr import plans

    raw = yaml.safe_load(plans.sample_path().read_text())
    for tier in raw["tiers"]:
        tier["counties"] = [county for county in tier["counties"] if county in counties]
    raw["tiers"] = [tier for tier in raw["tiers"] if tier["counties"]]
    first = min(raw["tiers"], key=lambda tier: tier["order"])["counties"]
    return yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), first


def start_replication(counties: list[str]) -> None:
    """The secondary's replica target, fresh, and each county's stream; back once each has a state."""
    from backup import replica, replicaserver, replication
    from inventory.db import make_engine
    from provisioning.platform import Platform, host_domain_type

    platform = Platform(engine=make_engine(ENV["COUNTYCLOUD_DATABASE_URL"]), state_dir=STATE,
                        cache_dir=STATE / "cache", domain_type=host_domain_type())
    site = replica.replica_site(STATE, "secondary")
    target = replicaserver.server(site, REPLICA_PORT)
    replicaserver.stop(target)
    shutil.rmtree(site.served, ignore_errors=True)  # an earlier run's replicas
    replicaserver.start(target)
    for county in counties:
        replication.enable(platform, county, target=target)
    ends = time.monotonic() + FIRST_STATE_WITHIN_S
    while [county for county in counties if replication.newest(platform, county) is None]:
        if time.monotonic() > ends:
            raise SystemExit(f"no replicated state within {FIRST_STATE_WITHIN_S} s")
        time.sleep(1)


def rpo_by_tier(writers: dict[str, Writer], present: dict[str, set[str]], killed: float,
                before: float, replicated: list[str]) -> dict[str, float | None]:
    """Worst RPO per protection tier as the writers saw it: the age at the kill of the oldest write
    acknowledged before `before` (the failover's end) and missing after it; 0 when none is missing.
    (Writes acknowledged between the kill command and its effect count: they were lost too.)"""
    ages: dict[str, list[float]] = {"backup": [], "replicated": []}
    for county, writer in writers.items():
        lost = [at for purpose, at in writer.acked if at < before and purpose not in present[county]]
        tier = "replicated" if county in replicated else "backup"
        ages[tier].append(max(0.0, killed - min(lost)) if lost else 0.0)
    return {tier: round(max(found), 2) if found else None for tier, found in ages.items()}


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


SEEDING_AT_ONCE = 3  # 13 at once on 2 cores: SSH logins and the seeds' transactions timed out
# The writer: one certification a second per county. (Every half second, as the VM test
# writes, 13 TCG guests took ~22 % of a core each: more than the 2 cores, docs/benchmarks.md.)
WRITE_EVERY_S = 1.0


def make_writers(counties: list[str]) -> dict[str, Writer]:
    """A writer per county, the counties seeded a few at a time (minutes each under TCG)."""
    from concurrent.futures import ThreadPoolExecutor

    cloud = Cloud(env=ENV)
    with ThreadPoolExecutor(max_workers=SEEDING_AT_ONCE) as pool:
        writers = dict(zip(counties, pool.map(lambda county: _writer(cloud, county), counties), strict=True))
    for writer in writers.values():
        writer.interval_s = WRITE_EVERY_S
    return writers


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
    """Kill the primary, wait for the watch, fail over by the plan: the report, detect_s, the kill's time."""
    killed = time.time()
    cli("site", "stop", "primary")
    detect = watch_down(killed)
    out = cli("dr", "failover", "--plan", str(STATE / "plan.yaml"), "--failed-at", str(killed), "--json",
              *extra)
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
    plan, replicated = recovery_plan(counties)
    (STATE / "plan.yaml").write_text(plan)
    (STATE / "bench.yaml").write_text(two_sites(counties, replicated=replicated))
    cli("setup", timeout=3600)
    cli("inventory", "apply", str(STATE / "bench.yaml"))
    began = time.monotonic()
    cli("tenant", "create", *counties)
    created_s = time.monotonic() - began
    writers = make_writers(counties)
    start_replication(replicated)
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
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", BACKUP, *counties], cwd=ROOT, env=ENV, check=True, timeout=3600)
        backups_s = time.monotonic() - began
        time.sleep(5)  # writes after the restore points
        clone, detect_s, killed = failover()
        failed_over = time.time()
        kept = {county: writer.present() for county, writer in writers.items()}
        rpo = rpo_by_tier(writers, kept, killed, failed_over, replicated)
        print(json.dumps({"clone_report": clone, "detect_s": detect_s, "rpo": rpo}, ensure_ascii=False),
              flush=True)  # the first half's figures, kept should the rest fail
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
    reported = {tier: max((row["rpo_s"] for row in clone["counties"]
                           if (row["county"] in replicated) == (tier == "replicated")), default=None)
                for tier in ("backup", "replicated")}
    print(json.dumps({"created_s": round(created_s, 1), "backups_s": round(backups_s, 1),
                      "replicated": replicated, "rpo_reported": reported,
                      "writer_errors": {county: writer.errors for county, writer in writers.items()}}))
    figures = {
        "counties": len(counties), "bare_boot_s": round(bare, 2), "detect_s": detect_s,
        "rto_s": clone["rto_s"], "rto_ratio": round(clone["rto_s"] / bare, 3) if bare else None,
        "rto_first_tier_s": clone["rto_first_tier_s"], "rpo_backup_s": rpo["backup"],
        "rpo_replicated_s": rpo["replicated"], "failback_lost": lost, "rto_cold_s": cold["rto_s"],
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
