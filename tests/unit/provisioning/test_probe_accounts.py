"""provisioning.probe_accounts: the probe account made in the county through the guest agent (the
real `python -m tenant_app probe-account` output parsed), kept 0600 by the platform; the provision
step that makes it is not fatal for the county."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inventory.jobs import StepContext
from provisioning import probe_accounts, steps
from provisioning.errors import ProvisioningError
from provisioning.platform import Platform
from provisioning.spec import DomainType
from tests.unit.provisioning.test_steps_lists import demo_db, engine  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[3]
SECRET = "probe-account-test-secret-0123456789"


def tenant_app(database: Path, *argv: str) -> str:
    env = {**os.environ, "TENANT_APP_DATABASE_URL": f"sqlite:///{database}", "TENANT_APP_SECRET": SECRET}
    env.pop("TENANT_APP_SETTINGS_FILE", None)
    done = subprocess.run([sys.executable, "-m", "tenant_app", *argv], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the guest's `tenant-app probe-account` prints, from the real app on a seeded county."""
    database = tmp_path_factory.mktemp("county") / "tenant.db"
    tenant_app(database, "seed")
    return tenant_app(database, "probe-account")


class FakeAgent:
    """The hypervisor's guest-agent calls, answering guest-exec with `output` and `rc`."""

    def __init__(self, output: str, rc: int = 0) -> None:
        self.output, self.rc = output, rc
        self.commands: list[list[str]] = []

    def agent(self, vm: str, command: str, args: dict[str, Any]) -> dict[str, Any]:
        if command == "guest-exec":
            self.commands.append([args["path"], *args["arg"]])
            return {"pid": 7}
        return {"exited": True, "exitcode": self.rc,
                "out-data": base64.b64encode(self.output.encode()).decode(), "err-data": ""}

    def __enter__(self) -> FakeAgent:
        return self

    def __exit__(self, *_: object) -> None:
        return None


def test_the_real_command_output_is_kept_readable_by_the_platform_only(printed: str, tmp_path: Path) -> None:
    hv = FakeAgent("some chatter\n" + printed)
    said = probe_accounts.ensure_in_guest(hv, "keelung-accounting-1", tmp_path, "keelung")  # type: ignore[arg-type]
    assert hv.commands == [probe_accounts.GUEST_COMMAND]
    kept = probe_accounts.load(tmp_path, "keelung")
    assert kept is not None and kept.username == "cc-probe" and kept.password and kept.api_token
    assert kept.budget_line_id > 0 and "cc-probe" in said
    mode = stat.S_IMODE(probe_accounts.path_of(tmp_path, "keelung").stat().st_mode)
    assert mode == 0o600
    probe_accounts.forget(tmp_path, "keelung")
    assert probe_accounts.load(tmp_path, "keelung") is None


def test_output_without_an_account_is_an_error() -> None:
    with pytest.raises(ProvisioningError, match="printed no account"):
        probe_accounts.parse("LookupError: the county has no fiscal year yet\n")


class AgentPlatform(Platform):
    agent: FakeAgent

    def hypervisor(self, site: str) -> Any:
        return self.agent


def test_the_configure_step_uses_the_serving_vm_and_a_failure_does_not_fail_the_county(
        engine: Any, tmp_path: Path, printed: str) -> None:  # noqa: F811
    platform = AgentPlatform(engine=engine, state_dir=tmp_path, cache_dir=tmp_path,
                             domain_type=DomainType.QEMU)
    context = StepContext(job_id="j", args={}, artifacts=tmp_path, previous={})
    assert "probe-account" not in [s.name for s in steps.provision_steps({"tenant": "keelung"}, platform)]
    [step] = [s for s in steps.configure_steps({"tenant": "keelung"}, platform) if s.name == "probe-account"]

    platform.agent = FakeAgent("LookupError: the county has no fiscal year yet", rc=1)
    said = step.run(context)
    assert isinstance(said, str) and said.startswith("no probe account")
    assert probe_accounts.load(tmp_path, "keelung") is None

    platform.agent = FakeAgent(printed)
    assert "kept for keelung" in str(step.run(context))
    assert probe_accounts.load(tmp_path, "keelung") is not None
    # made only when missing
    platform.agent = FakeAgent("never asked", rc=1)
    assert step.run(context) == "probe account already kept"
