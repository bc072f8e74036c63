"""The platform-held credentials of each county's probe account (tenant_app/probe_account.py).

A county's probe account is made inside the county (its own database) when the county is
provisioned: `tenant-app probe-account` in the guest, through the guest agent, prints the account
once (a new password and API token; the county keeps only their hashes). The platform keeps what it
printed here, one 0600 file per county in the state folder, for monitoring's probes. The data disk
carries the account to the other site on a failover, so the same credentials keep working there.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import Engine

from inventory import queries
from inventory.db import session_scope
from provisioning.address import SERVING_ROLE
from provisioning.errors import ProvisioningError
from provisioning.guest import agent_exec
from provisioning.hypervisor import Hypervisor

GUEST_COMMAND = ["/usr/local/bin/tenant-app", "probe-account"]
COMMAND_TIMEOUT_S = 120.0  # a TCG guest hashes the password with argon2: seconds, not minutes


@dataclass(frozen=True)
class ProbeCredentials:
    username: str
    password: str
    api_token: str
    agency_id: int
    budget_line_id: int


def directory(state_dir: Path) -> Path:
    return state_dir / "probe-accounts"


def path_of(state_dir: Path, tenant: str) -> Path:
    return directory(state_dir) / f"{tenant}.json"


def parse(text: str) -> ProbeCredentials:
    """The last JSON line the guest printed (anything before it is the app's own chatter)."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            data = json.loads(line)
            return ProbeCredentials(str(data["username"]), str(data["password"]), str(data["api_token"]),
                                    int(data["agency_id"]), int(data["budget_line_id"]))
    raise ProvisioningError(f"`{' '.join(GUEST_COMMAND)}` printed no account: {text.strip()[-300:]!r}")


def save(state_dir: Path, tenant: str, credentials: ProbeCredentials) -> Path:
    """Atomically, readable by the platform's user only (the probe's password is a secret)."""
    folder = directory(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = path_of(state_dir, tenant)
    fd, name = tempfile.mkstemp(prefix=f".{tenant}.", dir=folder)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(credentials), handle)
        os.replace(name, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
    return target


def load(state_dir: Path, tenant: str) -> ProbeCredentials | None:
    try:
        data = json.loads(path_of(state_dir, tenant).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return ProbeCredentials(**data)


def forget(state_dir: Path, tenant: str) -> None:
    path_of(state_dir, tenant).unlink(missing_ok=True)


def serving_vm(engine: Engine, tenant: str) -> tuple[str, str]:
    """(site, VM name) of the county's serving VM: the one whose database the probe works in."""
    with session_scope(engine) as session:
        county = queries.get_tenant(session, tenant)
        site = (county.running_site or county.home_site).name
        for vm in queries.vms_of(county):
            if vm.role is SERVING_ROLE:
                return site, vm.name
    raise ProvisioningError(f"{tenant} has no serving VM")


def ensure_in_guest(hv: Hypervisor, vm_name: str, state_dir: Path, tenant: str) -> str:
    """Create (or refresh) the probe account in the county and keep its credentials. Idempotent: a
    rerun issues a new password and token and replaces the file."""
    result = agent_exec(hv, vm_name, GUEST_COMMAND, timeout_s=COMMAND_TIMEOUT_S)
    credentials = parse(result.stdout)
    save(state_dir, tenant, credentials)
    return (f"probe account {credentials.username} (budget line {credentials.budget_line_id}) "
            f"kept for {tenant}")
