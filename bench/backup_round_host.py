"""One county's backup round through the product's own steps, on the host (no VM): a before/after
harness for changes to backup/steps.py, run alternately from two source trees under the same load.

Each call runs ONE round (check, copy, figures, snapshot, offsite, retention: backup.steps, inline as
the job runner runs them, first attempt) of county `keelung` from `--root`'s code, in `--state` (kept
between calls: the first call makes the repositories and a full backup, later ones are incremental
after 50 vouchers added to the county's database on the host). The copy is the `producer` way
(SQLite's online backup of the host file), not a guest's freeze: what differs between trees is
measured, the guest's part is bench/backup_vm.py's. Prints one JSON line: each step's seconds and
`incremental_s` (check .. offsite: until the point is at both sites).

    bench/backup_round_host.py --root TREE --state DIR --port P [--seed N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

DATABASE = Path("/var/tmp/countycloud-bench-backup/cache-vm/county-50000.db")  # bench/backup_vm.py's
STEPS_TO_OFFSITE = ("check", "copy", "figures", "snapshot", "offsite")


def _cpu() -> float:
    import resource

    mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(args.root.resolve()))

    from backup import consistent, repository, restserver, steps
    from bench.backup import add_vouchers
    from inventory.jobs import StepContext, StepResult
    from provisioning import records
    from provisioning.platform import Platform
    from provisioning.spec import DomainType
    from tests.unit.provisioning.test_steps_lists import _database

    args.state.mkdir(parents=True, exist_ok=True)
    inventory = args.state / "inventory.db"
    live = args.state / "live.db"
    first = not inventory.exists()
    if first:
        _database(inventory, None)
        shutil.copyfile(DATABASE, live)
    from inventory.db import make_engine

    engine = make_engine(f"sqlite:///{inventory}")
    if first:
        records.place(engine, "keelung")
    else:
        add_vouchers(live, 50, args.seed)
    platform = Platform(engine=engine, state_dir=args.state / "state", cache_dir=args.state / "cache",
                        domain_type=DomainType.QEMU)
    raw = steps.BackupArgs(tenant="keelung", rest_port=args.port).model_dump(mode="json")
    work = args.state / "work" / uuid.uuid4().hex[:8]
    work.mkdir(parents=True)
    producer = consistent.copy_argv(str(live), python=sys.executable, scratch_dir=str(work))
    ctx = StepContext(job_id=f"ab-{uuid.uuid4().hex[:12]}", args=raw, artifacts=work)
    took: dict[str, float] = {}
    try:
        for step in steps.backup_steps(raw, platform, producer=producer):
            began, cpu = time.perf_counter(), _cpu()
            result = step.run(ctx)
            took[step.name] = round(time.perf_counter() - began, 3)
            # CPU seconds of this process and its children (restic): less swayed by the load than wall
            took[f"{step.name}_cpu"] = round(_cpu() - cpu, 3)
            if isinstance(result, StepResult):
                ctx.previous = {**ctx.previous, step.name: result.model_dump(mode="json")}
            else:
                took[f"{step.name}_said"] = str(result)  # type: ignore[assignment]
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if os.environ.get("BENCH_STOP_SERVER"):
            restserver.stop(repository.site_backup(platform.state_dir, "secondary").rest_server(args.port))
    took["incremental_s"] = round(sum(float(took[name]) for name in STEPS_TO_OFFSITE), 3)
    took["incremental_cpu_s"] = round(sum(float(took[f"{name}_cpu"]) for name in STEPS_TO_OFFSITE), 3)
    load = round(os.getloadavg()[0], 2)
    print(json.dumps({"root": str(args.root), "full": first, **took, "load_1m": load}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
