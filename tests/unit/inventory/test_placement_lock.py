"""Two placements at once never overcommit a host (issue 14, item 13): each reads the hosts' loads
only after the other has recorded its choice. Run on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine

from inventory import queries
from inventory.db import make_engine, migrate, session_scope
from inventory.declare import apply
from inventory.loader import load_text
from inventory.placement import NoHostFits
from inventory.ports import PortRange, PortRanges

ONE_SLOT = """\
sites:
  - name: primary
    role: primary
    hosts:
      - {name: p1, vcpus: 2, memory_mb: 2048, disk_gb: 10,
         cpu_allocation_ratio: 1.0, ram_allocation_ratio: 1.0}
size_templates:
  - {name: whole, vcpus: 2, memory_mb: 2048, data_disk_mb: 256}
networks:
  - {name: tenant-user, kind: user}
images:
  - {name: bookworm-tenant}
tenants:
  - {slug: keelung, name: 基隆市, site: primary, network: tenant-user, image: bookworm-tenant,
     vms: [{role: accounting, size: whole}]}
  - {slug: penghu, name: 澎湖縣, site: primary, network: tenant-user, image: bookworm-tenant,
     vms: [{role: accounting, size: whole}]}
"""
PORTS = PortRanges(guest=PortRange(23400, 23499, "guest ports"), gateway=PortRange(23500, 23599, "gateway"))


@pytest.fixture
def engine(db_url: str) -> Engine:
    migrate(db_url)
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        apply(session, load_text(ONE_SLOT), actor="test", ports=PORTS)
    return engine


def test_concurrent_placements_fill_a_host_once(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    read_loads = queries.host_loads

    def slow_loads(session, site):  # type: ignore[no-untyped-def]
        loads = read_loads(session, site)
        time.sleep(0.5)  # both placements hold the loads they read before either records its choice
        return loads

    monkeypatch.setattr(queries, "host_loads", slow_loads)
    outcomes: dict[str, str] = {}
    start = threading.Barrier(2)

    def place(tenant: str) -> None:
        start.wait()
        try:
            with session_scope(engine) as session:
                [vm] = queries.vms_of(queries.get_tenant(session, tenant))
                outcomes[tenant] = queries.place_vm(session, vm).name
        except NoHostFits:
            outcomes[tenant] = "no host fits"

    threads = [threading.Thread(target=place, args=(tenant,)) for tenant in ("keelung", "penghu")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes.values()) == ["no host fits", "p1"]
    with session_scope(engine) as session:
        placed = [vm.name for vm in queries.list_vms(session) if vm.host is not None]
    assert len(placed) == 1
    engine.dispose()
