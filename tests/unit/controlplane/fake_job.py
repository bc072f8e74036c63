"""A job with fake steps, run in its own process by test_jobs.py so that a step can kill -9 that process.

usage: python -m tests.unit.controlplane.fake_job DB_URL WORKDIR start|start-slow|resume|idle|worker [JOB_ID]
Each step appends its name to WORKDIR/ran.log. Step "two" kills its own process the first time
(WORKDIR/crash-once absent -> create it, then SIGKILL) and raises while WORKDIR/broken exists.
With start-slow it does not crash but takes 30 s the first time (for the Ctrl-C test).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controlplane import jobs, workers
from inventory.db import make_engine
from inventory.jobs import JobKind, Step, StepContext

TARGET = "fake-county"


def build(args: Mapping[str, Any], _context: Any) -> list[Step]:
    workdir = Path(args["workdir"])

    def record(name: str) -> None:
        with (workdir / "ran.log").open("a") as log:
            log.write(name + "\n")
        with (workdir / "pids.log").open("a") as log:
            log.write(f"{name} {os.getpid()}\n")

    def one(ctx: StepContext) -> str:
        record("one")
        return "made disk"

    def two(ctx: StepContext) -> str:
        record("two")
        ctx.log("defining domain")
        marker = workdir / "crash-once"
        if args.get("crash") and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        if args.get("slow") and not (workdir / "slow-once").exists():
            (workdir / "slow-once").touch()
            time.sleep(30)
        if (workdir / "broken").exists():
            raise RuntimeError("libvirtd unreachable [/usr/sbin/libvirtd]")
        return f"domain defined on {ctx.previous['one']}"

    def three(ctx: StepContext) -> str:
        record("three")
        return "started"

    return [Step("one", one, "make the disk"), Step("two", two, "define the domain"), Step("three", three)]


jobs.register_builder(JobKind.PROVISION, build)


def main() -> int:
    url, workdir, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    engine = make_engine(url)
    if mode == "idle":
        # A bystander: another CLI process with DBOS launched on the same database, doing nothing.
        jobs.launch(engine)
        print("ready", flush=True)
        time.sleep(30)
        return 0
    if mode == "worker":
        # A `countycloud serve` worker: takes submitted jobs from the shared queue until killed.
        workers.run_workers(engine, sites=["primary"])
        print("worker", jobs._proc.executor_id, flush=True)
        time.sleep(120)
        return 0
    try:
        if mode.startswith("start"):
            args = {"workdir": str(workdir), "crash": mode == "start", "slow": mode == "start-slow"}
            jobs.start(engine, JobKind.PROVISION, TARGET, args, artifacts_root=workdir / "artifacts")
        else:
            jobs.resume(engine, sys.argv[4])
    except jobs.JobInterrupted as interrupted:
        print(interrupted, file=sys.stderr)
        return jobs.EXIT_INTERRUPTED
    except jobs.JobFailed as failure:
        print(failure, file=sys.stderr)
        return 1
    finally:
        jobs.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
