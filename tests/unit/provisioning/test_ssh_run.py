"""`configure.ssh_run` (tenant exec, the demo's seeding): a command that outlives its time is a failed
result carrying what it printed, not an exception through the CLI (make demo ended in a traceback when
seeding a busy TCG guest took over 120 s)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fabric
import pytest
from invoke.exceptions import CommandTimedOut
from invoke.runners import Result

from provisioning import configure


class _Connection:
    """fabric.Connection as ssh_run uses it; `outcome` is what run() does."""

    outcome: Any = None

    def __init__(self, **_kwargs: Any) -> None:
        self.client = SimpleNamespace(set_missing_host_key_policy=lambda _policy: None)

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def run(self, command: str, **kwargs: Any) -> Result:
        if isinstance(_Connection.outcome, BaseException):
            raise _Connection.outcome
        return Result(stdout=f"ran {command}", stderr="", exited=0, command=command)


def _plan() -> Any:
    return SimpleNamespace(ssh_port=2222)


def test_a_command_that_outlives_its_time_is_a_failed_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fabric, "Connection", _Connection)
    partial = Result(stdout="seeding agencies\n", stderr="", exited=-1, command="tenant-app seed")
    monkeypatch.setattr(_Connection, "outcome", CommandTimedOut(partial, timeout=5))
    result = configure.ssh_run(_plan(), Path("/nonexistent"), "tenant-app seed", timeout_s=5)
    assert not result.ok and result.rc == configure.TIMED_OUT_RC
    assert result.stdout == "seeding agencies\n" and "timed out after 5 s" in result.stderr


def test_a_command_that_finishes_is_its_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fabric, "Connection", _Connection)
    monkeypatch.setattr(_Connection, "outcome", None)
    result = configure.ssh_run(_plan(), Path("/nonexistent"), "uptime")
    assert result.ok and result.stdout == "ran uptime"
