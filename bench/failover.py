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

`--route` says who runs the failover of step 1:

- `command` (the default, as above): this process watches the sites with its own vantage points,
  waits for their verdict DOWN and runs `countycloud dr failover` itself;
- `automatic`: `countycloud serve` runs the site watch (its own vantage point and witness processes
  `witness` and `secondary`, the same three as above) with automatic failover and no grace period
  (COUNTYCLOUD_DR_AUTOMATIC=true, COUNTYCLOUD_DR_GRACE_S=0, COUNTYCLOUD_DR_PLAN the plan), and its
  workers run the job the watch submits; this process only kills the primary and waits for that
  job's report. detect_s is the watch's own `declared_at`. Steps 3-4 (the cold failover) are not
  run on this route (the service would fail over by clone): bare_boot_s, rto_ratio and rto_cold_s
  are null. `--no-cold` skips them on the command route too.

Either way rto_s and rto_first_tier_s count from the kill (the moment `countycloud site stop primary
--json` reports it began killing, 1-2 s after the command was issued: its own start) to each county
answering through its address (the job's report records when); the route's timeline (the command
issued, the kill's effect, detection, the job's submission, start and steps, each county serving,
all in seconds after the kill) is printed before the last line.

Last line: {"counties", "bare_boot_s", "detect_s", "rto_s", "rto_ratio", "rto_first_tier_s",
"rpo_backup_s", "rpo_replicated_s", "failback_lost", "rto_cold_s", "route"}.
Run (under the machine's VM lock): flock /work/vm.lock .venv/bin/python bench/failover.py [--route automatic]
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
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.inventories import two_sites  # noqa: E402
from dr import observations, witness  # noqa: E402
from dr.health import SiteVerdict, WatchRules  # noqa: E402
from inventory.db import as_utc  # noqa: E402
from provisioning import sites  # noqa: E402
from tests.integration.vm.conftest import Cloud  # noqa: E402
from tests.integration.vm.test_failover import Writer, _writer  # noqa: E402

if TYPE_CHECKING:
    from controlplane.jobs import JobView

STATE = Path(os.environ.get("COUNTYCLOUD_BENCH_DR_STATE", "/var/lib/countycloud-bench-dr"))
# Ports of the DR helper's block: guests 24300-24349, addresses 24350-24379, the service of the
# automatic route 24380, backup REST 24390 (the secondary's; the primary's 24392), the replica
# target 24391.
REPLICA_PORT = 24391
SERVICE_PORT = 24380
ENV = {
    **os.environ, "COUNTYCLOUD_STATE_DIR": str(STATE), "COUNTYCLOUD_DATABASE_URL": f"sqlite:///{STATE}/cc.db",
    "COUNTYCLOUD_GUEST_PORT_FIRST": "24300", "COUNTYCLOUD_GUEST_PORT_LAST": "24349",
    "COUNTYCLOUD_GATEWAY_PORT_FIRST": "24350", "COUNTYCLOUD_GATEWAY_PORT_LAST": "24379",
    "COUNTYCLOUD_BACKUP_REST_PORT": "24390", "COUNTYCLOUD_BACKUP_REST_PORTS": '{"primary": 24392}',
    "COUNTYCLOUD_REPLICA_PORT": str(REPLICA_PORT),
}
SLUGS = ["taichung", "taoyuan", "changhua", "hsinchu-county", "hsinchu-city", "keelung", "yunlin",
         "chiayi-county", "pingtung", "chiayi-city", "penghu", "kinmen", "lienchiang"]


FIRST_STATE_WITHIN_S = 300.0  # Litestream started in TCG guests, each first snapshot sent


def recovery_tier(plan_text: str) -> str:
    """The plan's first tier's name."""
    return str(min(yaml.safe_load(plan_text)["tiers"], key=lambda tier: tier["order"])["name"])


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


# The automatic route's service: the site watch with automatic failover at once, its workers, and
# nothing else (the backup schedule and the probes would compete for the cores with what is
# measured; the command route has neither). Its vantage points are the command route's three.
SERVICE_ENV = {
    "COUNTYCLOUD_SERVICE_PORT": str(SERVICE_PORT), "COUNTYCLOUD_DR_WATCH": "true",
    "COUNTYCLOUD_DR_AUTOMATIC": "true", "COUNTYCLOUD_DR_GRACE_S": "0",
    "COUNTYCLOUD_DR_PLAN": str(STATE / "plan.yaml"), "COUNTYCLOUD_DR_WITNESSES": "witness,secondary",
    "COUNTYCLOUD_BACKUP_SCHEDULE": "false", "COUNTYCLOUD_MONITORING": "false",
}
SERVICE_START_S = 120.0
FAILOVER_WITHIN_S = 1800.0


def start_service() -> subprocess.Popen[bytes]:
    """`countycloud serve` for the automatic route, once it answers and its watch sees both sites up."""
    from dr import watchstate
    from provisioning.address import healthy

    watchstate.state_path(STATE).unlink(missing_ok=True)  # an earlier run's outage is not this one's
    with open(STATE / "bench-service.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "controlplane", "serve"], cwd=ROOT,
                                   env={**ENV, **SERVICE_ENV}, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT)
    ends = time.monotonic() + SERVICE_START_S
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the service exited ({process.returncode}); see {STATE / 'bench-service.log'}")
        views = watchstate.load(STATE).sites
        if healthy(SERVICE_PORT) and all(views.get(site) is not None and views[site].verdict is SiteVerdict.UP
                                         for site in ("primary", "secondary")):
            return process
        if time.monotonic() > ends:
            process.terminate()
            raise SystemExit(f"the service's watch did not see both sites up within {SERVICE_START_S:.0f} s")
        time.sleep(0.5)


def stop_service(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def kill_effect() -> Callable[[], float | None]:
    """Start watching the primary's libvirtd; the returned call gives when it was gone (epoch), i.e.
    when `site stop` had killed the site (its kill -9 goes to every process of the site at once)."""
    pidfile = sites.site_paths(STATE, "primary").libvirtd_pidfile
    pid = int(pidfile.read_text().strip())
    gone: list[float] = []

    def watch() -> None:
        ends = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists():
            if time.monotonic() > ends:
                return  # not seen gone (a zombie nobody reaps?): no figure rather than a wrong one
            time.sleep(0.005)
        gone.append(time.time())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()

    def result() -> float | None:
        thread.join(60)
        return gone[0] if gone else None
    return result


def the_watch_s_job(killed: float) -> tuple[str, float]:
    """The failover job the service's watch submitted for this outage, and its declared_at."""
    from dr import watchstate

    ends = time.monotonic() + 120
    while time.monotonic() < ends:
        found = watchstate.load(STATE).outages.get("primary")
        if found is not None and found.failover_job is not None and found.declared_at >= killed - 5:
            return found.failover_job, found.declared_at
        time.sleep(0.05)
    raise SystemExit("the service's watch submitted no failover within 2 minutes of the kill")


def wait_for_job(job_id: str) -> JobView:
    from controlplane import jobs
    from inventory.db import make_engine
    from inventory.jobs import JobStatus

    engine = make_engine(ENV["COUNTYCLOUD_DATABASE_URL"])
    ends = time.monotonic() + FAILOVER_WITHIN_S
    try:
        while time.monotonic() < ends:
            view = jobs.get_job(engine, job_id)
            if view.status is JobStatus.SUCCEEDED:
                return view
            if view.status in (JobStatus.FAILED, JobStatus.CANCELLED):
                raise SystemExit(f"the watch's failover {job_id} {view.status.value}: {view.error}")
            time.sleep(0.2)
    finally:
        engine.dispose()
    raise SystemExit(f"the watch's failover {job_id} did not end within {FAILOVER_WITHIN_S:.0f} s")


def from_kill(report: dict[str, Any], killed: float, first_tier: str | None) -> tuple[float, float]:
    """rto_s and rto_first_tier_s from `killed` to each county serving through its address. The
    report counts from its own `failed_at` (the command route's is `killed`; the watch's is the
    moment the site was last seen alive), and when each county served is `failed_at` + its RTO."""
    failed_at = datetime.fromisoformat(report["failed_at"]).timestamp()
    serving = {row["county"]: failed_at + row["rto_s"] - killed for row in report["counties"]}
    tier = first_tier or report["counties"][0]["tier"]
    first = [serving[row["county"]] for row in report["counties"] if row["tier"] == tier]
    return round(max(serving.values()), 3), round(max(first), 3)


def timeline(job: JobView, report: dict[str, Any], killed: float, gone: float | None,
             declared: float) -> dict[str, Any]:
    """Seconds after `killed`: the kill's effect, the verdict, the job's creation and start, each
    step's start and end, each county serving."""
    def at(moment: datetime | None) -> float | None:
        return None if moment is None else round(as_utc(moment).timestamp() - killed, 3)

    failed_at = datetime.fromisoformat(report["failed_at"]).timestamp()
    return {
        "killed_effect": None if gone is None else round(gone - killed, 3),
        "declared": round(declared - killed, 3), "failed_at": round(failed_at - killed, 3),
        "job_created": at(job.created_at), "job_started": at(job.started_at),
        "steps": {step.name: [at(step.started_at), at(step.finished_at)] for step in job.steps},
        "serving": {row["county"]: round(failed_at + row["rto_s"] - killed, 3) for row in report["counties"]},
    }


def failover(*extra: str, route: str = "command") -> tuple[dict[str, Any], float, float]:
    """Kill the primary and fail over by the plan, by the route: the report, detect_s, the kill's time.
    The route's timeline is printed."""
    from controlplane import jobs
    from inventory.db import make_engine

    gone = kill_effect()
    issued = time.time()
    # The outage's moment is the kill itself, which the command makes 1-2 s after it was issued (its
    # process's start and imports); RTO and the writers' RPO count from the kill.
    killed = float(cli_json("site", "stop", "primary")["at"])
    if route == "automatic":
        job_id, declared = the_watch_s_job(killed)
        view = wait_for_job(job_id)
        found = json.loads((Path(view.artifacts_dir) / "report.json").read_text())
    else:
        detect = watch_down(killed)
        declared = killed + detect
        out = cli("dr", "failover", "--plan", str(STATE / "plan.yaml"), "--failed-at", str(killed), "--json",
                  *extra)
        found = json.loads(out[out.index("{"):])
        engine = make_engine(ENV["COUNTYCLOUD_DATABASE_URL"])
        view = jobs.get_job(engine, found["job_id"])
        engine.dispose()
    print(json.dumps({"route": route, "extra": list(extra), "command_issued": round(issued - killed, 3),
                      "timeline": timeline(view, found, killed, gone(), declared)}), flush=True)
    return found, round(declared - killed, 2), killed


DR_JOBS = ("failover", "failback", "dr_test")


def retire_leftovers() -> None:
    """Counties an interrupted run left behind (a run retires its own at its end): kept, they would
    be running at the primary and this run's failover would move them too. A county left failed over
    loses its fenced copy at the primary with it (the retire job removes it)."""
    left = [row["tenant"] for row in cli_json("tenant", "list")
            if row["status"] not in ("retired", "planned")]
    if left:
        print(f"retiring {', '.join(left)}, left by an earlier run", flush=True)
        cli("tenant", "retire", *left, "--purge")
    # A DR job an interrupted run left unfinished refuses this run's own (one failover at a time).
    for job in cli_json("job", "list", "--limit", "500"):
        if job["kind"] in DR_JOBS and job["status"] not in ("succeeded", "cancelled"):
            print(f"cancelling {job['id']} ({job['status']}), left by an earlier run", flush=True)
            cli("job", "cancel", job["id"])


def failback() -> None:
    cli("site", "start", "primary")
    cli("dr", "failback")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counties", type=int, default=13)
    parser.add_argument("--route", choices=("command", "automatic"), default="command",
                        help="who runs the failover: this process by `dr failover`, or the service's watch")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold failover (steps 3-4)")
    args = parser.parse_args()
    automatic = args.route == "automatic"
    cold_run = not (automatic or args.no_cold)
    counties = SLUGS[:args.counties]
    STATE.mkdir(parents=True, exist_ok=True)
    plan, replicated = recovery_plan(counties)
    (STATE / "plan.yaml").write_text(plan)
    (STATE / "bench.yaml").write_text(two_sites(counties, replicated=replicated))
    cli("setup", timeout=3600)
    retire_leftovers()  # first: the inventory's apply refuses to drop a county whose VM is active
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
    others: list[subprocess.Popen[bytes]] = []
    served: subprocess.Popen[bytes] | None = None
    if automatic:  # the service's watch and its witnesses, not this process's
        served = start_service()
    else:
        threading.Thread(target=witness.run, args=(STATE, "service"), kwargs={"stop": stop},
                         daemon=True).start()
        others = [subprocess.Popen([sys.executable, "-m", "dr.witness", "--state-dir", str(STATE),
                                    "--vantage", name], cwd=ROOT, env=ENV)
                  for name in ("witness", "secondary")]
    clone: dict[str, Any] = {}
    cold: dict[str, Any] | None = None
    bare: float | None = None
    try:
        time.sleep(3)
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", BACKUP, *counties], cwd=ROOT, env=ENV, check=True, timeout=3600)
        backups_s = time.monotonic() - began
        time.sleep(5)  # writes after the restore points
        clone, detect_s, killed = failover(route=args.route)
        failed_over = time.time()
        rto_s, rto_first_tier_s = from_kill(clone, killed, recovery_tier(plan))
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
        if cold_run:
            time.sleep(4)  # the watch sees the primary up again before the next kill
            cold, _, _ = failover("--cold")
            bare = min(row["parts"].get("start", 0) + row["parts"].get("ready", 0)
                       for row in cold["counties"])
            failback()
    finally:
        stop.set()
        for process in others:
            process.terminate()
        if served is not None:
            stop_service(served)
        for writer in writers.values():
            writer.halt()
    cli("tenant", "retire", *counties, "--purge")
    print(json.dumps({"clone_report": clone, "cold_report": cold}, ensure_ascii=False))
    reported = {tier: max((row["rpo_s"] for row in clone["counties"]
                           if (row["county"] in replicated) == (tier == "replicated")), default=None)
                for tier in ("backup", "replicated")}
    print(json.dumps({"created_s": round(created_s, 1), "backups_s": round(backups_s, 1),
                      "replicated": replicated, "rpo_reported": reported,
                      "writer_errors": {county: writer.errors for county, writer in writers.items()}}))
    figures = {
        "counties": len(counties), "bare_boot_s": None if bare is None else round(bare, 2),
        "detect_s": detect_s, "rto_s": rto_s, "rto_ratio": round(rto_s / bare, 3) if bare else None,
        "rto_first_tier_s": rto_first_tier_s, "rpo_backup_s": rpo["backup"],
        "rpo_replicated_s": rpo["replicated"], "failback_lost": lost,
        "rto_cold_s": None if cold is None else cold["rto_s"], "route": args.route,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
