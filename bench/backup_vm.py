"""bench/backup.py --vm: the backup figures on a real county VM (TCG), through the product's steps.

One county (`yilan`) is cloned from the primary's template in the VM suite's state folder
(COUNTYCLOUD_BENCH_BACKUP_STATE, default /var/lib/countycloud-test: its templates are reused; the
bench has its own platform database file there, bench-backup.db, and its own ports 24550-24599:
guests 24550-24579, addresses 24580-24589, the offsite REST server 24590). Its database is replaced
by a realistic year generated on the host (`tenant-app generate 50000`, cached under
/var/tmp/countycloud-bench-backup/cache-vm) before the first backup; between timed backups the county
takes 50 new vouchers through the app's own `generate` in the guest, so each round is incremental.

Measured (each phase timed around the product's own step functions, backup/steps.py):
- incremental_s: one BACKUP round's steps run inline as a job runs them, until the restore point is
  at both sites (check, copy, figures, snapshot, offsite); round_job_s adds the retention step that
  follows; median of `--repeat`; per step medians beside them;
- the SSH way's parts (the fallback when the agent does not freeze), probed apart: SSH connection
  (`ssh true`), python3 start in the guest, the
  online-backup program with its output thrown away in the guest, the same streamed over SSH;
- the freeze way taken apart, once: guest-agent fsfreeze of every file system, a host copy of the
  raw data disk, thaw (the freeze is
  what the county's writers wait), the database out of the image (debugfs) and a clean SQLite copy;
- restore_s: the database from the offsite repository (restic dump through the REST server) with
  integrity_check and figures (ops.fetch_checked), median of 3;
- verify_s: a RESTORE job in mode verify run inline (clone at the secondary, /healthz, figures
  read back over SSH, record, tear-down), per step.
- offsite_ways (`--offsite-trials N`): the offsite leg both ways on the same staged copies, side by
  side (`restic backup` then `restic copy`, against two `restic backup` at once);
- incremental_rounds: each round's steps as measured (the per-step medians need not add up to the
  median of the sums). `--rounds-only` skips the SSH / freeze probes, the restores and the verify.
overhead_pct, round_s and the rpo figures are the host bench's (bench/backup.py without --vm).
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backup import consistent, figures, ops, repository, restserver, steps  # noqa: E402
from backup.platformdb import CopyCheck, check_sqlite  # noqa: E402
from bench.inventories import set_up, two_sites  # noqa: E402
from inventory.jobs import Step, StepContext, StepResult  # noqa: E402
from provisioning import records, vm  # noqa: E402
from provisioning.errors import ProvisioningError  # noqa: E402
from provisioning.platform import Platform, host_domain_type  # noqa: E402
from tests.integration.vm.conftest import Cloud  # noqa: E402

STATE = Path(os.environ.get("COUNTYCLOUD_BENCH_BACKUP_STATE", "/var/lib/countycloud-test"))
REST_PORT = 24590
ENV = {
    **os.environ, "COUNTYCLOUD_STATE_DIR": str(STATE),
    "COUNTYCLOUD_DATABASE_URL": f"sqlite:///{STATE}/bench-backup.db",
    "COUNTYCLOUD_GUEST_PORT_FIRST": "24550", "COUNTYCLOUD_GUEST_PORT_LAST": "24579",
    "COUNTYCLOUD_GATEWAY_PORT_FIRST": "24580", "COUNTYCLOUD_GATEWAY_PORT_LAST": "24589",
    "COUNTYCLOUD_BACKUP_REST_PORT": str(REST_PORT),
}
COUNTY = "yilan"
VOUCHERS = 50_000
CHANGE_VOUCHERS = 50
CACHE = Path("/var/tmp/countycloud-bench-backup/cache-vm")
APP = ("runuser -u tenant-app -- env PYTHONPATH=/opt/tenant-app/src /opt/tenant-app/venv/bin/python "
       "-m tenant_app --settings-file /etc/tenant-app.env")
INVENTORY = two_sites([COUNTY], data_disk_mb=256)


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = action()
    return time.perf_counter() - began, result


def run_timed(job_steps: Iterable[Step], ctx: StepContext) -> dict[str, float]:
    """A job's steps run inline as ops.backup_now runs them (each result handed to the next steps),
    with each step's seconds and the total."""
    took: dict[str, float] = {}
    began = time.perf_counter()
    for step in job_steps:
        seconds, result = timed(partial(step.run, ctx))
        took[step.name] = seconds
        if isinstance(result, StepResult):
            ctx.previous = {**ctx.previous, step.name: result.model_dump(mode="json")}
    took["total"] = time.perf_counter() - began
    return took


def generated_database() -> Path:
    """A realistic year made on the host with this checkout's app (its migrations are the guest's)."""
    path = CACHE / f"county-{VOUCHERS}.db"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-m", "tenant_app", "generate", str(VOUCHERS), "--seed", "2026"],
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                            "TENANT_APP_DATABASE_URL": f"sqlite:///{partial}"},
                       check=True, capture_output=True, timeout=1800)
        db = sqlite3.connect(partial)
        db.execute("PRAGMA journal_mode=DELETE")  # one file: WAL folded in
        db.close()
        partial.rename(path)
    return path


class Bench:
    def __init__(self, platform: Platform, cloud: Cloud) -> None:
        self.platform = platform
        self.cloud = cloud
        self.plan = records.load_plans(platform.engine, COUNTY)[0]
        self.ways: list[str] = []  # how each round's copy was taken (freeze, or ssh when it fell back)

    def ssh(self, remote: str, *, stdin: Any = None, timeout: float = 600
            ) -> subprocess.CompletedProcess[bytes]:
        argv = consistent.ssh_argv(self.platform.ssh_key, self.plan.ssh_port, ["sh", "-c", remote])
        return subprocess.run(argv, stdin=stdin, capture_output=True, check=True, timeout=timeout)

    def put_database(self, database: Path) -> None:
        """The county's database replaced by `database` (service stopped, file swapped, started)."""
        data = consistent.GUEST_DATABASE
        with database.open("rb") as source:
            self.ssh(f"systemctl stop tenant-app.service && cat > {data}.new && "
                     f"rm -f {data}-wal {data}-shm && mv {data}.new {data} && chown tenant-app: {data} && "
                     "systemctl start tenant-app.service", stdin=source)
        if not self.cloud.serving(COUNTY, within_s=180):
            raise RuntimeError(f"{COUNTY} does not serve on the generated database")

    def change(self, seed: int) -> None:
        self.ssh(f"{APP} generate {CHANGE_VOUCHERS} --seed {seed} >/dev/null")

    def backup_round(self) -> dict[str, float]:
        """One BACKUP round's steps inline (as ops.backup_now runs them), each step timed."""
        key = f"bench-{uuid.uuid4().hex[:12]}"
        sites = ops.BackupSites(primary="primary", offsite="secondary", rest_port=REST_PORT)
        args = steps.BackupArgs(tenant=COUNTY, offsite_site=sites.offsite, rest_port=sites.rest_port)
        work = self.platform.artifacts_dir / "backup-now" / key
        work.mkdir(parents=True, exist_ok=True)
        ctx = StepContext(job_id=key, args=args.model_dump(mode="json"), artifacts=work)
        took = run_timed(steps.backup_steps(args.model_dump(mode="json"), self.platform), ctx)
        self.ways.append(str(ctx.previous.get("copy", {}).get("way")))
        took["frozen"] = ctx.previous.get("copy", {}).get("frozen_s") or 0.0  # writers held (not a step)
        subprocess.run(["rm", "-rf", str(work)], check=True)
        return took

    def copy_probes(self) -> dict[str, float]:
        """Where the copy step's time goes: connection, guest Python start, the copy in the guest
        alone, the copy streamed to the host."""
        out: dict[str, float] = {}
        out["ssh_true_s"], _ = timed(lambda: self.ssh("true"))
        out["ssh_python_start_s"], _ = timed(lambda: self.ssh("python3 -c pass"))
        program = consistent.copy_argv()
        import shlex
        out["guest_copy_to_null_s"], _ = timed(lambda: self.ssh(f"{shlex.join(program)} > /dev/null"))
        out["guest_cat_db_streamed_s"], _ = timed(
            lambda: self.ssh(f"cat {consistent.GUEST_DATABASE}"))
        with tempfile.TemporaryDirectory() as folder:
            out["copy_streamed_staged_s"], _ = timed(lambda: consistent.stage(
                consistent.guest_copy_argv(self.platform.ssh_key, self.plan.ssh_port), Path(folder) / "t.db"))
        return out

    def freeze_way(self, scratch: Path) -> dict[str, Any]:
        """Guest-agent fsfreeze, host copy of the raw data disk, thaw; then the database from the image."""
        site = records.current_site(self.platform.engine, COUNTY)
        disk = vm.vm_disks(self.platform, site, self.plan.name).data_disk
        image = scratch / "data.img"
        out: dict[str, Any] = {"data_disk_mb": round(disk.stat().st_size / 1e6, 1)}
        with self.platform.hypervisor(site) as hv:
            began = time.perf_counter()
            try:
                hv.agent(self.plan.name, "guest-fsfreeze-freeze", timeout_s=60)
            except Exception as error:  # the agent may refuse freezing: say so, no figure
                out["error"] = f"freeze: {error}"[:300]
                return out
            frozen = time.perf_counter()
            try:
                subprocess.run(["cp", "--sparse=always", str(disk), str(image)], check=True)
            finally:
                copied = time.perf_counter()
                hv.agent(self.plan.name, "guest-fsfreeze-thaw", timeout_s=60)
            thawed = time.perf_counter()
        out.update(freeze_s=round(frozen - began, 3), disk_copy_s=round(copied - frozen, 3),
                   thaw_s=round(thawed - copied, 3), writers_blocked_s=round(thawed - began, 3))
        extracted = scratch / "tenant.db"
        began = time.perf_counter()
        listing = subprocess.run(["debugfs", "-R", "ls -l /", str(image)], capture_output=True, text=True,
                                 check=True).stdout
        for name in ("tenant.db", "tenant.db-wal"):
            if f" {name}\n" in listing + "\n" or listing.rstrip().endswith(name) or f" {name} " in listing:
                subprocess.run(["debugfs", "-R", f"dump /{name} {scratch / name}", str(image)],
                               capture_output=True, check=True)
        out["debugfs_extract_s"] = round(time.perf_counter() - began, 3)
        clean = scratch / "clean.db"
        began = time.perf_counter()
        source = sqlite3.connect(extracted)  # replays the WAL (crash-consistent image, FULL sync)
        target = sqlite3.connect(clean)
        with target:
            source.backup(target)
        target.close()
        source.close()
        check_sqlite(clean, CopyCheck.QUICK)
        out["clean_copy_and_quick_check_s"] = round(time.perf_counter() - began, 3)
        out["figures"] = figures.read(clean).tags()
        out["total_s"] = round(out["writers_blocked_s"] + out["debugfs_extract_s"]
                               + out["clean_copy_and_quick_check_s"], 3)
        return out

    def restore(self, scratch: Path) -> dict[str, float]:
        """The database from the offsite repository: dump through REST, integrity_check, figures."""
        restic = steps._restic(self.platform, "primary")
        repo = repository.site_backup(self.platform.state_dir, "secondary").remote(REST_PORT)
        listed_s, points = timed(lambda: restic.snapshots(repo, tags=[consistent.county_tag(COUNTY)]))
        newest = max(points, key=lambda point: point.time)
        target = scratch / f"restored-{uuid.uuid4().hex[:6]}.db"
        total_s, fetched = timed(lambda: ops.fetch_checked(restic, repo, newest, target))
        target.unlink(missing_ok=True)
        return {"snapshots_s": listed_s, "fetch_checked_s": total_s, "dump_s": fetched.wall_s}

    def offsite_ways(self, scratch: Path, trials: int) -> dict[str, Any]:
        """The offsite leg both ways on the same staged copies, alternating (not the product's way
        unless `copy`): `copy` = `restic backup` into the primary then `restic copy` of that snapshot
        (what the round does); `both_parallel` = two `restic backup` at once, one per repository.
        Each trial's copy is the county's database taken the round's way, then 50 vouchers added on
        the host (every backup has new data, as a round's has). The probe's snapshots are tagged
        county=PROBE and forgotten afterwards."""
        from concurrent.futures import ThreadPoolExecutor

        from bench.backup import add_vouchers

        site = records.current_site(self.platform.engine, COUNTY)
        restic = steps._restic(self.platform, site)
        pair = repository.pair(self.platform.state_dir, site, "secondary", REST_PORT)
        slug = f"{COUNTY}-probe"
        base = scratch / "probe-base.db"
        steps.take_database(self.platform, site, self.plan, base, lambda _line: None)
        made: dict[str, list[str]] = {"primary": [], "offsite": []}
        out: dict[str, list[float]] = {"copy_backup_s": [], "copy_copy_s": [], "copy_s": [],
                                       "both_parallel_s": [], "both_primary_s": [], "both_offsite_s": []}

        def store(repo: Any, staged: Path, where: str) -> float:
            began = time.perf_counter()
            done = consistent.store(restic, repo, staged, slug, tags=[f"job=probe-{uuid.uuid4().hex[:8]}"])
            made[where].append(done.snapshot_id)
            return time.perf_counter() - began

        for trial in range(trials):
            for way in ("copy", "both_parallel"):
                staged = scratch / f"probe-{trial}-{way}.db"
                subprocess.run(["cp", str(base), str(staged)], check=True)
                add_vouchers(staged, CHANGE_VOUCHERS, 70_000 + trial * 2 + (way == "copy"))
                if way == "copy":
                    backup_s = store(pair.primary, staged, "primary")
                    copy_s, done = timed(lambda: restic.copy(pair.offsite, pair.primary,
                                                             snapshot_ids=[made["primary"][-1]]))
                    made["offsite"] += list(done.copied.values())
                    out["copy_backup_s"].append(backup_s)
                    out["copy_copy_s"].append(copy_s)
                    out["copy_s"].append(backup_s + copy_s)
                else:
                    began = time.perf_counter()
                    with ThreadPoolExecutor(max_workers=2) as pool:
                        primary = pool.submit(store, pair.primary, staged, "primary")
                        offsite = pool.submit(store, pair.offsite, staged, "offsite")
                        out["both_primary_s"].append(primary.result())
                        out["both_offsite_s"].append(offsite.result())
                    out["both_parallel_s"].append(time.perf_counter() - began)
                staged.unlink()
        for where, repo in (("primary", pair.primary), ("offsite", pair.offsite)):
            restic.forget_ids(repo, made[where])
        return {name: median(values) for name, values in out.items()} | {
            "trials": {name: [round(value, 3) for value in values] for name, values in out.items()}}

    def verify(self) -> dict[str, float]:
        key = f"bench-verify-{uuid.uuid4().hex[:8]}"
        args = steps.RestoreArgs(tenant=COUNTY, mode=steps.RestoreMode.VERIFY, site="secondary",
                                 from_site="secondary", rest_port=REST_PORT)
        work = self.platform.artifacts_dir / key
        work.mkdir(parents=True, exist_ok=True)
        ctx = StepContext(job_id=key, args=args.model_dump(mode="json"), artifacts=work)
        took = {name: round(seconds, 3)
                for name, seconds in run_timed(steps.restore_steps(args.model_dump(mode="json"),
                                                                   self.platform), ctx).items()}
        subprocess.run(["rm", "-rf", str(work)], check=True)
        return took


def main(repeat: int, keep: bool, *, rounds_only: bool = False, offsite_trials: int = 0) -> int:
    from inventory.db import make_engine

    database = generated_database()
    STATE.mkdir(parents=True, exist_ok=True)
    cloud = Cloud(env=ENV)
    set_up(cloud, INVENTORY)
    platform = Platform(engine=make_engine(ENV["COUNTYCLOUD_DATABASE_URL"]), state_dir=STATE,
                        cache_dir=STATE / "cache", domain_type=host_domain_type())
    server = repository.site_backup(STATE, "secondary").rest_server(REST_PORT)
    restserver.stop(server)
    figures_out: dict[str, Any] = {}
    try:
        try:
            bench = Bench(platform, cloud)  # a county kept by an earlier --keep run is reused
        except ProvisioningError:  # declared, not provisioned yet
            cloud.create(COUNTY)
            bench = Bench(platform, cloud)
        put_s, _ = timed(lambda: bench.put_database(database))
        first = bench.backup_round()  # full: the repositories may be new, the database is
        rounds: list[dict[str, float]] = []
        changes: list[float] = []
        for attempt in range(repeat):
            changes.append(timed(lambda attempt=attempt: bench.change(9_000 + attempt))[0])
            rounds.append(bench.backup_round())
        offsite_ways: dict[str, Any] = {}
        if offsite_trials:
            with tempfile.TemporaryDirectory(dir=STATE) as scratch:
                offsite_ways = bench.offsite_ways(Path(scratch), offsite_trials)
        probes: dict[str, float] = {}
        freeze: dict[str, Any] = {}
        restores: list[dict[str, float]] = []
        verify: dict[str, float] = {}
        if not rounds_only:
            probes = bench.copy_probes()
            with tempfile.TemporaryDirectory(dir=STATE) as scratch:
                freeze = bench.freeze_way(Path(scratch))
                restores = [bench.restore(Path(scratch)) for _ in range(3)]
            verify = bench.verify()
        names = list(rounds[0])
        figures_out = {
            "counties": 1,
            "db_mb": round(database.stat().st_size / 1e6, 1),
            # until the restore point is at both sites (retention, which follows, reported beside)
            "incremental_s": median([sum(r[n] for n in ("check", "copy", "figures", "snapshot", "offsite"))
                                     for r in rounds]),
            "round_job_s": median([r["total"] for r in rounds]),
            "overhead_pct": None,
            "round_s": None,
            "rpo_s": None,
            "rpo_replicated_s": None,
            "restore_s": median([r["fetch_checked_s"] for r in restores]),
            "verify_s": verify.get("total"),
            "incremental_steps": {name: median([r[name] for r in rounds]) for name in names},
            # each round's steps as measured (the per-step medians above need not add up to the
            # median of the sums: a slow step in one round moves only that round's sum)
            "incremental_rounds": [{name: round(value, 3) for name, value in r.items()} for r in rounds],
            "offsite_ways": offsite_ways,
            "first_backup_steps": {name: round(value, 3) for name, value in first.items()},
            "copy_ways": bench.ways,
            "copy_probes": {name: round(value, 3) for name, value in probes.items()},
            "fsfreeze_way": freeze,
            "restore_phases": {name: median([r[name] for r in restores]) for name in restores[0]}
            if restores else {},
            "verify_steps": verify,
            "put_database_s": round(put_s, 1),
            "change_s": median(changes),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "not_measured": "overhead_pct, round_s, rpo_s, rpo_replicated_s: see the host bench and "
                            "bench/replication.py",
        }
    finally:
        if not keep:
            cloud.cli("tenant", "retire", COUNTY, "--purge", timeout=900, check=False)
        restserver.stop(server)
    print(json.dumps(figures_out, ensure_ascii=False))
    return 0
