"""Reaching inside a guest: the QEMU guest agent (through the hypervisor edge), SSH with fabric, and
Ansible playbooks with ansible-runner. Results come back as small plain records."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

from provisioning.errors import ProvisioningError
from provisioning.hypervisor import AgentTimeout, Hypervisor, HypervisorError

PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class GuestCommandError(ProvisioningError):
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


def write_file(hv: Hypervisor, vm: str, path: str, content: bytes) -> None:
    """Write a file inside the guest through the agent's file API: no process starts in the guest."""
    handle = hv.agent(vm, "guest-file-open", {"path": path, "mode": "w"})
    try:
        hv.agent(vm, "guest-file-write", {"handle": handle, "buf-b64": base64.b64encode(content).decode()})
    finally:
        hv.agent(vm, "guest-file-close", {"handle": handle})


def read_file(hv: Hypervisor, vm: str, path: str, limit: int = 65536) -> bytes | None:
    """A file's contents from inside the guest, or None if it does not exist."""
    try:
        handle = hv.agent(vm, "guest-file-open", {"path": path, "mode": "r"})
    except AgentTimeout:
        raise
    except HypervisorError:
        return None  # the agent reports a missing file as an error of the open
    try:
        answer = hv.agent(vm, "guest-file-read", {"handle": handle, "count": limit})
    finally:
        hv.agent(vm, "guest-file-close", {"handle": handle})
    return base64.b64decode(answer.get("buf-b64", ""))
