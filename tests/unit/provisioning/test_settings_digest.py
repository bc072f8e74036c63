"""Skipping a converge whose settings the guest already serves with: the digest the guest's launcher
records (provisioning/image/files/launcher.py) against the declared one (vmplan.settings_digest), the
decision in provisioning.configure, and reading the record through a fake guest agent; the
launcher's first-boot settings file (an empty one left by a crash is replaced)."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from provisioning import configure, seed, vmplan
from provisioning.hypervisor import AgentTimeout, Hypervisor
from provisioning.vmplan import VmPlan, app_env
from tests.unit.provisioning.test_guest_agent import FakeHypervisor, FileAgent

PLAN = VmPlan(
    name="keelung-accounting-1", uuid="c7a5fdbd-cdaf-4455-926a-d65c16db1809", tenant="keelung",
    county_name="基隆市", site="primary", vcpus=1, memory_mib=1024, data_disk_mib=256,
    ssh_port=42001, app_port=42002, app_secret="s3cret", settings={"county_name": "基隆市"},
)
OTHER = dataclasses.replace(PLAN, name="keelung-accounting-2", uuid="0b6f3c1e-6d7a-4c35-9a1e-7f1f0e2d9c11",
                            ssh_port=42003, app_port=42004)
LAUNCHER = Path(configure.__file__).resolve().parent / "image" / "files" / "launcher.py"


@pytest.fixture(scope="module")
def launcher() -> ModuleType:
    """The guest's launcher as a module (it imports the app and uvicorn, as in the guest; nothing runs)."""
    spec = importlib.util.spec_from_file_location("countycloud_guest_launcher", LAUNCHER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_guest_records_the_digest_the_host_declares(launcher: ModuleType) -> None:
    written = seed.render_env(app_env(PLAN))  # what the seed disk and Ansible write to the guest
    assert launcher.settings_digest(written) == vmplan.settings_digest(PLAN)
    # A copy that lost its last newline (a templating engine's habit) is the same settings.
    assert launcher.settings_digest(written.rstrip("\n")) == vmplan.settings_digest(PLAN)
    changed = dataclasses.replace(PLAN, settings={"county_name": "基隆市政府"})
    assert launcher.settings_digest(written) != vmplan.settings_digest(changed)


def test_the_launcher_writes_the_record_where_the_host_reads_it(launcher: ModuleType, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    settings = tmp_path / "tenant-app.env"
    settings.write_text(seed.render_env(app_env(PLAN)), encoding="utf-8")
    record = tmp_path / "settings-digest"
    monkeypatch.setattr(launcher, "SETTINGS", str(settings))
    monkeypatch.setattr(launcher, "SETTINGS_DIGEST", str(record))
    launcher.record_settings_digest()
    assert record.read_text() == vmplan.settings_digest(PLAN) + "\n"
    assert Path(launcher.SETTINGS_DIGEST).name == Path(configure.GUEST_SETTINGS_DIGEST).name
    assert configure.GUEST_SETTINGS_DIGEST == "/run/countycloud/settings-digest"
    assert launcher.RUN + "/settings-digest" == configure.GUEST_SETTINGS_DIGEST


def test_only_vms_whose_guest_differs_or_cannot_say_are_unconverged() -> None:
    changed = dataclasses.replace(OTHER, settings={"county_name": "基隆市政府"})
    digests = {PLAN.name: vmplan.settings_digest(PLAN), OTHER.name: vmplan.settings_digest(OTHER)}
    assert configure.unconverged([PLAN, OTHER], digests) == []
    assert configure.unconverged([PLAN, changed], digests) == [changed]
    assert configure.unconverged([PLAN, OTHER], {PLAN.name: vmplan.settings_digest(PLAN)}) == [OTHER]
    assert configure.unconverged([PLAN], {PLAN.name: None}) == [PLAN]


def test_a_matching_guest_is_skipped_without_running_ansible() -> None:
    ran: list[Sequence[VmPlan]] = []

    def run(stale: Sequence[VmPlan]) -> str:
        ran.append(stale)
        return f"converged {len(stale)} VM(s)"

    digests = {PLAN.name: vmplan.settings_digest(PLAN), OTHER.name: vmplan.settings_digest(OTHER)}
    said = configure.converge_stale([PLAN, OTHER], digests, run)
    assert said.startswith("skipped: settings digest matches for 2 VM(s)")
    assert ran == []


def test_a_changed_setting_still_converges_and_only_that_vm() -> None:
    ran: list[Sequence[VmPlan]] = []

    def run(stale: Sequence[VmPlan]) -> str:
        ran.append(stale)
        return f"converged {len(stale)} VM(s)"

    changed = dataclasses.replace(PLAN, settings={"county_name": "基隆市政府"})
    digests = {PLAN.name: vmplan.settings_digest(PLAN), OTHER.name: vmplan.settings_digest(OTHER)}
    said = configure.converge_stale([changed, OTHER], digests, run)
    assert ran == [[changed]]
    assert said.startswith("converged 1 VM(s); skipped: settings digest matches for 1 VM(s)")


def test_the_record_is_read_through_the_agent_and_missing_or_silent_means_unknown() -> None:
    recorded = {configure.GUEST_SETTINGS_DIGEST: (vmplan.settings_digest(PLAN) + "\n").encode()}
    assert configure.guest_settings_digest(FileAgent(recorded), PLAN.name) == vmplan.settings_digest(PLAN)
    assert configure.guest_settings_digest(FileAgent({}), PLAN.name) is None  # an image without it

    class Silent(FakeHypervisor):
        def agent(self, name: str, command: str, arguments: dict[str, Any] | None = None,
                  timeout_s: int = 10) -> Any:
            raise AgentTimeout(f"guest agent of {name} did not answer {command}")

    assert configure.guest_settings_digest(Silent([]), PLAN.name) is None


def test_guest_digests_asks_each_vms_own_site() -> None:
    asked: list[str] = []
    agent = FileAgent({configure.GUEST_SETTINGS_DIGEST: b"0123456789abcdef\n"})

    @contextmanager
    def hypervisor(site: str) -> Iterator[Hypervisor]:
        asked.append(site)
        yield agent

    elsewhere = dataclasses.replace(OTHER, site="secondary")
    digests = configure.guest_digests([PLAN, elsewhere], hypervisor)
    assert digests == {PLAN.name: "0123456789abcdef", elsewhere.name: "0123456789abcdef"}
    assert asked == ["primary", "secondary"]


def _guest(*, served: VmPlan = PLAN, on_disk: str | None = None,
           hostname: str = PLAN.name + "\n") -> FileAgent:
    files = {configure.GUEST_SETTINGS_DIGEST: (vmplan.settings_digest(served) + "\n").encode(),
             "/etc/hostname": hostname.encode()}
    written = seed.render_env(app_env(served)) if on_disk is None else on_disk
    files[configure.GUEST_SETTINGS_FILE] = written.encode()
    return FileAgent(files)


def test_tenant_configure_skips_a_guest_only_when_nothing_would_change() -> None:
    assert configure.env_text_digest(seed.render_env(app_env(PLAN))) == vmplan.settings_digest(PLAN)
    assert configure.in_sync(_guest(), PLAN)
    # Serving older settings; the file edited in the guest (served at its next restart); another
    # hostname; the settings file gone: each is converged.
    changed = dataclasses.replace(PLAN, settings={"county_name": "基隆市政府"})
    assert not configure.in_sync(_guest(), changed)
    edited = seed.render_env(app_env(PLAN)).replace("基隆市", "某縣")
    assert not configure.in_sync(_guest(on_disk=edited), PLAN)
    assert not configure.in_sync(_guest(hostname="localhost\n"), PLAN)
    gone = _guest()
    del gone.files[configure.GUEST_SETTINGS_FILE]
    assert not configure.in_sync(gone, PLAN)


def test_out_of_sync_asks_each_vms_site_and_names_only_the_stale() -> None:
    changed = dataclasses.replace(OTHER, site="secondary", settings={"county_name": "基隆市政府"})
    guests = {"primary": _guest(), "secondary": _guest(served=OTHER)}
    asked: list[str] = []

    @contextmanager
    def hypervisor(site: str) -> Iterator[Hypervisor]:
        asked.append(site)
        yield guests[site]

    assert configure.out_of_sync([PLAN, changed], hypervisor) == [changed]
    assert asked == ["primary", "secondary"]


def test_an_empty_settings_file_counts_as_missing_and_install_puts_the_seed_in_place(
        launcher: ModuleType, tmp_path: Path) -> None:
    # A VM killed seconds after its first activation came back with an empty settings file, and its
    # app crash-looped (no database URL); the launcher now treats that file as a first boot's.
    settings, seeded = tmp_path / "tenant-app.env", tmp_path / "seed.env"
    seeded.write_text("TENANT_APP_DATABASE_URL=sqlite:////srv/tenant-data/tenant.db\n")
    assert launcher.settings_missing(str(settings))
    settings.write_text("")
    assert launcher.settings_missing(str(settings))
    launcher.install(str(seeded), str(settings), 0o600)
    assert settings.read_text() == seeded.read_text()
    assert settings.stat().st_mode & 0o777 == 0o600 and not (tmp_path / "tenant-app.env.new").exists()
    assert not launcher.settings_missing(str(settings))


def test_the_clock_is_taken_from_an_activation_request_once(launcher: ModuleType, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The request stays in /run for the whole boot: a launcher started again later (a converge
    # restarting the app) must not set the clock back to the activation's time.
    request = tmp_path / "activate-request"
    monkeypatch.setattr(launcher, "ACTIVATE_REQUEST", str(request))
    set_to: list[tuple[int, float]] = []
    monkeypatch.setattr(launcher.time, "clock_settime", lambda clock, value: set_to.append((clock, value)))
    request.write_text("1764300000.25")  # not complete yet (no newline): looked at again later
    assert launcher.set_clock() is False and set_to == []
    request.write_text("1764300000.25\n")
    assert launcher.set_clock() is True
    assert set_to == [(launcher.time.CLOCK_REALTIME, 1764300000.25)]
    assert launcher.set_clock() is False and len(set_to) == 1  # the same boot, the launcher again
