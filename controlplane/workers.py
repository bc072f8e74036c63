"""The service's side of the jobs: a worker process (`countycloud serve`) takes jobs from the queues,
writes a heartbeat, takes over the jobs of workers whose heartbeat stopped, and runs periodic work.

A CLI process is never a worker: it runs the jobs it was asked to and exits (controlplane.jobs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, select

from controlplane import jobs
from inventory.db import session_scope
from inventory.jobs import Worker

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _heartbeat(engine: Engine) -> None:
    with session_scope(engine) as session:
        row = session.get(Worker, jobs.executor_id())
        if row is None:
            session.add(Worker(executor_id=jobs.executor_id(), host=socket.gethostname(), pid=os.getpid(),
                               started_at=_now(), seen_at=_now()))
        else:
            row.seen_at = _now()


def _claim_dead_workers(engine: Engine) -> list[str]:
    """Executors whose heartbeat stopped, each claimed by exactly one live worker (the one whose
    delete of its row took effect)."""
    cutoff = _now() - timedelta(seconds=jobs.WORKER_DEAD_AFTER_S)
    with session_scope(engine) as session:
        dead = list(session.scalars(select(Worker.executor_id).where(Worker.seen_at < cutoff)))
    claimed = []
    for executor in dead:
        with session_scope(engine) as session:
            gone = session.execute(
                delete(Worker).where(Worker.executor_id == executor, Worker.seen_at < cutoff))
            if getattr(gone, "rowcount", 0) == 1:
                claimed.append(executor)
    return claimed


def take_over(engine: Engine) -> list[str]:
    """Recover the unfinished jobs of workers that died (kill -9, a lost machine) in this worker.

    DBOS recovers only its own executor's workflows when it starts, so a live worker does it for the
    dead one; steps are idempotent, so the interrupted step simply runs again here."""
    from dbos import DBOS

    taken: list[str] = []
    for executor in _claim_dead_workers(engine):
        handles = DBOS._recover_pending_workflows([executor])
        taken += [handle.get_workflow_id() for handle in handles]
    return taken


@dataclass(frozen=True)
class Periodic:
    """Work the service does on a schedule (backups, probes): a DBOS workflow fired by a cron
    expression (six fields: seconds first) and run on the workers' queue, once per fire time across
    every worker sharing the database."""

    name: str
    cron: str
    workflow: Callable[[datetime, Any], None]


_periodic: dict[str, Periodic] = {}


PERIODIC_PREFIX = "countycloud.periodic."


def register_periodic(name: str, cron: str, action: Callable[[datetime], None]) -> None:
    """Declare periodic work before the process becomes a worker (run_workers creates its schedule)."""
    from dbos import DBOS

    def fire(scheduled_at: datetime, _context: Any) -> None:
        action(scheduled_at)

    workflow = DBOS.workflow(name=f"{PERIODIC_PREFIX}{name}")(fire)
    _periodic[name] = Periodic(name, cron, workflow)


# Every fire of periodic work is a DBOS workflow with its record (backup rounds every 5 s, probes and
# stats every minute: tens of thousands a day). Finished ones are kept this long, then forgotten.
PERIODIC_HISTORY_KEPT = timedelta(days=1)
HISTORY_WORK = "workflow-history"
HISTORY_CRON = "0 17 * * * *"  # hourly
_FORGET_BATCH = 1000


def forget_periodic_history(now: datetime, kept: timedelta = PERIODIC_HISTORY_KEPT) -> int:
    """Delete the records of periodic fires that finished before `now - kept`; returns how many. Jobs
    (provision, backup, failover: the operators' history) are never touched here."""
    from dbos import DBOS, WorkflowStatusString

    names = [f"{PERIODIC_PREFIX}{name}" for name in _periodic]
    finished = [WorkflowStatusString.SUCCESS.value, WorkflowStatusString.ERROR.value,
                WorkflowStatusString.CANCELLED.value]
    before = (now - kept).isoformat()
    forgotten = 0
    while names:
        batch = [status.workflow_id for status in DBOS.list_workflows(
            name=names, status=finished, completed_before=before, limit=_FORGET_BATCH,
            load_input=False, load_output=False)]
        if not batch:
            break
        DBOS.delete_workflows(batch)
        forgotten += len(batch)
        if len(batch) < _FORGET_BATCH:
            break
    return forgotten


def _ensure_schedules() -> None:
    from dbos import DBOS

    existing = {schedule["schedule_name"]: schedule for schedule in DBOS.list_schedules()}
    for periodic in _periodic.values():
        found = existing.get(periodic.name)
        if found is not None and found["schedule"] == periodic.cron:
            continue
        if found is not None:
            DBOS.delete_schedule(periodic.name)
        with contextlib.suppress(Exception):  # another worker created it just now
            DBOS.create_schedule(schedule_name=periodic.name, workflow_fn=periodic.workflow,
                                 schedule=periodic.cron, queue_name=jobs.WORKER_QUEUE)


def run_workers(engine: Engine, stop: threading.Event | None = None, *,
                sites: Sequence[str] = ()) -> threading.Thread:
    """Make this process a worker: it takes jobs from the workers' queue and the queues of `sites`,
    heartbeats, and takes over dead workers' jobs. Returns the heartbeat thread (ended by `stop`)."""
    jobs.launch(engine, worker=True, sites=sites)
    _ensure_schedules()
    stop = stop or threading.Event()
    _heartbeat(engine)

    def beat() -> None:
        while not stop.wait(jobs.WORKER_HEARTBEAT_S):
            try:
                _heartbeat(engine)
                taken = take_over(engine)
                if taken:
                    logging.getLogger(__name__).warning("took over jobs of dead workers: %s", taken)
            except Exception:  # the database away for a moment: try again at the next beat
                logging.getLogger(__name__).exception("worker heartbeat failed")
        with contextlib.suppress(Exception), session_scope(engine) as session:
            session.execute(delete(Worker).where(Worker.executor_id == jobs.executor_id()))

    thread = threading.Thread(target=beat, name="countycloud-worker-heartbeat", daemon=True)
    thread.start()
    return thread


def _forget_history(at: datetime) -> None:
    forgotten = forget_periodic_history(at)
    if forgotten:
        log.info("forgot %d finished periodic fires older than %s", forgotten, PERIODIC_HISTORY_KEPT)


# Registered once per process, here: every worker keeps the history short.
register_periodic(HISTORY_WORK, HISTORY_CRON, _forget_history)
