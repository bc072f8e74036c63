"""`countycloud demo` takes the demo county's first backup (snapshot and offsite copy: one BACKUP job)
right after seeding it and before the service starts, so restore points are at both sites at once,
not at the schedule's first place for it. The VMs, the seeding and the service are stood in for."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from controlplane import bootstrap, operations
from controlplane.cli import demo
from controlplane.operations import JobRequest
from inventory.jobs import JobKind


@pytest.fixture
def calls(state: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    made: list[str] = []
    monkeypatch.setattr(bootstrap, "setup", lambda **_: made.append("setup"))

    def request_create(actor: object, county: str, cold: bool = False) -> str:
        return county

    def run_job(request: JobRequest | str, quiet: bool = False) -> str:
        if isinstance(request, JobRequest):
            assert request.kind is JobKind.BACKUP and quiet
            assert request.args["tenant"] == request.target and request.site == "primary"
            made.append(f"backup {request.target}")
            return "backup-keelung-1"
        made.append(f"create {request}")
        return f"provision-{request}"

    monkeypatch.setattr(operations, "request_create", request_create)
    monkeypatch.setattr(demo, "run_job", run_job)
    monkeypatch.setattr(demo, "create_many", lambda requests: made.append(f"create {' '.join(requests)}"))
    monkeypatch.setattr(demo, "_seed_demo_data", lambda county: made.append(f"seed {county}"))
    monkeypatch.setattr(demo, "show_command", lambda county: made.append(f"show {county}"))

    def start_service() -> tuple[str, str]:
        made.append("service")
        return "http://127.0.0.1:8600/", "pw"

    monkeypatch.setattr(demo, "_start_service", start_service)
    return made


def test_the_first_backup_follows_the_seed_and_precedes_the_service(calls: list[str]) -> None:
    demo.demo_command(counties=1, cold=False)
    assert calls == ["setup", "create keelung", "seed keelung", "backup keelung", "show keelung", "service"]


def test_only_the_demo_county_is_backed_up_at_once(calls: list[str]) -> None:
    demo.demo_command(counties=3, cold=False)
    created = calls[1]
    assert created.startswith("create keelung ") and len(created.split()) == 4
    seeds = [call for call in calls if call.startswith("seed")]
    assert calls.index("backup keelung") == calls.index("seed keelung") + 1  # the others: the schedule's
    assert [call for call in calls if call.startswith("backup")] == ["backup keelung"]
    assert calls.index("service") > max(calls.index(seed) for seed in seeds)


def test_a_failed_first_backup_leaves_the_demo_going(calls: list[str], monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    created = demo.run_job

    def failing(request: JobRequest | str, quiet: bool = False) -> str:
        if isinstance(request, JobRequest):
            raise typer.Exit(1)  # run_job's way of saying a job failed
        return created(request, quiet)

    monkeypatch.setattr(demo, "run_job", failing)
    demo.demo_command(counties=1, cold=False)
    assert calls[-1] == "service"
    assert "no first backup yet (rerun: countycloud backup now keelung)" in capsys.readouterr().err
