"""A job worker for bench/api.py's takeover figure: it registers a one-step job whose step kills its
own worker the first time (as kill -9 of a service in the middle of a job), then works as
`countycloud serve`'s workers do until it is killed.

usage: python bench/takeover_worker.py WORKDIR   (the database from COUNTYCLOUD_DATABASE_URL)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane import bootstrap, jobs, workers
from inventory.jobs import JobKind, Step, StepContext

KIND = JobKind.CONFIGURE
TARGET = "bench-takeover"


def build(args: Mapping[str, Any], _context: Any) -> list[Step]:
    marker = Path(str(args["workdir"])) / "killed-once"

    def work(ctx: StepContext) -> str:
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return "done on the worker that took it over"

    return [Step("work", work, "dies the first time")]


def main() -> None:
    jobs.register_builder(KIND, build)
    workers.run_workers(bootstrap.engine(), sites=["primary"])
    print("worker", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
