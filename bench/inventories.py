"""The inventory the VM benches declare: both sites with one roomy host each, one size, counties at
the primary (each bench keeps its own state folder and ports; this is only the YAML)."""

from __future__ import annotations

import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any


def two_sites(counties: Sequence[str], *, data_disk_mb: int = 64, protection: str | None = None,
              replicated: Collection[str] = ()) -> str:
    """`protection`: every county's tier; `replicated`: the counties of the replicated tier."""
    def tier(slug: str) -> str:
        chosen = "replicated" if slug in replicated else protection
        return f"protection: {chosen}, " if chosen else ""
    tenants = "\n".join(
        f"  - {{slug: {slug}, name: {slug}, site: primary, network: tenant-user, image: bookworm-tenant,\n"
        f"     {tier(slug)}vms: [{{role: accounting, size: small}}]}}" for slug in counties)
    return f"""sites:
  - name: primary
    role: primary
    hosts: [{{name: p1, vcpus: 64, memory_mb: 262144, disk_gb: 2000}}]
  - name: secondary
    role: secondary
    hosts: [{{name: s1, vcpus: 64, memory_mb: 262144, disk_gb: 2000}}]
size_templates:
  - {{name: small, vcpus: 1, memory_mb: 1024, data_disk_mb: {data_disk_mb}}}
networks:
  - {{name: tenant-user, kind: user}}
images:
  - {{name: bookworm-tenant}}
tenants:
{tenants}
"""


def set_up(cloud: Any, inventory: str) -> None:
    """The bench's state folder made ready (`countycloud setup`) and `inventory` applied to it;
    `cloud`: tests.integration.vm.conftest.Cloud with the bench's environment."""
    cloud.cli("setup", timeout=3600)
    with tempfile.TemporaryDirectory() as folder:
        declared = Path(folder) / "inventory.yaml"
        declared.write_text(inventory)
        cloud.cli("inventory", "apply", str(declared))
