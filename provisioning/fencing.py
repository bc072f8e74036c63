"""The fence ledger: copies of county VMs at a failed site that must never serve again as they are.

A failover fences the failed site's VMs before it starts any county elsewhere. When the site's
daemon answers, the VMs are destroyed there and then; when it does not, nothing can be done at the
site itself, so the copy is written here and everything that could start it or put it behind an
address asks first: provisioning's start refuses a fenced copy, and a failback removes the copies
at the returning site (undefines them, keeps their disks) before it brings its counties back, then
clears their entries.

A JSON file in the control plane's state folder ({site: {vm: entry}}), replaced atomically and
written under a lock: on this machine the control plane lives outside both sites.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from provisioning.errors import ProvisioningError
from provisioning.locks import exclusive

LEDGER_NAME = "fenced.json"


class FenceHow(StrEnum):
    DESTROYED = "destroyed"  # the site's daemon answered: the VM was destroyed and undefined there
    MARKED = "marked"  # the daemon was silent: the copy is left there, marked here and out of every address


@dataclass(frozen=True)
class FencedCopy:
    site: str
    vm: str
    uuid: str
    how: FenceHow
    at: float  # epoch seconds
    job: str = ""


class FencedVm(ProvisioningError):
    """An attempt to start a VM where its copy is fenced."""


def ledger_path(state_dir: Path) -> Path:
    return state_dir / "dr" / LEDGER_NAME


def _read(path: Path) -> dict[str, dict[str, dict[str, object]]]:
    if not path.exists():
        return {}
    loaded = json.loads(path.read_text() or "{}")
    return loaded if isinstance(loaded, dict) else {}


def _write(path: Path, data: dict[str, dict[str, dict[str, object]]]) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(partial, path)


def fenced(state_dir: Path, site: str | None = None) -> list[FencedCopy]:
    """Every fenced copy (or those at `site`), by site then VM."""
    data = _read(ledger_path(state_dir))
    copies = [FencedCopy(site=where, vm=name, uuid=str(entry["uuid"]), how=FenceHow(str(entry["how"])),
                         at=float(str(entry["at"])), job=str(entry.get("job", "")))
              for where, vms in data.items() for name, entry in vms.items()]
    return sorted((c for c in copies if site is None or c.site == site), key=lambda c: (c.site, c.vm))


def is_fenced(state_dir: Path, site: str, vm: str) -> bool:
    return any(copy.vm == vm for copy in fenced(state_dir, site))


def record(state_dir: Path, copy: FencedCopy) -> bool:
    """Add the copy (idempotent: a copy already recorded keeps its first entry); True when added."""
    path = ledger_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path.with_suffix(".lock")):
        data = _read(path)
        at_site = data.setdefault(copy.site, {})
        if copy.vm in at_site:
            return False
        entry = asdict(copy)
        del entry["site"], entry["vm"]
        at_site[copy.vm] = entry
        _write(path, data)
    return True


def clear(state_dir: Path, site: str, vm: str) -> bool:
    """Forget a copy once it is gone from its site; True when there was one."""
    path = ledger_path(state_dir)
    if not path.exists():
        return False
    with exclusive(path.with_suffix(".lock")):
        data = _read(path)
        if vm not in data.get(site, {}):
            return False
        del data[site][vm]
        if not data[site]:
            del data[site]
        _write(path, data)
    return True


def refuse_if_fenced(state_dir: Path, site: str, vm: str) -> None:
    if is_fenced(state_dir, site, vm):
        raise FencedVm(f"{vm} at site {site} is fenced (its county was failed over); it must not start "
                       f"there again: `countycloud dr failback` removes it and brings the county back")
