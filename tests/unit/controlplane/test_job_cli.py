"""`countycloud job ...`: JSON output, exit codes (0 ok, 1 failed, 2 unknown), resume after a fix."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from rich.console import Console
from sqlalchemy import Engine
from typer.testing import CliRunner

from controlplane import jobs
from controlplane.cli import job as job_cli
from inventory.db import make_engine, migrate
from inventory.jobs import JobKind
from tests.unit.controlplane import fake_job


@pytest.fixture
def engine(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    migrate(sqlite_url)
    monkeypatch.setenv("COUNTYCLOUD_DATABASE_URL", sqlite_url)
    # The real wiring would register the platform's provision builder over the fake one, and so may
    # any test run before this one in the same process (xdist): the fake is put back for each test.
    monkeypatch.setattr(job_cli, "_load_builders", lambda: None)
    monkeypatch.setitem(jobs._builders, JobKind.PROVISION, fake_job.build)
    engine = make_engine(sqlite_url)
    yield engine
    jobs.shutdown()
    engine.dispose()


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("noop")(lambda: None)  # a second command keeps `job` a sub-group, as in the real CLI
    job_cli.register(app)
    return app


def invoke(cli: typer.Typer, *argv: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(argv))
    return result.exit_code, result.stdout, result.stderr


def test_failed_job_shows_exit_1_then_resume_after_fix_exits_0(
    engine: Engine, cli: typer.Typer, tmp_path: Path
) -> None:
    (tmp_path / "broken").touch()
    with pytest.raises(jobs.JobFailed) as failure:
        jobs.start(engine, JobKind.PROVISION, fake_job.TARGET, {"workdir": str(tmp_path)},
                   artifacts_root=tmp_path / "art")
    job_id = failure.value.job_id

    code, out, _ = invoke(cli, "job", "show", job_id, "--json")
    assert code == 1
    shown = json.loads(out)
    assert shown["status"] == "failed"
    assert [s["status"] for s in shown["steps"]] == ["succeeded", "failed", "pending"]
    # Brackets in a step's error are text, not Rich markup (which would crash or swallow them).
    assert shown["steps"][1]["error"] == "RuntimeError: libvirtd unreachable [/usr/sbin/libvirtd]"

    code, out, _ = invoke(cli, "job", "show", job_id)
    assert code == 1 and "[/usr/sbin/libvirtd]" in out

    code, _, err = invoke(cli, "job", "resume", job_id)
    assert code == 1 and "libvirtd unreachable [/usr/sbin/libvirtd]" in err and "Traceback" not in err

    (tmp_path / "broken").unlink()
    code, out, _ = invoke(cli, "job", "resume", job_id)
    assert code == 0, out
    assert "succeeded" in out and "three" in out

    code, out, _ = invoke(cli, "job", "list", "--json")
    assert code == 0
    [listed] = json.loads(out)
    assert listed["id"] == job_id and listed["status"] == "succeeded"
    code, out, _ = invoke(cli, "job", "list", "--json", "--status", "failed")
    assert (code, json.loads(out)) == (0, [])


def test_unknown_job_id_exits_2_with_a_message(engine: Engine, cli: typer.Typer) -> None:
    for command in ("show", "resume", "cancel"):
        code, out, err = invoke(cli, "job", command, "provision-nowhere-123456")
        assert code == 2, (command, out, err)
        assert "no job with id 'provision-nowhere-123456'" in err
        assert "Traceback" not in out + err


def test_list_on_a_fresh_database_migrates_it_and_lists_nothing(cli: typer.Typer, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTYCLOUD_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    code, out, _ = invoke(cli, "job", "list", "--json")
    assert code == 0 and out.strip() == "[]"


def test_list_with_the_database_unreachable_says_so(cli: typer.Typer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on port 9 of 127.0.0.1: the connection is refused at once.
    monkeypatch.setenv("COUNTYCLOUD_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:9/none")
    code, _, err = invoke(cli, "job", "list")
    assert code == 2 and "not ready" in err


def test_progress_shows_each_step_with_its_state_time_and_latest_line(engine: Engine, tmp_path: Path) -> None:
    buffer = io.StringIO()
    out = Console(file=buffer, width=120, force_terminal=False)
    (tmp_path / "broken").touch()
    with pytest.raises(jobs.JobFailed), job_cli.job_progress(out) as on_progress:
        jobs.start(engine, JobKind.PROVISION, fake_job.TARGET, {"workdir": str(tmp_path)},
                   artifacts_root=tmp_path / "art", on_progress=on_progress)
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    final = lines[-3:]  # the last refresh: one line per step
    assert final[0].startswith("•")  # a finished step loses its spinner
    assert "one" in final[0] and "succeeded" in final[0] and "made disk" in final[0]
    assert "two" in final[1] and "failed" in final[1] and "RuntimeError: libvirtd unreachable" in final[1]
    assert "three" in final[2] and "pending" in final[2]
