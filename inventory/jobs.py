"""Jobs as plain data: a job is an ordered list of named, idempotent steps, recorded in the platform DB.

This module is the lowest layer of the job system so that every package (provisioning, backup, dr)
can build step lists without importing the control plane. It only describes steps and the rows
that record them; running them durably is controlplane.jobs's work.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from sqlalchemy import JSON, DateTime, Enum, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from inventory.db import Base


class JobKind(enum.StrEnum):
    PROVISION = "provision"
    RESIZE = "resize"
    RETIRE = "retire"
    TEMPLATE_BUILD = "template_build"
    CONFIGURE = "configure"
    BACKUP = "backup"
    RESTORE = "restore"
    FAILOVER = "failover"
    FAILBACK = "failback"
    DR_TEST = "dr_test"


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Abandoned by an operator: frees the kind+target for a new job (a failed job otherwise blocks it).
    CANCELLED = "cancelled"


# A job in one of these states is over; any other state is resumed by rerunning the same command.
FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.CANCELLED})


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class StepResult(BaseModel):
    """What a step hands to the steps after it: typed data, recorded with the job (as JSON) so that a
    resumed job gives later steps the same values without running the step again."""

    model_config = ConfigDict(frozen=True)

    def summary(self) -> str:
        """One line for the job's record (what `job show` and the console print)."""
        return ", ".join(f"{key} {value}" for key, value in self.model_dump(mode="json").items())


ResultT = TypeVar("ResultT", bound=StepResult)


@dataclass
class StepContext:
    """What a running step may know and do: its job, the job's args, a log, and a folder of its own."""

    job_id: str
    args: Mapping[str, Any]
    artifacts: Path
    # What the steps before this one returned, by step name (replayed from the checkpoint after a
    # crash): a StepResult's JSON form, or the text a step returned.
    previous: Mapping[str, Any] = field(default_factory=dict)
    _log: Callable[[str], None] = field(default=lambda _line: None, repr=False)

    def log(self, text: str) -> None:
        """Append output lines to this step's record (visible in `job show` while the step runs)."""
        self._log(text)

    def result(self, step: str, kind: type[ResultT]) -> ResultT:
        """The typed result of an earlier step of this job."""
        raw = self.previous.get(step)
        if not isinstance(raw, dict):
            raise LookupError(f"job {self.job_id}: step {step!r} has no recorded {kind.__name__}")
        return kind.model_validate(raw)

    def result_or_none(self, step: str, kind: type[ResultT]) -> ResultT | None:
        return self.result(step, kind) if isinstance(self.previous.get(step), dict) else None


@dataclass(frozen=True)
class Step:
    """A named, idempotent unit of a job: running it twice must leave the same state as running it once,
    because a step interrupted by a crash is run again on resume."""

    name: str
    run: Callable[[StepContext], str | StepResult | None]
    description: str = ""


# A builder turns a job's recorded args into its steps, so a job can be rebuilt in a new process.
# `context` is whatever the control plane wires in (edges, settings); lower packages treat it as opaque.
StepsBuilder = Callable[[Mapping[str, Any], Any], list[Step]]


def _enum(kind: type[enum.StrEnum]) -> Enum:
    # Stored as plain strings (no native enum, no CHECK) so that adding a member needs no migration.
    return Enum(kind, native_enum=False, create_constraint=False, length=32,
                values_callable=lambda members: [m.value for m in members])


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind))
    target: Mapped[str] = mapped_column(String(120))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.PENDING)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    # host:pid of the process executing the job, so a resume can refuse to race a live runner.
    runner: Mapped[str | None] = mapped_column(String(120))
    # The job's own folder (step artifacts such as ansible-runner run folders), kept after the job.
    artifacts_dir: Mapped[str] = mapped_column(String(500), default="")

    steps: Mapped[list[JobStep]] = relationship(
        back_populates="job", order_by="JobStep.index", cascade="all, delete-orphan"
    )

    __table_args__ = (
        # At most one unfinished job per kind and target: a rerun of the same command resumes it.
        Index(
            "uq_jobs_unfinished_kind_target", "kind", "target", unique=True,
            sqlite_where=text("status NOT IN ('succeeded', 'cancelled')"),
            postgresql_where=text("status NOT IN ('succeeded', 'cancelled')"),
        ),
        Index("ix_jobs_created_at", "created_at"),
    )


class JobStep(Base):
    __tablename__ = "job_steps"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[StepStatus] = mapped_column(_enum(StepStatus), default=StepStatus.PENDING)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float | None] = mapped_column(Float)
    output: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    # How many times the step began: 2 after a crash inside it, 1 for a step that a resume skipped.
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    job: Mapped[Job] = relationship(back_populates="steps")


class Worker(Base):
    """A process that runs jobs (a `countycloud serve`), with its heartbeat: a worker whose heartbeat
    stops is dead, and a live worker takes over its unfinished jobs."""

    __tablename__ = "workers"

    executor_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
