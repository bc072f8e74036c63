"""Reaching inside a guest: the QEMU guest agent (through the hypervisor edge), SSH with fabric, and
Ansible playbooks with ansible-runner. Results come back as small plain records."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

from provisioning.hypervisor import AgentTimeout, Hypervisor

PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class GuestCommandError(RuntimeError):
    """A command inside the guest failed; the message carries its exit code and output."""


def agent_exec(hv: Hypervisor, vm: str, argv: list[str], timeout_s: float = 30.0,
               check: bool = True) -> CommandResult:
    """Run a command inside the guest through the guest agent (no network path needed)."""
    started = hv.agent(vm, "guest-exec", {"path": argv[0], "arg": argv[1:], "capture-output": True})
    pid = started["pid"]
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        status = hv.agent(vm, "guest-exec-status", {"pid": pid})
        if status.get("exited"):
            break
        if time.monotonic() > deadline:
            raise AgentTimeout(f"{vm}: `{' '.join(argv)}` still running after {timeout_s:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
    result = CommandResult(
        rc=int(status.get("exitcode", -1)),
        stdout=base64.b64decode(status.get("out-data", "")).decode(errors="replace"),
        stderr=base64.b64decode(status.get("err-data", "")).decode(errors="replace"),
    )
    if check and not result.ok:
        raise GuestCommandError(
            f"{vm}: `{' '.join(argv)}` exited {result.rc}: {(result.stderr or result.stdout).strip()[-500:]}"
        )
    return result


def set_clock(hv: Hypervisor, vm: str) -> None:
    """Set the guest clock from the host's: a restored guest is behind by the time since its save."""
    hv.agent(vm, "guest-set-time", {"time": time.time_ns()})


def wait_for_labels(hv: Hypervisor, vm: str, labels: tuple[str, ...], timeout_s: float = 30.0) -> float:
    """Wait until the guest kernel shows block devices with these file-system labels.

    A live disk attach returns before the guest has probed the new PCI device, so anything that
    mounts a hot-plugged disk must wait for it to appear first. Returns the seconds waited.
    """
    started = time.monotonic()
    pending = list(labels)
    while pending:
        # -c /dev/null: probe the devices themselves, not blkid's cache of what was there before.
        found = agent_exec(hv, vm, ["/sbin/blkid", "-c", "/dev/null", "-o", "value", "-s", "LABEL"],
                           check=False).stdout.split()
        pending = [label for label in pending if label not in found]
        if pending and time.monotonic() - started > timeout_s:
            missing = ", ".join(pending)
            raise AgentTimeout(f"{vm}: disks {missing} not visible in the guest after {timeout_s:.0f} s")
        if pending:
            time.sleep(0.1)
    return time.monotonic() - started
