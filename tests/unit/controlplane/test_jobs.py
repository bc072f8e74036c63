"""The durable job runner: crash in a step, resume in a new process, failure then fixed resume.

Runs on SQLite and PostgreSQL (db_url). The crash tests run the job in a subprocess whose step
SIGKILLs its own process, so the checkpoint/replay path is the real one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from controlplane import jobs, workers
from inventory.db import make_engine, migrate, session_scope
from inventory.jobs import Job, JobKind, JobStatus, JobStep, Step, StepContext, StepStatus, Worker

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    migrate(db_url)  # the real migrations, so revision 0002_jobs is exercised on both databases
    engine = make_engine(db_url)
    yield engine
    jobs.shutdown()
    engine.dispose()


def run_fake(url: str, workdir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.unit.controlplane.fake_job", url, str(workdir), *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )


def ran(workdir: Path) -> list[str]:
    return (workdir / "ran.log").read_text().split()


def job_count(engine: Engine) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


@pytest.mark.parametrize("how", ["resume", "rerun"])
def test_kill9_inside_a_step_then_a_new_process_completes_the_job(
    engine: Engine, db_url: str, tmp_path: Path, how: str
) -> None:
    crashed = run_fake(db_url, tmp_path, "start")
    assert crashed.returncode == -9, crashed.stderr
    [job] = jobs.list_jobs(engine)
    assert job.status == JobStatus.RUNNING
    assert [s.status for s in job.steps] == [StepStatus.SUCCEEDED, StepStatus.RUNNING, StepStatus.PENDING]
    assert ran(tmp_path) == ["one", "two"]

    again = ("resume", job.id) if how == "resume" else ("start",)
    finished = run_fake(db_url, tmp_path, *again)
    assert finished.returncode == 0, finished.stderr

    # The finished step was not rerun, the interrupted one was, and the rest ran once.
    assert ran(tmp_path) == ["one", "two", "two", "three"]
    done = jobs.get_job(engine, job.id)
    assert done.status == JobStatus.SUCCEEDED
    assert [s.status for s in done.steps] == [StepStatus.SUCCEEDED] * 3
    assert [s.attempts for s in done.steps] == [1, 2, 1]
    # Step two saw step one's output, replayed from the checkpoint in the new process.
    assert "domain defined on made disk" in done.steps[1].output
    assert done.runner is None and done.finished_at is not None
    assert job_count(engine) == 1
    assert (Path(done.artifacts_dir)).is_dir()


def test_a_resumed_job_runs_in_the_resuming_process_not_in_a_bystander(
    sqlite_url: str, tmp_path: Path
) -> None:
    migrate(sqlite_url)
    assert run_fake(sqlite_url, tmp_path, "start").returncode == -9
    bystander = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.controlplane.fake_job", sqlite_url, str(tmp_path), "idle"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert bystander.stdout is not None and bystander.stdout.readline().strip() == "ready"
        engine = make_engine(sqlite_url)
        [job] = jobs.list_jobs(engine)
        resumer = subprocess.Popen(
            [sys.executable, "-m", "tests.unit.controlplane.fake_job", sqlite_url, str(tmp_path), "resume",
             job.id], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        _, err = resumer.communicate(timeout=120)
        assert resumer.returncode == 0, err
    finally:
        bystander.kill()
        bystander.wait()
    rerun = [line.split() for line in (tmp_path / "pids.log").read_text().splitlines()][2:]
    assert [name for name, _ in rerun] == ["two", "three"]
    # Each process listens only to its own DBOS queue, so the bystander never adopted the job.
    assert {int(pid) for _, pid in rerun} == {resumer.pid}
    engine.dispose()


def _as_from_a_shell() -> None:
    """The child's SIGINT as a shell gives it: handled by default, not blocked. A test process inherits
    what its earlier tests' libraries left (an ignored or blocked SIGINT survives exec): twice in the
    full suite under xdist the child never saw the Ctrl-C, and never alone (the library was not found)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_ends_the_process_at_once_and_leaves_the_job_resumable(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.controlplane.fake_job", db_url, str(tmp_path), "start-slow"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_shell,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "slow-once").exists():  # step two is under way (and would take 30 s)
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, err = child.communicate(timeout=20)
    finally:
        child.kill()
    assert child.returncode == jobs.EXIT_INTERRUPTED, err
    assert time.monotonic() - sent < 10  # did not wait out the step
    assert "interrupted during step 'two'" in err and "Traceback" not in err
    [job] = jobs.list_jobs(engine)
    assert job.status == JobStatus.FAILED and "stays resumable" in (job.error or "")

    finished = run_fake(db_url, tmp_path, "resume", job.id)
    assert finished.returncode == 0, finished.stderr
    assert ran(tmp_path) == ["one", "two", "two", "three"]
    assert jobs.get_job(engine, job.id).status == JobStatus.SUCCEEDED


def _failing_builder(workdir: Path) -> jobs.StepsBuilder:
    def build(args: Mapping[str, Any], _context: Any) -> list[Step]:
        def one(ctx: StepContext) -> str:
            (workdir / "one.count").write_text(str(int((workdir / "one.count").read_text() or 0) + 1)
                                               if (workdir / "one.count").exists() else "1")
            return "ok"

        def two(ctx: StepContext) -> str:
            ctx.log("attaching data disk")
            if (workdir / "broken").exists():
                raise RuntimeError("storage pool full")
            return "attached"

        return [Step("one", one), Step("two", two), Step("three", lambda ctx: None)]

    return build


def test_a_failing_step_fails_the_job_and_a_resume_after_the_fix_completes_it(
    engine: Engine, tmp_path: Path
) -> None:
    (tmp_path / "broken").touch()
    builder = _failing_builder(tmp_path)
    seen: list[JobStatus] = []
    with pytest.raises(jobs.JobFailed) as failure:
        jobs.start(engine, JobKind.RESIZE, "penghu", {"vcpus": 2}, builder,
                   artifacts_root=tmp_path / "art", on_progress=lambda view: seen.append(view.status))
    job_id = failure.value.job_id
    failed = jobs.get_job(engine, job_id)
    assert failed.status == JobStatus.FAILED
    assert "storage pool full" in (failed.error or "") and "two" in (failed.error or "")
    assert [s.status for s in failed.steps] == [StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.PENDING]
    assert failed.steps[1].error == "RuntimeError: storage pool full"
    assert "attaching data disk" in failed.steps[1].output
    assert seen[-1] == JobStatus.FAILED

    # The same command again while the cause persists: the same job, failed again, no new row.
    with pytest.raises(jobs.JobFailed):
        jobs.start(engine, JobKind.RESIZE, "penghu", {"vcpus": 2}, builder, artifacts_root=tmp_path / "art")
    assert job_count(engine) == 1

    (tmp_path / "broken").unlink()
    assert jobs.resume(engine, job_id) == job_id
    done = jobs.get_job(engine, job_id)
    assert done.status == JobStatus.SUCCEEDED and done.error is None
    assert [s.status for s in done.steps] == [StepStatus.SUCCEEDED] * 3
    assert [s.attempts for s in done.steps] == [1, 3, 1]
    assert (tmp_path / "one.count").read_text() == "1"
    assert job_count(engine) == 1


def test_other_args_for_an_unfinished_target_conflict_until_it_is_cancelled(
    engine: Engine, tmp_path: Path
) -> None:
    (tmp_path / "broken").touch()
    builder = _failing_builder(tmp_path)
    with pytest.raises(jobs.JobFailed) as failure:
        jobs.start(engine, JobKind.RESIZE, "kinmen", {"vcpus": 2}, builder, artifacts_root=tmp_path)
    with pytest.raises(jobs.JobConflict, match=failure.value.job_id):
        jobs.start(engine, JobKind.RESIZE, "kinmen", {"vcpus": 4}, builder, artifacts_root=tmp_path)
    jobs.cancel(engine, failure.value.job_id)
    cancelled = jobs.get_job(engine, failure.value.job_id)
    assert cancelled.status == JobStatus.CANCELLED
    assert [s.status for s in cancelled.steps] == [
        StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED,
    ]
    (tmp_path / "broken").unlink()
    second = jobs.start(engine, JobKind.RESIZE, "kinmen", {"vcpus": 4}, builder, artifacts_root=tmp_path)
    assert second != failure.value.job_id
    assert jobs.get_job(engine, second).status == JobStatus.SUCCEEDED


def test_unknown_job_and_live_runner_are_refused(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(jobs.JobNotFound):
        jobs.resume(engine, "provision-nowhere-000000")
    with session_scope(engine) as session:
        session.add(Job(id="retire-x-1", kind=JobKind.RETIRE, target="x", args={},
                        status=JobStatus.RUNNING, created_at=jobs._now(), artifacts_dir=str(tmp_path),
                        runner=f"{os.uname().nodename}:{os.getppid()}"))
    # The parent of this test process is alive: resuming would race it.
    with pytest.raises(jobs.JobConflict, match="being run right now"):
        jobs.resume(engine, "retire-x-1")



def test_migration_matches_the_job_models(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from inventory.db import Base

    with engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    # Only the job tables' differences: the other packages' tables are compared by their own tests
    # (and are unknown here when their models were not imported, as when this file runs alone).
    tables = {Job.__tablename__, JobStep.__tablename__, Worker.__tablename__}
    ours = [d for d in diffs if _table_of(d) in tables]
    assert ours == []


def _table_of(diff: Any) -> str | None:
    """The table an Alembic autogenerate difference is about (a tuple, or a list of column changes)."""
    first = diff[0] if isinstance(diff, list) else diff
    for item in first[1:]:
        table = getattr(item, "table", None)  # an index, a column, a constraint
        if table is not None and getattr(table, "name", None):
            return str(table.name)
        if hasattr(item, "columns"):  # a table itself
            return str(item.name)
        if isinstance(item, str):  # (modify_..., schema, table name, column name, ...)
            return item
    return None


def test_a_builder_that_raises_fails_the_job_with_a_readable_error(engine: Engine, tmp_path: Path) -> None:
    def build(args: Mapping[str, Any], _context: Any) -> list[Step]:
        return [Step("only", lambda ctx: args["tenant"])]  # the recorded args lack "tenant"

    def broken(args: Mapping[str, Any], _context: Any) -> list[Step]:
        raise KeyError("tenant")

    with pytest.raises(jobs.JobFailed) as failure:
        jobs.start(engine, JobKind.RETIRE, "yunlin", {}, broken, artifacts_root=tmp_path)
    assert failure.value.error == "step '(building the job)': KeyError: 'tenant'"
    with pytest.raises(jobs.JobFailed, match="KeyError"):
        jobs.start(engine, JobKind.RETIRE, "yunlin", {}, build, artifacts_root=tmp_path)
    assert jobs.get_job(engine, failure.value.job_id).steps[0].error == "KeyError: 'tenant'"


def test_registered_builder_gets_the_default_context_unless_one_is_given(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []

    def build(args: Mapping[str, Any], context: Any) -> list[Step]:
        seen.append(context)
        return [Step("noop", lambda ctx: None)]

    monkeypatch.setitem(jobs._builders, JobKind.DR_TEST, build)
    monkeypatch.setattr(jobs._proc, "default_context", "wired platform")
    jobs.start(engine, JobKind.DR_TEST, "site-a", {}, artifacts_root=tmp_path)
    jobs.start(engine, JobKind.DR_TEST, "site-b", {}, context="given", artifacts_root=tmp_path)
    assert seen == ["wired platform", "given"]


def test_start_many_runs_a_job_per_target_and_reports_each_outcome(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build(args: Mapping[str, Any], _context: Any) -> list[Step]:
        def work(ctx: StepContext) -> str:
            if args.get("broken"):
                raise RuntimeError("storage pool full")
            return "done"

        return [Step("work", work)]

    monkeypatch.setattr(jobs, "_builders", {**jobs._builders, JobKind.RESIZE: build})
    progress: dict[str, list[JobStatus]] = {}
    outcomes = jobs.start_many(
        engine, JobKind.RESIZE, {"penghu": {"vcpus": 2}, "kinmen": {"vcpus": 2, "broken": True}},
        artifacts_root=tmp_path / "art",
        on_progress=lambda target, view: progress.setdefault(target, []).append(view.status))
    penghu, kinmen = outcomes["penghu"], outcomes["kinmen"]
    assert isinstance(penghu, str) and jobs.get_job(engine, penghu).status == JobStatus.SUCCEEDED
    assert isinstance(kinmen, jobs.JobFailed) and "storage pool full" in kinmen.error
    assert jobs.get_job(engine, kinmen.job_id).status == JobStatus.FAILED
    assert progress["penghu"][-1] == JobStatus.SUCCEEDED and progress["kinmen"][-1] == JobStatus.FAILED
    assert job_count(engine) == 2


def _checked_builder(args: Mapping[str, Any], _context: Any) -> list[Step]:
    def check(ctx: StepContext) -> str:
        if int(args["vcpus"]) > 4:
            raise RuntimeError(f"{args['vcpus']} vCPUs asked, between 1 and 4 possible live")
        return "within the maximums"

    return [Step("check", check, "within the maximums"), Step("resize", lambda ctx: "resized", "resize")]


def test_a_job_that_failed_its_check_does_not_block_the_next_request(engine: Engine, tmp_path: Path) -> None:
    """Issue 14, item 9: a refused resize left a failed job that blocked every later resize."""
    with pytest.raises(jobs.JobFailed) as refused:
        jobs.start(engine, JobKind.RESIZE, "miaoli-vm", {"vcpus": 64}, _checked_builder,
                   artifacts_root=tmp_path)
    done = jobs.start(engine, JobKind.RESIZE, "miaoli-vm", {"vcpus": 2}, _checked_builder,
                      artifacts_root=tmp_path)
    assert done != refused.value.job_id
    assert jobs.get_job(engine, done).status is JobStatus.SUCCEEDED
    assert jobs.get_job(engine, refused.value.job_id).status is JobStatus.CANCELLED


def test_the_same_request_after_a_failed_check_is_a_new_job_checked_afresh(engine: Engine,
                                                                           tmp_path: Path) -> None:
    """A check that refused a request for its age (dr.failover.refuse_if_stale) must not refuse the
    same request asked for again: a new job, with its own time, not the refused one rewound."""
    refuse = tmp_path / "refuse"
    refuse.touch()

    def build(args: Mapping[str, Any], _context: Any) -> list[Step]:
        def check(ctx: StepContext) -> str:
            if refuse.exists():
                raise RuntimeError("asked for too long ago")
            return "fresh"
        return [Step("check", check, "fresh enough"), Step("work", lambda ctx: "done", "work")]

    with pytest.raises(jobs.JobFailed) as refused:
        jobs.start(engine, JobKind.RESIZE, "lienchiang-vm", {"vcpus": 2}, build, artifacts_root=tmp_path)
    refuse.unlink()
    again = jobs.start(engine, JobKind.RESIZE, "lienchiang-vm", {"vcpus": 2}, build, artifacts_root=tmp_path)
    assert again != refused.value.job_id
    assert jobs.get_job(engine, again).status is JobStatus.SUCCEEDED
    assert jobs.get_job(engine, refused.value.job_id).status is JobStatus.CANCELLED


def test_a_job_that_failed_after_its_check_still_blocks_other_args(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "broken").touch()
    with pytest.raises(jobs.JobFailed) as failure:
        jobs.start(engine, JobKind.RESIZE, "kinmen", {"vcpus": 2}, _failing_builder(tmp_path),
                   artifacts_root=tmp_path)
    with pytest.raises(jobs.JobConflict, match=failure.value.job_id):
        jobs.start(engine, JobKind.RESIZE, "kinmen", {"vcpus": 4}, _failing_builder(tmp_path),
                   artifacts_root=tmp_path)


def _wait_for(engine: Engine, job_id: str, status: JobStatus, timeout_s: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if jobs.get_job(engine, job_id, with_steps=False).status is status:
            return time.monotonic() - began
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not {status.value} after {timeout_s} s: "
                         f"{jobs.get_job(engine, job_id).to_json()}")


def test_a_submitted_job_runs_on_a_worker_and_a_dead_workers_job_is_taken_over(
    engine: Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`submit` returns at once; a worker process takes the job; killed -9 inside a step, its job is
    taken over by another live worker, which finishes it (each finished step once)."""
    monkeypatch.setattr(jobs, "_builders", dict(jobs._builders))
    from tests.unit.controlplane import fake_job

    jobs.register_builder(JobKind.PROVISION, fake_job.build)
    stop = threading.Event()
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.controlplane.fake_job", db_url, str(tmp_path), "worker"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline().startswith("worker")
        began = time.monotonic()
        args = {"workdir": str(tmp_path), "crash": True, "slow": False}
        job_id = jobs.submit(engine, JobKind.PROVISION, fake_job.TARGET, args, artifacts_root=tmp_path,
                             site="primary")
        assert time.monotonic() - began < 5, "submit returns at once"
        assert worker.wait(timeout=60) == -signal.SIGKILL  # step two killed the worker running the job
        assert ran(tmp_path) == ["one", "two"]
        died = time.monotonic()
        workers.run_workers(engine, stop, sites=["primary"])
        _wait_for(engine, job_id, JobStatus.SUCCEEDED, timeout_s=60)
        takeover_s = time.monotonic() - died
        assert takeover_s <= 30, f"taken over after {takeover_s:.1f} s"
        assert ran(tmp_path) == ["one", "two", "two", "three"]  # step one was not run again
    finally:
        stop.set()
        worker.kill()


def test_periodic_work_fires_on_a_worker_once_per_fire_time(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Backups and probes register periodic work; a worker runs each fire time once."""
    monkeypatch.setattr(workers, "_periodic", {})
    fired = tmp_path / "fired.log"
    lock = threading.Lock()

    def tick(at: datetime) -> None:
        with lock, fired.open("a") as log:
            log.write(at.isoformat() + "\n")

    workers.register_periodic("test-tick", "* * * * * *", tick)  # every second
    stop = threading.Event()
    try:
        workers.run_workers(engine, stop)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(fired.read_text().split() if fired.exists() else []) < 3:
            time.sleep(0.2)
    finally:
        stop.set()
        from dbos import DBOS

        DBOS.delete_schedule("test-tick")
    times = fired.read_text().split()
    assert len(times) >= 3, times
    assert len(set(times)) == len(times), "each fire time ran once"


def test_finished_periodic_fires_are_forgotten_after_a_day_and_jobs_are_kept(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dbos import DBOS

    monkeypatch.setattr(workers, "_periodic", {})
    monkeypatch.setattr(jobs, "_builders", dict(jobs._builders))
    from tests.unit.controlplane import fake_job

    jobs.register_builder(JobKind.PROVISION, fake_job.build)
    fired: list[datetime] = []
    workers.register_periodic("test-history", "* * * * * *", fired.append)
    stop = threading.Event()
    try:
        workers.run_workers(engine, stop)
        args = {"workdir": str(tmp_path), "crash": False, "slow": False}
        job_id = jobs.start(engine, JobKind.PROVISION, fake_job.TARGET, args, artifacts_root=tmp_path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(fired) < 3:
            time.sleep(0.2)
    finally:
        stop.set()
        DBOS.delete_schedule("test-history")
    assert len(fired) >= 3, fired
    time.sleep(1.5)  # the last fire finishes
    name = f"{workers.PERIODIC_PREFIX}test-history"
    finished = len(DBOS.list_workflows(name=name, status="SUCCESS"))
    assert finished >= 3
    now = datetime.now(UTC)
    assert workers.forget_periodic_history(now) == 0, "younger than a day: kept"
    assert workers.forget_periodic_history(now + timedelta(days=1, minutes=1)) >= finished
    assert DBOS.list_workflows(name=name, status="SUCCESS") == []
    assert DBOS.list_workflows(workflow_ids=[job_id]), "a job's record is the operators' history: kept"


def test_a_sites_queue_bounds_its_jobs_without_holding_back_the_other_site(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "_builders", dict(jobs._builders))
    monkeypatch.setattr(jobs, "SITE_CONCURRENCY", 1)
    spans: dict[str, tuple[float, float]] = {}

    def build(args: Mapping[str, Any], _context: Any) -> list[Step]:
        def work(ctx: StepContext) -> str:
            began = time.monotonic()
            time.sleep(1.5)
            spans[str(args["vm"])] = (began, time.monotonic())
            return "resized"

        return [Step("resize", work, "resize")]

    jobs.register_builder(JobKind.RESIZE, build)
    stop = threading.Event()
    try:
        workers.run_workers(engine, stop, sites=["primary", "secondary"])
        ids = [jobs.submit(engine, JobKind.RESIZE, vm, {"vm": vm}, artifacts_root=tmp_path, site=site)
               for vm, site in (("p-1", "primary"), ("p-2", "primary"), ("s-1", "secondary"))]
        for job_id in ids:
            _wait_for(engine, job_id, JobStatus.SUCCEEDED, timeout_s=60)
    finally:
        stop.set()
    (a_start, a_end), (b_start, _b_end) = sorted([spans["p-1"], spans["p-2"]])
    assert b_start >= a_end, "two jobs ran at once at a site limited to one"
    s_start, s_end = spans["s-1"]
    assert s_start < a_end and a_start < s_end, "the secondary's job waited for the primary's"
