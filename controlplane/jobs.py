"""The durable job runner: each job is a DBOS workflow, each of its named steps a DBOS step.

DBOS checkpoints every finished step in its system tables, so after a crash the workflow replays:
finished steps return their recorded output without running, the interrupted step runs again
(steps are idempotent), and the job goes on. The workflow id is the job id, so rerunning the same
command continues the same job. Progress is mirrored into our own Job/JobStep rows, which is what
`job show` and the console read.

Choices that keep several CLI processes safe on one database:
- every process gets its own DBOS executor id, so `DBOS.launch()` in one CLI never "recovers" a job
  that another live CLI is running; a crashed job is resumed explicitly (`resume`, or the same
  command again), and `resume` refuses while the job's recorded runner process is still alive;
- the application version is fixed, so a job started by older code can still be resumed;
- on SQLite, DBOS keeps its tables in a sibling file (`<db>.dbos.sqlite`) so its frequent writes do
  not contend with ours for the one SQLite write lock; on PostgreSQL it uses the same database, in its
  own `dbos` schema.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from inventory.db import as_utc, session_scope
from inventory.jobs import (
    FINISHED,
    Job,
    JobKind,
    JobStatus,
    JobStep,
    Step,
    StepContext,
    StepResult,
    StepsBuilder,
    StepStatus,
    Worker,
)

if TYPE_CHECKING:
    from dbos import DBOSConfig

# dbos is imported on first use, not at module import: it costs ~0.5 s, and `job list`, `job show`
# and every CLI command that only reads jobs never need it.

DBOS_APP_NAME = "countycloud"
# Fixed on purpose: DBOS only recovers workflows of the running application version, and a job must
# stay resumable across upgrades of the code (its steps are idempotent and rebuilt from its args).
DBOS_APP_VERSION = "countycloud-jobs-1"
POLL_S = 0.2
MAX_POLL_S = 1.0
# A job run by this process is read when it changes, and at least this often (see _wait_s).
LOCAL_POLL_S = 5.0
# How often this process's DBOS queue looks for the job it was asked to resume.
QUEUE_POLL_S = 0.1
# Output is flushed to the database at most this often while a step runs (and always at its end).
LOG_FLUSH_S = 0.5
OUTPUT_KEEP_CHARS = 200_000
# The queue that `countycloud serve` workers take submitted jobs from, on every machine sharing the
# database; each worker runs at most WORKER_CONCURRENCY jobs at once (VM bring-up is also paced by
# the machine's bring-up places, provisioning/bringup.py).
WORKER_QUEUE = "countycloud-jobs"
WORKER_CONCURRENCY = 16
# Jobs that act at a site go on that site's queue: at most SITE_CONCURRENCY of them run at once across
# all workers, so one site's burst (13 creates) cannot take every worker slot from the other's (a
# failover). Workers listen to the queues of the sites they are told at start.
SITE_QUEUE_PREFIX = "countycloud-jobs-site-"
SITE_CONCURRENCY = 13
# A worker writes its heartbeat this often; one not seen for WORKER_DEAD_AFTER_S is dead and a live
# worker takes over its jobs (the issue asks for a takeover within 30 s).
WORKER_HEARTBEAT_S = 2.0
WORKER_DEAD_AFTER_S = 10.0


class JobError(Exception):
    """A job request the runner cannot honour; the message is meant for an operator."""


class JobNotFound(JobError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class JobConflict(JobError):
    pass


class JobFailed(JobError):
    def __init__(self, job_id: str, error: str) -> None:
        super().__init__(f"job {job_id} failed: {error}")
        self.job_id = job_id
        self.error = error


class JobInterrupted(JobError):
    """The operator pressed Ctrl-C while waiting: the job stays resumable, like after a crash."""

    def __init__(self, job_id: str, step: str | None) -> None:
        where = f" during step {step!r}" if step else ""
        super().__init__(f"job {job_id} interrupted{where}; it stays resumable: rerun the same command "
                         f"or `countycloud job resume {job_id}`")
        self.job_id = job_id


EXIT_INTERRUPTED = 130  # the shell's convention for "ended by SIGINT"


class StepFailed(Exception):
    """Raised out of a DBOS step so DBOS records it; carries only strings, so it always serialises."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(step, message)
        self.step = step
        self.message = message

    def __str__(self) -> str:
        return f"step {self.step!r}: {self.message}"


# ---------------------------------------------------------------- views (what callers read)


@dataclass(frozen=True)
class StepView:
    index: int
    name: str
    description: str
    status: StepStatus
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    output: str
    error: str | None
    attempts: int


@dataclass(frozen=True)
class JobView:
    id: str
    kind: JobKind
    target: str
    args: dict[str, Any]
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    runner: str | None
    artifacts_dir: str
    steps: tuple[StepView, ...] = ()

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(UTC)
        return (as_utc(end) - as_utc(self.started_at)).total_seconds()

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return as_utc(value).isoformat() if value else None

        return {
            "id": self.id, "kind": self.kind.value, "target": self.target, "args": self.args,
            "status": self.status.value, "created_at": iso(self.created_at),
            "started_at": iso(self.started_at), "finished_at": iso(self.finished_at),
            "duration_s": self.duration_s, "error": self.error, "runner": self.runner,
            "artifacts_dir": self.artifacts_dir,
            "steps": [
                {
                    "index": s.index, "name": s.name, "description": s.description,
                    "status": s.status.value, "started_at": iso(s.started_at),
                    "finished_at": iso(s.finished_at), "duration_s": s.duration_s,
                    "output": s.output, "error": s.error, "attempts": s.attempts,
                }
                for s in self.steps
            ],
        }


ProgressCallback = Callable[[JobView], None]


def _now() -> datetime:
    return datetime.now(UTC)


def _view(job: Job, with_steps: bool = True) -> JobView:
    steps = tuple(
        StepView(s.index, s.name, s.description, s.status, s.started_at, s.finished_at, s.duration_s,
                 s.output, s.error, s.attempts)
        for s in job.steps
    ) if with_steps else ()
    return JobView(job.id, job.kind, job.target, dict(job.args or {}), job.status, job.created_at,
                   job.started_at, job.finished_at, job.error, job.runner, job.artifacts_dir, steps)


# ---------------------------------------------------------------- builders


_builders: dict[JobKind, StepsBuilder] = {}


def register_builder(kind: JobKind, builder: StepsBuilder) -> None:
    """Declare how a kind of job is built from its args, so any process can resume it."""
    _builders[kind] = builder


# ---------------------------------------------------------------- process state


@dataclass
class _Live:
    """A job being executed by this process: its rebuilt steps and the outputs replayed so far."""

    steps: list[Step]
    context: Any
    previous: dict[str, Any] = field(default_factory=dict)


class _Process:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.engine: Engine | None = None
        self.dbos_url: str | None = None
        self.launch_s: float | None = None
        self.executor_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.queue_name = f"countycloud-{self.executor_id}"
        # Per-job builder/context given to start() in this process (tests, or a one-off job).
        self.overrides: dict[str, tuple[StepsBuilder | None, Any]] = {}
        self.default_context: Any = None
        self.live: dict[str, _Live] = {}
        self.workflow: Callable[[str], str] | None = None
        # Set when Ctrl-C cut a foreground wait short: shutdown() then ends the process at once.
        self.interrupted = False
        # The workers' queues this process takes jobs from (`countycloud serve`); none for a CLI.
        self.listening: list[str] = []
        self.registered_queues: set[str] = set()
        self.own_queue = False
        # Per job this process waits for: set when its steps or its end are recorded here, so the
        # wait reads the job when it changes rather than polling it.
        self.changed: dict[str, threading.Event] = {}


_proc = _Process()


def set_default_context(context: Any) -> None:
    """The context handed to builders of jobs this process picks up without being told (resumes)."""
    _proc.default_context = context


def _runner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _runner_alive(runner: str | None) -> bool:
    if not runner:
        return False
    host, _, pid = runner.rpartition(":")
    if not pid.isdigit():
        return False
    if host != socket.gethostname():
        # Another machine's runner: alive while it is a worker whose heartbeat is fresh.
        return _proc.engine is not None and _worker_alive(_proc.engine, host, int(pid))
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dbos_url_for(engine: Engine) -> str:
    """Where DBOS keeps its checkpoints for this platform database (see the module docstring)."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if not database or database == ":memory:":
            raise JobError("durable jobs need a file or server database, not an in-memory SQLite")
        return f"sqlite:///{Path(database).with_suffix('.dbos.sqlite')}"
    return url.render_as_string(hide_password=False)


class _QuietStepFailures(logging.Filter):
    """DBOS logs a traceback when a workflow raises; a failed step is already recorded in JobStep and
    reported to the operator as one line, so that traceback is noise (a user's mistake must not print
    one). Any other DBOS error still gets through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StepFailed))


_quiet = _QuietStepFailures()


def site_queue(site: str | None) -> str:
    return WORKER_QUEUE if site is None else f"{SITE_QUEUE_PREFIX}{site}"


def _register_site_queue(queue: str) -> None:
    from dbos import DBOS

    if queue != WORKER_QUEUE and queue not in _proc.registered_queues:
        DBOS.register_queue(queue, global_concurrency=SITE_CONCURRENCY,
                            worker_concurrency=min(WORKER_CONCURRENCY, SITE_CONCURRENCY),
                            polling_interval_sec=QUEUE_POLL_S, on_conflict="always_update")
        _proc.registered_queues.add(queue)


def launch(engine: Engine, *, worker: bool = False, sites: Sequence[str] = ()) -> None:
    """Launch DBOS once per process for this database (relaunch if the database changes, as in tests)."""
    from dbos import DBOS

    target = dbos_url_for(engine)
    with _proc.lock:
        if _proc.workflow is None:
            # Registered once per process, before the first launch (DBOS requires it for recovery).
            _proc.workflow = DBOS.workflow(name="countycloud.job")(_job_workflow)
        listening = [WORKER_QUEUE, *(site_queue(site) for site in sites)] if worker else []
        if _proc.dbos_url == target and (not worker or set(listening) <= set(_proc.listening)):
            _proc.engine = engine
            return
        if _proc.dbos_url is not None:
            DBOS.destroy(destroy_registry=False)
        config: DBOSConfig = {
            "name": DBOS_APP_NAME,
            "system_database_url": target,
            "application_version": DBOS_APP_VERSION,
            "executor_id": _proc.executor_id,
            "log_level": "WARNING",
            "sys_db_pool_size": 4,
        }
        logging.getLogger("dbos").addFilter(_quiet)
        began = time.perf_counter()
        DBOS(config=config)
        # Resumed jobs go onto this process's own queue, and the process listens to no other: a job
        # resumed by one CLI is never picked up by another CLI that happens to be running (which
        # would then cut it off when it exits).
        # A CLI listens to its own queue only; a worker (`countycloud serve`) to the shared one too.
        DBOS.listen_queues([_proc.queue_name, *listening])
        DBOS.launch()
        # The process's own queue is registered only when a job is put on it (`_own_queue`): DBOS
        # polls every registered queue it listens to ten times a second, which cost a CLI waiting
        # for 13 jobs ~5 % of a core (docs/benchmarks.md, issue 14 item 12).
        _proc.own_queue = False
        DBOS.register_queue(WORKER_QUEUE, worker_concurrency=WORKER_CONCURRENCY,
                            polling_interval_sec=QUEUE_POLL_S, on_conflict="always_update")
        _proc.registered_queues = set()
        for queue in listening:
            _register_site_queue(queue)
        _proc.listening = listening
        _proc.launch_s = time.perf_counter() - began
        _proc.dbos_url = target
        _proc.engine = engine


def _own_queue() -> str:
    """This process's queue, registered on first use (DBOS starts polling it within a second)."""
    from dbos import DBOS

    with _proc.lock:
        if not _proc.own_queue:
            DBOS.register_queue(_proc.queue_name, polling_interval_sec=QUEUE_POLL_S,
                                on_conflict="always_update")
            _proc.own_queue = True
    return _proc.queue_name


def _changed(job_id: str) -> None:
    event = _proc.changed.get(job_id)
    if event is not None:
        event.set()


def executor_id() -> str:
    """This process's DBOS executor id (a worker's heartbeat row is keyed by it)."""
    return _proc.executor_id


def shutdown() -> None:
    """Stop DBOS's threads (the CLI calls this before exiting).

    After a Ctrl-C (JobInterrupted) this ends the process immediately with status 130, exactly as a
    crash would: the step under way keeps a worker thread busy that nothing can stop cleanly, and
    the job's checkpoint already lets a rerun continue it (that step runs again; steps are idempotent).
    """
    if _proc.interrupted:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    with _proc.lock:
        if _proc.dbos_url is not None:
            from dbos import DBOS

            if _proc.own_queue:
                with contextlib.suppress(Exception):  # best effort: a leftover queue row is harmless
                    DBOS.delete_queue(_proc.queue_name)
                _proc.own_queue = False
            DBOS.destroy(destroy_registry=False)
            _proc.dbos_url = None


def dbos_launch_seconds() -> float | None:
    """How long DBOS.launch() took in this process (reported by the benchmark and `job` CLI debug)."""
    return _proc.launch_s


# ---------------------------------------------------------------- mirror writes


def _engine() -> Engine:
    if _proc.engine is None:
        raise JobError("the job runner is not bound to a database")
    return _proc.engine


def _mirror_begin(engine: Engine, job_id: str, steps: list[Step]) -> None:
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        recorded = {s.index: s for s in job.steps}
        if recorded and [recorded[i].name for i in sorted(recorded)] != [s.name for s in steps]:
            # The builder changed shape since the job was recorded: replaying would misalign steps.
            raise JobError(
                f"job {job_id}: its steps are now {[s.name for s in steps]}, but it was recorded with "
                f"{[recorded[i].name for i in sorted(recorded)]}; cancel it and start a new job"
            )
        for index, step in enumerate(steps):
            if index not in recorded:
                session.add(JobStep(job_id=job_id, index=index, name=step.name,
                                    description=step.description, status=StepStatus.PENDING,
                                    output="", attempts=0))
        job.status = JobStatus.RUNNING
        job.error = None
        job.finished_at = None
        job.started_at = job.started_at or _now()
        job.runner = _runner_name()
    _changed(job_id)


def _mirror_job_end(engine: Engine, job_id: str, status: JobStatus, error: str | None) -> None:
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            return
        job.status = status
        job.error = error
        job.finished_at = _now()
        job.runner = None
        if status == JobStatus.CANCELLED:
            # What never ran (or was cut off) will not run now: say so rather than leave it "pending".
            for step in job.steps:
                if step.status in (StepStatus.PENDING, StepStatus.RUNNING):
                    step.status = StepStatus.SKIPPED
    _changed(job_id)


class _StepLog:
    """Collects a step's output lines and writes them to its row now and then, not per line."""

    def __init__(self, engine: Engine, job_id: str, index: int) -> None:
        self.engine, self.job_id, self.index = engine, job_id, index
        self.lines: list[str] = []
        self.flushed_at = time.monotonic()

    def __call__(self, text: str) -> None:
        self.lines.append(text if text.endswith("\n") else text + "\n")
        if time.monotonic() - self.flushed_at >= LOG_FLUSH_S:
            self.flush()

    def text(self) -> str:
        return "".join(self.lines)[-OUTPUT_KEEP_CHARS:]

    def flush(self) -> None:
        with session_scope(self.engine) as session:
            row = session.get(JobStep, (self.job_id, self.index))
            if row is not None:
                row.output = self.text()
        self.flushed_at = time.monotonic()


def _execute_step(job_id: str, index: int) -> str | dict[str, Any] | None:
    """Body of one DBOS step: run the job's step `index`, mirroring its state into JobStep."""
    engine = _engine()
    live = _proc.live[job_id]
    step = live.steps[index]
    began = time.monotonic()
    with session_scope(engine) as session:
        job, row = session.get(Job, job_id), session.get(JobStep, (job_id, index))
        if job is None or row is None:
            raise JobNotFound(job_id)
        row.status = StepStatus.RUNNING
        row.started_at = _now()
        row.finished_at = None
        row.duration_s = None
        row.error = None
        row.output = ""
        row.attempts = (row.attempts or 0) + 1
        folder, args = Path(job.artifacts_dir), dict(job.args or {})
    _changed(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    log = _StepLog(engine, job_id, index)
    context = StepContext(job_id=job_id, args=args, artifacts=folder, previous=dict(live.previous), _log=log)
    try:
        result = step.run(context)
    except Exception as error:  # any failure of a step is recorded, then fails the job
        message = f"{type(error).__name__}: {error}"
        _finish_step(engine, job_id, index, StepStatus.FAILED, began, log.text(), message)
        raise StepFailed(step.name, message) from error
    said = result.summary() if isinstance(result, StepResult) else result
    output = log.text()
    if said:
        output += said if said.endswith("\n") else said + "\n"
    _finish_step(engine, job_id, index, StepStatus.SUCCEEDED, began, output[-OUTPUT_KEEP_CHARS:], None)
    # What DBOS checkpoints and later steps read: plain JSON data, never a pickled class of ours.
    return result.model_dump(mode="json") if isinstance(result, StepResult) else result


def _finish_step(engine: Engine, job_id: str, index: int, status: StepStatus, began: float,
                 output: str, error: str | None) -> None:
    with session_scope(engine) as session:
        row = session.get(JobStep, (job_id, index))
        assert row is not None
        row.status = status
        row.finished_at = _now()
        row.duration_s = round(time.monotonic() - began, 3)
        row.output = output
        row.error = error
    _changed(job_id)


# ---------------------------------------------------------------- the workflow


def _job_workflow(job_id: str) -> str:
    """The one workflow every job runs (registered with DBOS by launch)."""
    from dbos import DBOS

    engine = _engine()
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        kind, args = job.kind, dict(job.args or {})
    try:
        builder, context = _proc.overrides.get(job_id, (None, None))
        builder = builder or _builders.get(kind)
        context = context if context is not None else _proc.default_context
        if builder is None:
            raise JobError(f"no step builder registered for job kind {kind.value!r}")
        steps = builder(args, context)
        _mirror_begin(engine, job_id, steps)
        live = _Live(steps=steps, context=context)
        _proc.live[job_id] = live
        for index, step in enumerate(steps):
            # Retries are off: a failed step fails the job, and an operator resumes it after a fix.
            output = DBOS.run_step(
                {"name": f"{index}:{step.name}", "retries_allowed": False}, _execute_step, job_id, index
            )
            live.previous[step.name] = output
    except StepFailed as step_failure:
        _mirror_job_end(engine, job_id, JobStatus.FAILED, str(step_failure))
        raise
    except Exception as error:  # outside any step: building the steps, or the mirror itself
        job_failure = StepFailed("(building the job)", f"{type(error).__name__}: {error}")
        _mirror_job_end(engine, job_id, JobStatus.FAILED, str(job_failure))
        raise job_failure from None
    finally:
        _proc.live.pop(job_id, None)
    _mirror_job_end(engine, job_id, JobStatus.SUCCEEDED, None)
    return job_id


# ---------------------------------------------------------------- public API


def _new_job_id(kind: JobKind, target: str) -> str:
    return f"{kind.value}-{target}-{uuid.uuid4().hex[:6]}"


def _unfinished(engine: Engine, kind: JobKind, target: str) -> Job | None:
    with session_scope(engine) as session:
        return session.scalars(
            select(Job).where(Job.kind == kind, Job.target == target, Job.status.not_in(list(FINISHED)))
        ).first()


def _create(engine: Engine, kind: JobKind, target: str, args: dict[str, Any],
            artifacts_root: Path | None) -> str | None:
    """A new job row, or None when another process created this target's job just now."""
    job_id = _new_job_id(kind, target)
    root = artifacts_root or _default_artifacts_root()
    try:
        with session_scope(engine) as session:
            session.add(Job(id=job_id, kind=kind, target=target, args=args, status=JobStatus.PENDING,
                            created_at=_now(), artifacts_dir=str(root / job_id)))
    except IntegrityError:
        return None
    return job_id


def _reusable(engine: Engine, kind: JobKind, target: str, args: dict[str, Any]) -> JobView | None:
    """The unfinished job a request for (kind, target, args) continues, if any.

    A job that failed at its check step did nothing: it is cancelled and the request is a new job,
    whatever its arguments (a corrected request goes ahead; the same request is checked afresh, as
    of now: a check that refused a request for its age must not refuse the new one).
    Any other unfinished job is continued by the same request and blocks one with other arguments."""
    existing = _unfinished(engine, kind, target)
    if existing is None:
        return None
    view = get_job(engine, existing.id)
    if view.status is JobStatus.FAILED and view.steps and view.steps[0].status is StepStatus.FAILED:
        _mirror_job_end(engine, view.id, JobStatus.CANCELLED, view.error)
        return None
    if existing.args == args:
        return view
    raise JobConflict(
        f"job {existing.id} ({kind.value} {target}) is unfinished with other arguments "
        f"{existing.args}; resume it (`countycloud job resume {existing.id}`) or cancel it "
        f"(`countycloud job cancel {existing.id}`)"
    )


def submit(engine: Engine, kind: JobKind, target: str, args: Mapping[str, Any], *,
           artifacts_root: Path | None = None, site: str | None = None) -> str:
    """Queue a job for the workers (`countycloud serve`) and return its id at once. An unfinished job
    for the same target and arguments is that job: queued again if nobody is running it."""
    args = dict(args)
    if kind not in _builders:
        raise JobError(f"no step builder registered for job kind {kind.value!r}")
    for _attempt in range(3):
        existing = _reusable(engine, kind, target, args)
        if existing is not None:
            if not _running(engine, existing):
                requeue(engine, existing.id, site=site)
            return existing.id
        job_id = _create(engine, kind, target, args, artifacts_root)
        if job_id is None:
            continue
        launch(engine)
        _enqueue(job_id, site)
        return job_id
    raise JobConflict(f"could not create or find the {kind.value} job for {target}")


def _enqueue(job_id: str, site: str | None) -> None:
    from dbos import DBOS, SetWorkflowID

    assert _proc.workflow is not None
    queue = site_queue(site)
    _register_site_queue(queue)
    with SetWorkflowID(job_id):
        DBOS.enqueue_workflow(queue, _proc.workflow, job_id)


def requeue(engine: Engine, job_id: str, *, site: str | None = None) -> None:
    """Put a crashed or failed job back on the workers' queue (it continues where it stopped)."""
    view = get_job(engine, job_id, with_steps=False)
    if view.status == JobStatus.SUCCEEDED:
        return
    if view.status == JobStatus.CANCELLED:
        raise JobConflict(f"job {job_id} was cancelled; start a new one")
    if _runner_alive(view.runner):
        raise JobConflict(f"job {job_id} is being run right now by process {view.runner}")
    launch(engine)
    from dbos import DBOS

    queue = site_queue(site)
    _register_site_queue(queue)
    status = DBOS.get_workflow_status(job_id)
    if status is None:
        _enqueue(job_id, site)
    elif status.status in ("PENDING", "ENQUEUED", "DELAYED"):
        DBOS.resume_workflow(job_id, queue_name=queue)
    elif status.status in ("ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"):
        DBOS.rewind_workflow(job_id, start_step=_first_unfinished_step(job_id), queue_name=queue)
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is not None and job.status is JobStatus.FAILED:
            job.status, job.error = JobStatus.PENDING, None


def _queued_for_workers(engine: Engine, job_id: str) -> bool:
    """Waiting on the workers' queue while a worker is alive to take it."""
    if not live_workers(engine):
        return False
    launch(engine)
    from dbos import DBOS

    status = DBOS.get_workflow_status(job_id)
    return (status is not None and status.status == "ENQUEUED"
            and (status.queue_name or "").startswith(WORKER_QUEUE))


# ---------------------------------------------------------------- workers (the service)


def _worker_alive(engine: Engine, host: str, pid: int) -> bool:
    cutoff = _now() - timedelta(seconds=WORKER_DEAD_AFTER_S)
    with session_scope(engine) as session:
        return session.scalars(select(Worker.executor_id).where(
            Worker.host == host, Worker.pid == pid, Worker.seen_at >= cutoff)).first() is not None


def _running(engine: Engine, job: JobView) -> bool:
    """Someone runs this job now: this process, another live process, or a live worker will."""
    return job.id in _proc.live or _runner_alive(job.runner) or _queued_for_workers(engine, job.id)


def live_workers(engine: Engine, *, now: datetime | None = None) -> list[str]:
    """Executor ids of workers whose heartbeat is fresh."""
    cutoff = (now or _now()) - timedelta(seconds=WORKER_DEAD_AFTER_S)
    with session_scope(engine) as session:
        return list(session.scalars(select(Worker.executor_id).where(Worker.seen_at >= cutoff)))


def start(
    engine: Engine,
    kind: JobKind,
    target: str,
    args: Mapping[str, Any],
    steps_builder: StepsBuilder | None = None,
    *,
    context: Any = None,
    artifacts_root: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> str:
    """Run a job to its end and return its id; raise JobFailed if a step fails.

    If a job of this kind for this target is not finished (crashed, or failed and since fixed), that
    job is resumed instead of a new one being created: rerunning a command continues its job.
    """
    args = dict(args)
    if steps_builder is None and kind not in _builders:
        raise JobError(f"no step builder registered for job kind {kind.value!r}")
    for _attempt in range(3):
        existing = _reusable(engine, kind, target, args)
        if existing is not None:
            _proc.overrides[existing.id] = (steps_builder, context)
            if _running(engine, existing):
                # Run by a live worker (the service, or another CLI) right now: follow it, never twice.
                launch(engine)
                return _wait(engine, existing.id, on_progress)
            return resume(engine, existing.id, context=context, on_progress=on_progress)
        job_id = _create(engine, kind, target, args, artifacts_root)
        if job_id is None:
            continue  # another process created the job for this target just now: resume that one
        _proc.overrides[job_id] = (steps_builder, context)
        _launch_new(engine, job_id)
        return _wait(engine, job_id, on_progress)
    raise JobConflict(f"could not create or find the {kind.value} job for {target}")


def start_many(
    engine: Engine,
    kind: JobKind,
    targets: Mapping[str, Mapping[str, Any]],
    *,
    context: Any = None,
    artifacts_root: Path | None = None,
    on_progress: Callable[[str, JobView], None] | None = None,
) -> dict[str, str | JobError]:
    """Run one job per target at once in this process, like `start` for each; every target's outcome
    is its job id or the JobError that ended it (one failing job does not stop the others).

    One process instead of one per target: on 2 cores the CLI's own start-up, repeated for 13
    counties, was a third of their time to serve.
    """
    launch(engine)
    outcomes: dict[str, str | JobError] = {}

    def run(target: str) -> None:
        report = None if on_progress is None else (lambda view: on_progress(target, view))
        try:
            outcomes[target] = start(engine, kind, target, targets[target], context=context,
                                     artifacts_root=artifacts_root, on_progress=report)
        except JobError as error:
            outcomes[target] = error
        except Exception as error:  # e.g. the database went away: this target's outcome, not a lost thread
            outcomes[target] = JobError(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=run, args=(target,), name=f"job-{target}", daemon=True)
               for target in targets]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        # As for one job: the process ends like a crash (see shutdown) and a rerun continues each job.
        _proc.interrupted = True
        raise JobError("interrupted; rerun the same command to continue its jobs") from None
    return outcomes


def resume(engine: Engine, job_id: str, *, context: Any = None,
           on_progress: ProgressCallback | None = None) -> str:
    """Continue a crashed or failed job where it stopped; a finished job is left as it is."""
    view = get_job(engine, job_id, with_steps=False)
    if view.status == JobStatus.SUCCEEDED:
        return job_id
    if view.status == JobStatus.CANCELLED:
        raise JobConflict(f"job {job_id} was cancelled; start a new one")
    if _runner_alive(view.runner):
        raise JobConflict(f"job {job_id} is being run right now by process {view.runner}")
    if job_id not in _proc.overrides:
        _proc.overrides[job_id] = (None, context)
    launch(engine)
    from dbos import DBOS

    status = DBOS.get_workflow_status(job_id)
    if status is None:
        # The job row was written but the process died before the workflow was recorded.
        _launch_new(engine, job_id)
    elif status.status in ("PENDING", "ENQUEUED", "DELAYED"):
        # Left PENDING by a dead process (or ENQUEUED on a dead process's queue): put it on ours.
        DBOS.resume_workflow(job_id, queue_name=_own_queue())
    elif status.status in ("ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"):
        DBOS.rewind_workflow(job_id, start_step=_first_unfinished_step(job_id), queue_name=_own_queue())
    # SUCCESS: DBOS finished but we died before mirroring it; _wait repairs the mirror.
    return _wait(engine, job_id, on_progress)


def _launch_new(engine: Engine, job_id: str) -> None:
    """Start the job's workflow in this process, under the job's id (so a rerun finds the same one)."""
    launch(engine)
    from dbos import DBOS, SetWorkflowID

    assert _proc.workflow is not None
    with SetWorkflowID(job_id):
        DBOS.start_workflow(_proc.workflow, job_id)


def _first_unfinished_step(job_id: str) -> int:
    """The DBOS function id to rewind to: just after the last step that succeeded in order."""
    from dbos import DBOS

    done = 0
    for info in sorted(DBOS.list_workflow_steps(job_id), key=lambda i: i["function_id"]):
        if info["error"] is not None:
            break
        done = info["function_id"]
    return done + 1


def _poll_s() -> float:
    """How often one waiting job reads its state: the process as a whole reads about five times a
    second, whatever the number of jobs (at most once a second each). Thirteen jobs of `tenant create`
    each reading every 0.2 s took CPU from the very guests they wait for."""
    return min(MAX_POLL_S, POLL_S * max(1, len(_proc.live)))


def _wait_s(job_id: str, view: JobView) -> float:
    """How long to sleep before reading the job again, unless it changes here first.

    A job run by this process says when it changes (`_changed`): its wait reads it then, and
    otherwise only every LOCAL_POLL_S (a failure DBOS records without us). Its record ends just
    before DBOS's does, so a finished record is looked at again soon. A job run elsewhere is polled.
    """
    if view.status in FINISHED or view.status is JobStatus.FAILED:
        return POLL_S / 4
    return LOCAL_POLL_S if job_id in _proc.live else _poll_s()


def _wait(engine: Engine, job_id: str, on_progress: ProgressCallback | None) -> str:
    """Wait for the workflow to end, reporting progress from the mirror rows as it changes."""
    from dbos import DBOS

    last: JobView | None = None
    changed = _proc.changed.setdefault(job_id, threading.Event())
    try:
        while True:
            changed.clear()  # before the reads: a change recorded after them wakes the next wait
            dbos_status = DBOS.get_workflow_status(job_id)
            state = dbos_status.status if dbos_status else "PENDING"
            view = get_job(engine, job_id)
            if on_progress is not None and view != last:
                on_progress(view)
            last = view
            if state in ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"):
                break
            changed.wait(_wait_s(job_id, view))
    except KeyboardInterrupt:
        raise _interrupted(engine, job_id) from None
    finally:
        _proc.changed.pop(job_id, None)
    if state == "SUCCESS" and view.status != JobStatus.SUCCEEDED:
        _mirror_job_end(engine, job_id, JobStatus.SUCCEEDED, None)
    elif state != "SUCCESS" and view.status != JobStatus.FAILED:
        error = view.error or f"workflow ended {state}"
        _mirror_job_end(engine, job_id, JobStatus.FAILED, error)
    final = get_job(engine, job_id)
    if on_progress is not None and final != last:
        on_progress(final)
    if final.status != JobStatus.SUCCEEDED:
        raise JobFailed(job_id, final.error or "unknown error")
    return job_id


def _interrupted(engine: Engine, job_id: str) -> JobInterrupted:
    """Record a Ctrl-C on the job (failed, resumable) and hand back the error to raise."""
    _proc.interrupted = True
    view = get_job(engine, job_id)
    running = next((s.name for s in view.steps if s.status == StepStatus.RUNNING), None)
    interruption = JobInterrupted(job_id, running)
    _mirror_job_end(engine, job_id, JobStatus.FAILED, str(interruption))
    return interruption


def cancel(engine: Engine, job_id: str) -> None:
    """Abandon an unfinished job (it keeps its record); a new job for its target may then start."""
    view = get_job(engine, job_id, with_steps=False)
    if view.status == JobStatus.SUCCEEDED:
        raise JobConflict(f"job {job_id} already succeeded")
    if _runner_alive(view.runner):
        raise JobConflict(f"job {job_id} is being run right now by process {view.runner}")
    launch(engine)
    from dbos import DBOS

    if DBOS.get_workflow_status(job_id) is not None:
        DBOS.cancel_workflow(job_id)
    _mirror_job_end(engine, job_id, JobStatus.CANCELLED, view.error)


def get_job(engine: Engine, job_id: str, *, with_steps: bool = True) -> JobView:
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return _view(job, with_steps)


def list_jobs(engine: Engine, *, limit: int = 50, target: str | None = None,
              status: JobStatus | None = None, with_steps: bool = True,
              targets: Collection[str] | None = None) -> list[JobView]:
    """Newest first, with their steps (read in one more query for the whole page). `targets`: jobs
    acting on any of these (a county and its VMs)."""
    with session_scope(engine) as session:
        query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
        if with_steps:
            query = query.options(selectinload(Job.steps))
        if target is not None:
            query = query.where(Job.target == target)
        if targets is not None:
            query = query.where(Job.target.in_(list(targets)))
        if status is not None:
            query = query.where(Job.status == status)
        return [_view(job, with_steps) for job in session.scalars(query)]


def _default_artifacts_root() -> Path:
    from controlplane.settings import load

    return load().state_dir / "jobs"
