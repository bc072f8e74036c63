"""provisioning.configure: the Ansible inventory (pure), and playbook runs through ansible-runner with
trivial local playbooks (`connection: local`: no guest, no network)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from provisioning import configure, seed
from provisioning.configure import ConfigureError
from provisioning.vmplan import VmPlan, app_env

KEY = Path("/state/ssh/id_ed25519")
PLAN = VmPlan(
    name="keelung-accounting-1", uuid="c7a5fdbd-cdaf-4455-926a-d65c16db1809", tenant="keelung",
    county_name="基隆市", site="primary", vcpus=1, memory_mib=1024, data_disk_mib=256,
    ssh_port=42001, app_port=42002, app_secret="s3cret", settings={"county_name": "基隆市"},
)
OTHER = dataclasses.replace(PLAN, name="penghu-accounting-1", uuid="0b6f3c1e-6d7a-4c35-9a1e-7f1f0e2d9c11",
                            tenant="penghu", county_name="澎湖縣", ssh_port=42003, app_port=42004,
                            app_secret="other", settings={"county_name": "澎湖縣"})


def _hosts(inventory: dict[str, object]) -> dict[str, dict[str, object]]:
    group = inventory["all"]
    assert isinstance(group, dict)
    hosts = group["hosts"]
    assert isinstance(hosts, dict)
    return hosts


def test_inventory_reaches_each_vm_on_its_forwarded_ssh_port_on_loopback() -> None:
    hosts = _hosts(configure.ansible_inventory([PLAN, OTHER], KEY))
    assert set(hosts) == {"keelung-accounting-1", "penghu-accounting-1"}
    keelung = hosts["keelung-accounting-1"]
    assert keelung["ansible_host"] == "127.0.0.1"
    assert keelung["ansible_port"] == 42001 and hosts["penghu-accounting-1"]["ansible_port"] == 42003
    assert keelung["ansible_user"] == "root"
    assert keelung["ansible_ssh_private_key_file"] == str(KEY)
    assert keelung["app_guest_port"] == 8080
    assert "StrictHostKeyChecking=no" in str(keelung["ansible_ssh_common_args"])


def test_inventory_carries_each_vms_own_settings_file() -> None:
    hosts = _hosts(configure.ansible_inventory([PLAN, OTHER], KEY))
    assert hosts["keelung-accounting-1"]["tenant_env"] == seed.render_env(app_env(PLAN))
    assert "TENANT_APP_SECRET=other\n" in str(hosts["penghu-accounting-1"]["tenant_env"])
    assert "s3cret" not in str(hosts["penghu-accounting-1"]["tenant_env"])


def test_inventory_of_no_vms_is_empty() -> None:
    assert configure.ansible_inventory([], KEY) == {"all": {"hosts": {}}}


def test_converge_playbook_uses_only_variables_the_inventory_gives() -> None:
    text = (configure.PLAYBOOKS / "converge.yml").read_text()
    yaml.safe_load(text)  # parses
    used = set(re.findall(r"{{\s*([a-z_]+)", text))
    registered = set(re.findall(r"register:\s*(\w+)", text))
    given = set(_hosts(configure.ansible_inventory([PLAN], KEY))["keelung-accounting-1"])
    magic = {"inventory_hostname"}
    assert used, "the playbook should template something"
    assert used <= given | registered | magic, used - given - registered - magic


# --- real ansible-runner runs against localhost ------------------------------------------------------

LOCAL_PLAY = """\
- name: local stand-in for a guest
  hosts: all
  connection: local
  gather_facts: false
  vars:
    out_dir: {out_dir}
  tasks:
    - name: The app's settings file holds the declared settings
      ansible.builtin.copy:
        dest: "{{{{ out_dir }}}}/{{{{ inventory_hostname }}}}.env"
        content: "{{{{ tenant_env }}}}"
        mode: "0600"
    - name: The seed disk is present
      ansible.builtin.fail:
        msg: "no seed disk on {{{{ inventory_hostname }}}}"
      when: inventory_hostname.startswith("penghu")
"""


@pytest.fixture
def local_playbooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (folder / "converge.yml").write_text(LOCAL_PLAY.format(out_dir=out))
    monkeypatch.setattr(configure, "PLAYBOOKS", folder)
    return out


def test_successful_run_reports_status_changes_time_and_keeps_its_folder(
    local_playbooks: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "artifacts" / "ansible-converge"
    outcome = configure.run_playbook("converge.yml", [PLAN], KEY, run_dir)
    assert (outcome.status, outcome.rc, outcome.changed, outcome.run_dir) == ("successful", 0, 1, run_dir)
    assert outcome.elapsed_s > 0  # the step's time is recorded (it was always 0.0 before the fix)
    written = (local_playbooks / "keelung-accounting-1.env").read_text()
    assert written == seed.render_env(app_env(PLAN))
    assert (run_dir / "artifacts").is_dir()  # the run folder is kept with the job


def test_converge_runs_converge_yml_in_the_jobs_artifacts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = []

    def fake_run(playbook: str, plans: list[VmPlan], ssh_key: Path,
                 run_dir: Path) -> configure.PlaybookOutcome:
        calls.append((playbook, [p.name for p in plans], ssh_key, run_dir))
        return configure.PlaybookOutcome(status="successful", rc=0, changed=3, elapsed_s=2.5, run_dir=run_dir)

    monkeypatch.setattr(configure, "run_playbook", fake_run)
    message = configure.converge([PLAN, OTHER], KEY, tmp_path)
    run_dir = tmp_path / "ansible-converge"
    assert calls == [("converge.yml", ["keelung-accounting-1", "penghu-accounting-1"], KEY, run_dir)]
    assert message == f"converged 2 VM(s): 3 change(s), healthy; run folder {run_dir}"


def test_failed_playbook_names_host_task_reason_and_run_folder(local_playbooks: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigureError) as failure:
        configure.run_playbook("converge.yml", [PLAN, OTHER], KEY, run_dir)
    message = str(failure.value)
    assert message.startswith("playbook converge.yml failed (rc 2): ")
    assert "penghu-accounting-1: The seed disk is present: no seed disk on penghu-accounting-1" in message
    assert "keelung-accounting-1:" not in message  # the host that succeeded is not blamed
    assert message.endswith(f"[{run_dir}]")
    # The host that did not fail was still converged.
    assert (local_playbooks / "keelung-accounting-1.env").exists()
