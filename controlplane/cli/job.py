"""`countycloud job list | show ID | resume ID | cancel ID`, and the Rich progress every job command shows.

Exit codes scripts can trust: 0 the job is fine (or done), 1 the job failed, 2 unknown job id or a
request the runner refused (e.g. the job is being run by another live process).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from controlplane import jobs
from inventory.db import as_utc
from inventory.jobs import JobStatus, StepStatus

EXIT_OK, EXIT_FAILED, EXIT_UNKNOWN = 0, 1, 2
OUTPUT_TAIL_LINES = 8

job_app = typer.Typer(no_args_is_help=True, help="Durable jobs: list, show, resume, cancel.")
console = Console()
errors = Console(stderr=True, soft_wrap=True)  # one message per line, greppable by scripts

STATUS_STYLE = {
    JobStatus.PENDING: "dim", JobStatus.RUNNING: "cyan", JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "bold red", JobStatus.CANCELLED: "yellow",
    StepStatus.SKIPPED: "dim",
}


def register(app: typer.Typer) -> None:
    app.add_typer(job_app, name="job")


def _engine() -> Engine:
    from controlplane import bootstrap

    return bootstrap.engine()


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}s"


# ---------------------------------------------------------------- progress

NOTE_CHARS = 60


def _note(step: jobs.StepView) -> str:
    """What a step is doing or did, in one short line: its error, else its latest output line."""
    text = step.error or next((line for line in reversed(step.output.splitlines()) if line.strip()), "")
    text = text.strip()
    return escape(text if len(text) <= NOTE_CHARS else text[: NOTE_CHARS - 1] + "…")


class _StepTimeColumn(ProgressColumn):
    """Elapsed time of a running step (live), or the recorded duration of a finished one."""

    def render(self, task: Task) -> Text:
        recorded = task.fields.get("duration")
        if recorded is not None:
            return Text(_seconds(recorded), style="progress.elapsed")
        if task.started and task.elapsed is not None:
            return Text(_seconds(task.elapsed), style="progress.elapsed")
        return Text("")


@contextmanager
def job_progress(out: Console | None = None) -> Iterator[jobs.ProgressCallback]:
    """A progress callback for jobs.start/resume: one line per step with spinner, status, elapsed."""
    with Progress(
        SpinnerColumn(finished_text="•"),
        TextColumn("{task.description}"),
        TextColumn("{task.fields[status]}"),
        _StepTimeColumn(),
        TextColumn("{task.fields[note]}", style="dim"),
        console=out or console,
        transient=False,
    ) as progress:
        tasks: dict[int, TaskID] = {}

        def update(view: jobs.JobView) -> None:
            for step in view.steps:
                if step.index not in tasks:
                    tasks[step.index] = progress.add_task(escape(step.name), total=1, start=False, status="",
                                                          duration=None, note="")
                task = tasks[step.index]
                progress.update(task, note=_note(step))
                style = STATUS_STYLE.get(step.status, "")
                status = f"[{style}]{step.status.value}[/]" if style else step.status.value
                if step.status == StepStatus.RUNNING:
                    progress.start_task(task)
                    progress.update(task, status=status, duration=None)
                elif step.status in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED):
                    # Rich counts a task finished only once it has started (a fast step may never
                    # have been seen running between two polls).
                    progress.start_task(task)
                    progress.update(task, status=status, duration=step.duration_s, completed=1)
                    progress.stop_task(task)
                else:
                    progress.update(task, status=status)

        yield update


# ---------------------------------------------------------------- commands


def _show_failure(error: jobs.JobError) -> int:
    if isinstance(error, jobs.JobInterrupted):
        errors.print(f"[yellow]{escape(str(error))}[/]")
        return jobs.EXIT_INTERRUPTED
    if isinstance(error, jobs.JobFailed):
        errors.print(f"[bold red]job {error.job_id} failed[/]: {escape(error.error)}")
        errors.print(f"see: countycloud job show {error.job_id}")
        return EXIT_FAILED
    errors.print(f"[red]{escape(str(error))}[/]")
    return EXIT_UNKNOWN


@contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except (OperationalError, ProgrammingError) as error:
        reason = escape(str(error.orig))
        errors.print(f"[red]the platform database is not ready ({reason}); run `countycloud demo` or "
                     "`countycloud inventory apply FILE` first[/]")
        raise typer.Exit(EXIT_UNKNOWN) from None


@job_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    limit: Annotated[int, typer.Option(help="Newest N jobs.")] = 50,
    target: Annotated[str | None, typer.Option(help="Only jobs for this target (e.g. a county).")] = None,
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this state.")] = None,
) -> None:
    """List jobs, newest first."""
    with _database_errors():
        views = jobs.list_jobs(_engine(), limit=limit, target=target, status=status)
    if as_json:
        print(json.dumps([v.to_json() for v in views], ensure_ascii=False, indent=2))
        return
    # The id says kind and target already (provision-keelung-3fa2c1), and it is what the user copies
    # into `job show`: it is never cut short.
    table = Table()
    table.add_column("id", no_wrap=True, min_width=max((len(v.id) for v in views), default=2))
    for title in ("status", "steps", "created", "duration"):
        table.add_column(title)
    for v in views:
        done = sum(1 for s in v.steps if s.status == StepStatus.SUCCEEDED)
        style = STATUS_STYLE.get(v.status, "")
        table.add_row(escape(v.id), f"[{style}]{v.status.value}[/]", f"{done}/{len(v.steps)}",
                      _when(v.created_at), _seconds(v.duration_s))
    console.print(table)


@job_app.command("show")
def show_command(
    job_id: Annotated[str, typer.Argument(help="The job id (from `job list`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """One job: its steps with status, duration, output tail and error."""
    try:
        with _database_errors():
            view = jobs.get_job(_engine(), job_id)
    except jobs.JobNotFound as error:
        raise typer.Exit(_show_failure(error)) from None
    if as_json:
        print(json.dumps(view.to_json(), ensure_ascii=False, indent=2))
    else:
        _print_job(view)
    raise typer.Exit(EXIT_FAILED if view.status == JobStatus.FAILED else EXIT_OK)


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S")


def _print_job(view: jobs.JobView) -> None:
    style = STATUS_STYLE.get(view.status, "")
    console.print(f"[bold]{view.id}[/]  {view.kind.value} {escape(view.target)}  "
                  f"[{style}]{view.status.value}[/]  {_seconds(view.duration_s)}")
    args = escape(json.dumps(view.args, ensure_ascii=False))
    console.print(f"args: {args}   artifacts: {escape(view.artifacts_dir)}", highlight=False)
    if view.error:
        console.print(f"[red]error: {escape(view.error)}[/]")
    table = Table("#", "step", "status", "tries", "duration", "output (tail) / error")
    for step in view.steps:
        tail = "\n".join(step.output.rstrip().splitlines()[-OUTPUT_TAIL_LINES:])
        # Output and errors are the outside world's text: brackets in them are not Rich markup.
        detail = f"{escape(tail)}\n[red]{escape(step.error)}[/]" if step.error else escape(tail)
        step_style = STATUS_STYLE.get(step.status, "")
        table.add_row(str(step.index + 1), escape(step.name), f"[{step_style}]{step.status.value}[/]",
                      str(step.attempts), _seconds(step.duration_s), detail.strip())
    console.print(table)


def _load_builders() -> None:
    """Make every job kind rebuildable in this process: the wiring module registers the builders.

    The bootstrap (owned by the control plane's wiring) registers them when imported or through
    `register_job_builders()`; without it only builders registered by imported modules exist.
    """
    import importlib

    try:
        bootstrap = importlib.import_module("controlplane.bootstrap")
    except ModuleNotFoundError as error:
        if error.name != "controlplane.bootstrap":
            raise
        return
    hook = getattr(bootstrap, "register_job_builders", None)
    if callable(hook):
        hook()


@job_app.command("resume")
def resume_command(job_id: Annotated[str, typer.Argument(help="The job id (from `job list`).")]) -> None:
    """Continue a crashed or failed job from the step where it stopped."""
    engine = _engine()
    _load_builders()
    try:
        with _database_errors(), job_progress() as on_progress:
            jobs.resume(engine, job_id, on_progress=on_progress)
    except jobs.JobError as error:
        raise typer.Exit(_show_failure(error)) from None
    finally:
        jobs.shutdown()
    console.print(f"[green]job {job_id} succeeded[/]")


@job_app.command("cancel")
def cancel_command(job_id: Annotated[str, typer.Argument(help="The job id (from `job list`).")]) -> None:
    """Abandon an unfinished job so that a new one for the same target may start."""
    try:
        with _database_errors():
            jobs.cancel(_engine(), job_id)
    except jobs.JobError as error:
        raise typer.Exit(_show_failure(error)) from None
    finally:
        jobs.shutdown()
    console.print(f"job {job_id} cancelled")
