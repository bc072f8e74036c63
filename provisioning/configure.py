"""Configuration management of running guests: Ansible playbooks through ansible-runner over SSH
(on each guest's forwarded port on 127.0.0.1), and one-off commands with fabric.

Each playbook run is a folder (inputs, artifacts, events) kept with the job that ran it.

A converge is skipped for a VM whose guest already serves with the declared settings. The guest's
launcher records the digest of the settings it serves with at every activation (a clone's, a cold
boot's, and after Ansible restarts it), in /run/countycloud/settings-digest; the host reads that
file through the guest agent (no process in the guest, a few milliseconds) and compares it with the
declared settings' digest (vmplan.settings_digest). Why the guest and not a file on the host written
with the seed disk: the seed's settings are applied only when the guest has none yet, so what the
seed says and what the guest serves with can differ (a re-run against a running VM after a changed
setting); only the guest knows. A guest that cannot say (an image from before the record, the agent
not answering) is converged, as before.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from provisioning import guest, seed
from provisioning.errors import ProvisioningError
from provisioning.guest import CommandResult
from provisioning.hypervisor import Hypervisor, HypervisorError
from provisioning.vmplan import APP_GUEST_PORT, VmPlan, app_env, settings_digest

PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
# Written by the guest's launcher (provisioning/image/files/launcher.py, SETTINGS_DIGEST).
GUEST_SETTINGS_DIGEST = "/run/countycloud/settings-digest"
GUEST_SETTINGS_FILE = "/etc/tenant-app.env"  # converge.yml writes it; the launcher reads it
SKIPPED = "skipped: settings digest matches"
_SSH_OPTIONS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10"


class ConfigureError(ProvisioningError):
    """A playbook run failed; the message names the host, the task and the run folder."""


@dataclass(frozen=True)
class PlaybookOutcome:
    status: str
    rc: int
    changed: int
    elapsed_s: float
    run_dir: Path


def ansible_inventory(plans: Sequence[VmPlan], ssh_key: Path) -> dict[str, object]:
    """Pure: the Ansible inventory for these VMs, reached on their forwarded SSH ports."""
    hosts = {
        plan.name: {
            "ansible_host": "127.0.0.1",
            "ansible_port": plan.ssh_port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(ssh_key),
            "ansible_ssh_common_args": _SSH_OPTIONS,
            "ansible_python_interpreter": "/usr/bin/python3",
            "tenant_env": seed.render_env(app_env(plan)),
            "app_guest_port": APP_GUEST_PORT,
        }
        for plan in plans
    }
    return {"all": {"hosts": hosts}}


def run_playbook(playbook: str, plans: Sequence[VmPlan], ssh_key: Path, run_dir: Path) -> PlaybookOutcome:
    import ansible_runner  # imported here: it is slow to import and only this step needs it

    run_dir.mkdir(parents=True, exist_ok=True)
    venv_bin = str(Path(sys.executable).parent)
    started = time.monotonic()
    result = ansible_runner.run(
        private_data_dir=str(run_dir),
        playbook=str(PLAYBOOKS / playbook),
        inventory=ansible_inventory(plans, ssh_key),
        quiet=True,
        envvars={
            # ansible-runner finds ansible-playbook on PATH; the venv's bin must be on it.
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PIPELINING": "True",
        },
    )
    stats = result.stats or {}
    changed = sum((stats.get("changed") or {}).values())
    # ansible-runner's playbook_on_stats event carries no duration: time the run here.
    elapsed = round(time.monotonic() - started, 2)
    outcome = PlaybookOutcome(status=str(result.status), rc=int(result.rc or 0), changed=changed,
                              elapsed_s=elapsed, run_dir=run_dir)
    if result.status != "successful":
        failures = [
            f"{event['event_data'].get('host')}: {event['event_data'].get('task')}: "
            f"{(event['event_data'].get('res') or {}).get('msg', '')}"
            for event in result.events
            if event.get("event") in ("runner_on_failed", "runner_on_unreachable")
        ]
        raise ConfigureError(
            f"playbook {playbook} {result.status} (rc {result.rc}): "
            f"{'; '.join(failures) or 'see run folder'} [{run_dir}]"
        )
    return outcome


def unconverged(plans: Sequence[VmPlan], guest_digests: Mapping[str, str | None]) -> list[VmPlan]:
    """Pure: the VMs whose guest does not report serving with their declared settings."""
    return [plan for plan in plans if guest_digests.get(plan.name) != settings_digest(plan)]


def guest_settings_digest(hv: Hypervisor, vm: str) -> str | None:
    """The digest the guest's launcher recorded, or None when the guest cannot say."""
    try:
        recorded = guest.read_file(hv, vm, GUEST_SETTINGS_DIGEST, limit=128)
    except HypervisorError:  # the agent did not answer (AgentTimeout is one): converge to be sure
        return None
    return recorded.decode(errors="replace").strip() or None if recorded else None


def env_text_digest(text: str) -> str:
    """The digest of a settings file's text as the guest's launcher computes it (one KEY=VALUE line
    each, each ending in a newline), comparable with vmplan.settings_digest."""
    canonical = "".join(f"{line}\n" for line in text.splitlines())
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def in_sync(hv: Hypervisor, plan: VmPlan) -> bool:
    """Whether a converge would change nothing: the guest serves the declared settings, its settings
    file on disk still holds them (an edit there would take effect at the next restart), and its
    hostname is the VM's name. Three reads through the guest agent, no process in the guest: a
    converge is a minute and more of Ansible's modules under TCG."""
    declared = settings_digest(plan)
    if guest_settings_digest(hv, plan.name) != declared:
        return False
    try:
        on_disk = guest.read_file(hv, plan.name, GUEST_SETTINGS_FILE)
        hostname = guest.read_file(hv, plan.name, "/etc/hostname", limit=256)
    except HypervisorError:
        return False
    return (on_disk is not None and env_text_digest(on_disk.decode(errors="replace")) == declared
            and hostname is not None and hostname.decode(errors="replace").strip() == plan.name)


def guest_digests(plans: Sequence[VmPlan],
                  hypervisor: Callable[[str], AbstractContextManager[Hypervisor]]) -> dict[str, str | None]:
    """What each VM's guest recorded, through `hypervisor(site)` (Platform.hypervisor)."""
    digests: dict[str, str | None] = {}
    for plan in plans:
        with hypervisor(plan.site) as hv:
            digests[plan.name] = guest_settings_digest(hv, plan.name)
    return digests


def skipped(plans: Sequence[VmPlan]) -> str:
    return f"{SKIPPED} for {len(plans)} VM(s): {', '.join(settings_digest(plan) for plan in plans)}"


def out_of_sync(plans: Sequence[VmPlan],
                hypervisor: Callable[[str], AbstractContextManager[Hypervisor]]) -> list[VmPlan]:
    """The VMs a converge would change (in_sync), each asked through its own site's hypervisor."""
    stale = []
    for plan in plans:
        with hypervisor(plan.site) as hv:
            if not in_sync(hv, plan):
                stale.append(plan)
    return stale


def converge_stale(plans: Sequence[VmPlan], guest_digests: Mapping[str, str | None],
                   run: Callable[[Sequence[VmPlan]], str]) -> str:
    """Converge only the VMs whose settings differ from what their guest serves with (`run` converges;
    provisioning's takes its turn among other counties' converges first, so a county whose guest
    already matches never waits for one)."""
    return converge_only(plans, unconverged(plans, guest_digests), run)


def converge_only(plans: Sequence[VmPlan], stale: Sequence[VmPlan],
                  run: Callable[[Sequence[VmPlan]], str]) -> str:
    """`run` on the stale VMs only; the others are said to be skipped."""
    if not stale:
        return skipped(plans)
    current = [plan for plan in plans if plan not in stale]
    said = run(stale)
    return f"{said}; {skipped(current)}" if current else said


def converge(plans: Sequence[VmPlan], ssh_key: Path, artifacts: Path) -> str:
    outcome = run_playbook("converge.yml", plans, ssh_key, artifacts / "ansible-converge")
    return (f"converged {len(plans)} VM(s): {outcome.changed} change(s), healthy; "
            f"run folder {outcome.run_dir}")


# The exit code of a command that ran out of time (as timeout(1) reports it).
TIMED_OUT_RC = 124


def ssh_run(plan: VmPlan, ssh_key: Path, command: str, timeout_s: float = 120.0) -> CommandResult:
    """One command over SSH with fabric (`countycloud tenant exec`). A command that outlives
    `timeout_s` is a failed result (exit code 124, what it printed so far), not an exception."""
    from fabric import Connection
    from invoke.exceptions import CommandTimedOut

    with Connection(host="127.0.0.1", port=plan.ssh_port, user="root",
                    connect_kwargs={"key_filename": str(ssh_key), "look_for_keys": False,
                                    "allow_agent": False},
                    connect_timeout=10) as connection:
        connection.client.set_missing_host_key_policy(_accept_any())
        try:
            result = connection.run(command, warn=True, hide=True, timeout=timeout_s)
        except CommandTimedOut as timed_out:
            partial = timed_out.result
            return CommandResult(rc=TIMED_OUT_RC, stdout=partial.stdout,
                                 stderr=f"{partial.stderr}(timed out after {timeout_s:.0f} s)")
    return CommandResult(rc=result.exited, stdout=result.stdout, stderr=result.stderr)


def _accept_any() -> object:
    # Guests are reached only on 127.0.0.1 forwards the platform made; their host keys are made
    # by the platform too (seed disk), so there is nothing to learn from a known_hosts prompt.
    import paramiko

    return paramiko.AutoAddPolicy()
