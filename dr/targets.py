"""What the site watch checks: per site, its libvirtd's URI and the addresses of the counties running
there. The service derives them from the inventory and writes them to a small file in the state
folder; the witness process (dr.witness) rereads that file every tick, so it follows failovers and
new counties without a restart and without a database connection of its own.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, TypeAdapter
from sqlalchemy.orm import Session

from inventory import queries
from inventory.enums import Lifecycle
from inventory.models import Site, Vm
from provisioning.address import SERVING_ROLE
from provisioning.sites import site_paths

TARGETS_FILE = "targets.json"


class SiteTarget(BaseModel):
    model_config = ConfigDict(frozen=True)

    site: str
    libvirt_uri: str
    # county slug -> the port on 127.0.0.1 its serving VM's app is forwarded to at this site: the
    # site's own QEMU answers there, not the gateway, whose address moves on failover.
    counties: dict[str, int] = {}


_TARGETS = TypeAdapter(list[SiteTarget])


def dr_dir(state_dir: Path) -> Path:
    return state_dir / "dr"


def targets_path(state_dir: Path) -> Path:
    return dr_dir(state_dir) / TARGETS_FILE


def from_inventory(state_dir: Path, sites: Iterable[Site], vms: Iterable[Vm]) -> list[SiteTarget]:
    """Each site's target: its daemon at the state folder's site socket, and every serving VM placed on
    one of its hosts (where the county runs now, whatever its declared home)."""
    counties: dict[str, dict[str, int]] = {}
    for vm in vms:
        if (vm.role is SERVING_ROLE and vm.host is not None and vm.app_port is not None
                and vm.status is not Lifecycle.RETIRED):
            counties.setdefault(vm.host.site.name, {})[vm.tenant.slug] = vm.app_port
    return [
        SiteTarget(site=site.name, libvirt_uri=site_paths(state_dir, site.name).uri,
                   counties=dict(sorted(counties.get(site.name, {}).items())))
        for site in sorted(sites, key=lambda s: s.name)
    ]


def from_database(session: Session, state_dir: Path) -> list[SiteTarget]:
    """The targets as the inventory records them now (for the service to write each time placement
    changes, and before starting a witness)."""
    return from_inventory(state_dir, queries.list_sites(session), queries.list_vms(session))


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_targets(state_dir: Path, targets: list[SiteTarget]) -> Path:
    path = targets_path(state_dir)
    write_atomically(path, _TARGETS.dump_json(targets, indent=2).decode())
    return path


def read_targets(path: Path) -> list[SiteTarget]:
    """The targets in `path`; none when the service has not written it yet."""
    try:
        return _TARGETS.validate_json(path.read_bytes())
    except FileNotFoundError:
        return []
