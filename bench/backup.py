"""Backup engine figures without VMs: county databases on the host, real restic, real REST server.

13 county databases made by the tenant app's generator (one with a realistic year, 50 000
vouchers; twelve with 10 000 each, other seeds), cached under /var/tmp between runs. A primary
repository on local disk and an offsite one behind `rclone serve restic` on 127.0.0.1:23009 (the
last of the backup servers' ports: the platform's default is 23000). Between timed rounds the
databases take new vouchers, so every backup is a real incremental one.

Measured, side by side in one run:
- the two offsite strategies per county round: `restic copy` of the new snapshot from the primary
  versus writing both repositories (a second `backup --stdin` straight into the REST repository);
- incremental_s: one county (the 50 000-voucher one): SQLite online-backup copy, then its backup into
  both repositories at once (strategy "both_parallel", the product's way since bfast12), median of 5;
  the other two strategies beside it under "strategies";
- overhead_pct: backup.restic's calls against the same restic commands run by hand, median of 5;
- round_s: all 13 counties as the product's rounds take them: each written into both repositories
  at once, two counties at a time (the default backup_concurrency); beside it the older ways
  (backups then one `restic copy` for all; each county into each repository in turn);
- restore_s: that county's database from the offsite repository into a new file, integrity-checked
  (integrity_check and quick_check also reported alone: the rounds skip the check, see CopyCheck).
Not measured here (null): rpo_s and rpo_replicated_s (10 minutes of steady writes through the app
in VMs; the replicated tier's figure is bench/replication.py's) and verify_s (needs a template
clone). The database is copied on the host, not inside a guest, so the "app-consistent through the
SSH forward" path is not in these figures.

Last line: {"counties", "db_mb", "incremental_s", "overhead_pct", "round_s", "rpo_s",
"rpo_replicated_s", "restore_s", "verify_s"} (plus the strategy figures under "strategies").
Run: .venv/bin/python bench/backup.py
On a real VM (one county, per-step figures, the fsfreeze way beside): bench/backup_vm.py, run as
    flock /work/vm.lock .venv/bin/python bench/backup.py --vm
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backup import platformdb, repository, restserver  # noqa: E402
from backup.platformdb import CopyCheck  # noqa: E402
from backup.repository import Pair  # noqa: E402
from backup.restic import Restic  # noqa: E402
from controlplane.settings import Settings  # noqa: E402

STATE = Path("/var/tmp/countycloud-bench-backup")
# Overridable, for two checkouts running this bench at once (each its own port and run folder).
PORT = int(os.environ.get("COUNTYCLOUD_BENCH_BACKUP_PORT", "23009"))
COUNTIES = 13
BIG_VOUCHERS = 50_000
SMALL_VOUCHERS = 10_000
CHANGE_VOUCHERS = 50  # added to a county between two timed backups
ROUND_CONCURRENCY = int(Settings.model_fields["backup_concurrency"].default)
REPEAT = 5


def county_slug(index: int) -> str:
    return f"county{index:02d}"


def cached_database(index: int) -> Path:
    """The generated database of county `index`, made once (tenant-app generate) and kept."""
    vouchers = BIG_VOUCHERS if index == 0 else SMALL_VOUCHERS
    path = STATE / "cache" / f"{county_slug(index)}-{vouchers}.db"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        subprocess.run(
            [sys.executable, "-m", "tenant_app", "generate", str(vouchers), "--seed", str(2026 + index)],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                 "TENANT_APP_DATABASE_URL": f"sqlite:///{partial}"},
            check=True, capture_output=True, timeout=900,
        )
        _checkpoint(partial)
        partial.rename(path)
    return path


def _checkpoint(path: Path) -> None:
    """Fold the WAL into the file and leave rollback-journal mode: the cache holds one file."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
    finally:
        db.close()
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)


def add_vouchers(database: Path, count: int, seed: int) -> None:
    from tenant_app.db import make_engine
    from tenant_app.generate import generate

    engine = make_engine(f"sqlite:///{database}")
    try:
        generate(engine, count, seed=seed)
    finally:
        engine.dispose()


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def children_cpu_s() -> float:
    """CPU seconds used so far by finished child processes (restic): less swayed by the shared
    machine's load than wall time, so the strategies are also compared by it."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_cpu(action: Callable[[], Any]) -> tuple[float, float]:
    cpu = children_cpu_s()
    wall, _ = timed(action)
    return wall, children_cpu_s() - cpu


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counties", type=int, default=COUNTIES)
    parser.add_argument("--vm", action="store_true",
                        help="one county on a real VM through the product's steps (bench/backup_vm.py)")
    parser.add_argument("--repeat", type=int, default=3, help="--vm: timed incremental rounds")
    parser.add_argument("--keep", action="store_true", help="--vm: leave the county running")
    parser.add_argument("--offsite-trials", type=int, default=0,
                        help="--vm: the offsite leg both ways (copy / two backups at once), N trials each")
    parser.add_argument("--rounds-only", action="store_true",
                        help="--vm: the backup rounds only (no SSH/freeze probes, restore or verify)")
    args = parser.parse_args()
    if args.vm:
        from bench import backup_vm

        return backup_vm.main(args.repeat, args.keep, rounds_only=args.rounds_only,
                              offsite_trials=args.offsite_trials)

    run = Path(os.environ.get("COUNTYCLOUD_BENCH_BACKUP_RUN", str(STATE / "run")))
    if run.exists():
        shutil.rmtree(run)
    databases = []
    for index in range(args.counties):
        target = run / "databases" / f"{county_slug(index)}.db"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cached_database(index), target)
        databases.append(target)
    scratch = run / "scratch"
    scratch.mkdir()
    restic = Restic(cache_dir=run / "restic-cache", timeout_s=600)
    pair = repository.ensure_pair(restic, run / "state", "primary", "secondary", PORT)
    try:
        figures = measure(restic, pair, databases, scratch)
    finally:
        restserver.stop(pair.offsite_server)
    figures["restic"] = restic.version()
    print(json.dumps(figures, ensure_ascii=False))
    return 0


def measure(restic: Restic, pair: Pair, databases: list[Path], scratch: Path) -> dict[str, Any]:
    def snapshot_copy(database: Path) -> Path:
        copy = scratch / f"{database.stem}.sqlite"
        copy.unlink(missing_ok=True)
        # No check per round (it dominated the round: see restore_phases); verification checks.
        return platformdb.sqlite_copy(database, copy, CopyCheck.NONE)

    def backup_into(repo: Any, copy: Path, slug: str) -> str:
        with copy.open("rb") as source:
            result = restic.backup_stdin(repo, source, filename=f"{slug}.sqlite", tags=[f"county={slug}"])
            return result.snapshot_id

    def county_both_at_once(db: Path) -> None:
        """The product's way (backup/steps.py): one copy written into both repositories at once."""
        copy = snapshot_copy(db)
        with ThreadPoolExecutor(max_workers=2) as pool:
            both = [pool.submit(backup_into, repo, copy, db.stem) for repo in (pair.primary, pair.offsite)]
            for done in both:
                done.result()

    # First round (full backups), then one copy of everything: not the figure, but reported.
    first_s, _ = timed(lambda: [backup_into(pair.primary, snapshot_copy(db), db.stem) for db in databases])
    first_copy_s, _ = timed(lambda: restic.copy(pair.offsite, pair.primary))
    # Strategy "both" needs its own first full backup in the offsite repository too.
    for db in databases:
        backup_into(pair.offsite, snapshot_copy(db), db.stem)

    big = databases[0]
    seed = 10_000
    strategies = ("copy", "both", "both_parallel")
    per_strategy: dict[str, list[float]] = {name: [] for name in strategies}
    per_strategy_cpu: dict[str, list[float]] = {name: [] for name in strategies}
    phases: dict[str, list[float]] = {"sqlite_copy_s": [], "backup_s": [], "offsite_copy_s": []}
    overhead_wrapper: list[float] = []
    overhead_hand: list[float] = []
    for _ in range(REPEAT):
        for strategy in strategies:
            seed += 1
            add_vouchers(big, CHANGE_VOUCHERS, seed)

            def one_county(strategy: str = strategy) -> None:
                if strategy == "both_parallel":
                    county_both_at_once(big)
                    return
                copy_s, copy = timed(lambda: snapshot_copy(big))
                backup_s, snapshot = timed(lambda: backup_into(pair.primary, copy, big.stem))
                if strategy == "copy":
                    offsite_s, _ = timed(
                        lambda: restic.copy(pair.offsite, pair.primary, snapshot_ids=[snapshot]))
                    for name, value in (("sqlite_copy_s", copy_s), ("backup_s", backup_s),
                                        ("offsite_copy_s", offsite_s)):
                        phases[name].append(value)
                else:
                    backup_into(pair.offsite, copy, big.stem)

            wall, cpu = timed_cpu(one_county)
            per_strategy[strategy].append(wall)
            per_strategy_cpu[strategy].append(cpu)
        # overhead: the same two commands (backup --stdin, copy of that snapshot) by hand and wrapped
        seed += 1
        add_vouchers(big, CHANGE_VOUCHERS, seed)
        copy = snapshot_copy(big)
        overhead_wrapper.append(timed(lambda copy=copy: restic.copy(
            pair.offsite, pair.primary, snapshot_ids=[backup_into(pair.primary, copy, big.stem)]))[0])
        seed += 1
        add_vouchers(big, CHANGE_VOUCHERS, seed)
        copy = snapshot_copy(big)
        overhead_hand.append(timed(lambda copy=copy: by_hand(restic, pair, copy, big.stem))[0])

    # A round of all counties, each changed: strategy "copy" (one copy command for the round) ...
    for index, db in enumerate(databases):
        add_vouchers(db, CHANGE_VOUCHERS, 50_000 + index)

    def round_copy() -> None:
        for db in databases:
            backup_into(pair.primary, snapshot_copy(db), db.stem)
        restic.copy(pair.offsite, pair.primary)

    round_s, round_cpu = timed_cpu(round_copy)
    for index, db in enumerate(databases):
        add_vouchers(db, CHANGE_VOUCHERS, 60_000 + index)

    def round_both() -> None:
        for db in databases:
            copy = snapshot_copy(db)
            backup_into(pair.primary, copy, db.stem)
            backup_into(pair.offsite, copy, db.stem)

    round_both_s, round_both_cpu = timed_cpu(round_both)
    for index, db in enumerate(databases):
        add_vouchers(db, CHANGE_VOUCHERS, 70_000 + index)

    # ... and the product's round: each county's copy written into both repositories at once,
    # ROUND_CONCURRENCY counties at a time (the setting backup_concurrency's default).
    def round_product() -> None:
        with ThreadPoolExecutor(max_workers=ROUND_CONCURRENCY) as pool:
            list(pool.map(county_both_at_once, databases))

    round_product_s, round_product_cpu = timed_cpu(round_product)

    # Restore the big county from the offsite repository into a new file, integrity-checked.
    newest = restic.snapshots(pair.offsite, tags=[f"county={big.stem}"])[-1]
    restores: list[float] = []
    restore_phases: dict[str, list[float]] = {"dump_s": [], "integrity_check_s": [], "quick_check_s": []}
    for attempt in range(3):
        target = scratch / f"restored-{attempt}.db"
        dump_s, _ = timed(lambda target=target: restic.dump(pair.offsite, newest.id, f"/{big.stem}.sqlite",
                                                              target))
        check_s, _ = timed(lambda target=target: platformdb.check_sqlite(target))
        quick_s, _ = timed(lambda target=target: platformdb.check_sqlite(target, CopyCheck.QUICK))
        restore_phases["dump_s"].append(dump_s)
        restore_phases["integrity_check_s"].append(check_s)
        restore_phases["quick_check_s"].append(quick_s)
        restores.append(dump_s + check_s)

    hand = median(overhead_hand)
    wrapped = median(overhead_wrapper)
    return {
        "counties": len(databases),
        "db_mb": round(big.stat().st_size / 1e6, 1),
        "incremental_s": median(per_strategy["both_parallel"]),  # the product's way
        "overhead_pct": round((wrapped - hand) / hand * 100, 1),
        "round_s": round(round_product_s, 2),
        "rpo_s": None,
        "rpo_replicated_s": None,
        "restore_s": median(restores),
        "verify_s": None,
        "strategies": {
            "copy_county_s": median(per_strategy["copy"]),
            "both_county_s": median(per_strategy["both"]),
            "both_parallel_county_s": median(per_strategy["both_parallel"]),
            "both_parallel_county_restic_cpu_s": median(per_strategy_cpu["both_parallel"]),
            "product_round_s": round(round_product_s, 2),
            "product_round_restic_cpu_s": round(round_product_cpu, 2),
            "copy_round_s": round(round_s, 2),
            "both_round_s": round(round_both_s, 2),
            "copy_county_restic_cpu_s": median(per_strategy_cpu["copy"]),
            "both_county_restic_cpu_s": median(per_strategy_cpu["both"]),
            "copy_round_restic_cpu_s": round(round_cpu, 2),
            "both_round_restic_cpu_s": round(round_both_cpu, 2),
            "first_round_backup_s": round(first_s, 2),
            "first_round_copy_s": round(first_copy_s, 2),
            "wrapped_backup_and_copy_s": wrapped,
            "by_hand_backup_and_copy_s": hand,
        },
        "incremental_phases": {name: median(values) for name, values in phases.items()},
        "restore_phases": {name: median(values) for name, values in restore_phases.items()},
        "load_average_1m": round(os.getloadavg()[0], 1),
        "not_measured": "rpo_s, rpo_replicated_s, verify_s need VMs / replication (null)",
    }


def by_hand(restic: Restic, pair: Pair, copy: Path, slug: str) -> None:
    """The same two restic commands without backup.restic: the reference for its overhead."""
    env = restic._env(pair.primary)
    with copy.open("rb") as source:
        done = subprocess.run(
            ["restic", "backup", "--quiet", "--json", "--stdin", "--stdin-filename", f"{slug}.sqlite",
             "--tag", f"county={slug}"], env=env, stdin=source, capture_output=True, check=True)
    snapshot = json.loads(done.stdout.splitlines()[-1])["snapshot_id"]
    subprocess.run(
        ["restic", "copy", "--from-repo", pair.primary.location, "--from-password-file",
         str(pair.primary.password_file), snapshot],
        env=restic._env(pair.offsite), capture_output=True, check=True)


if __name__ == "__main__":
    sys.exit(main())
