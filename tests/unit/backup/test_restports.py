"""Each site's backup REST port (backup/restports.py, pure) and the pair a county's backups use
(backup.ops.sites_of): a county failed over to the secondary copies to the primary's server, on a
port of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from backup import ops
from backup.restports import Reserved, SitePlace, port_of, problems, rest_ports
from inventory import declare, loader, queries
from inventory.db import make_engine, migrate, session_scope
from inventory.enums import SiteRole

PRIMARY = SitePlace("primary", SiteRole.PRIMARY)
SECONDARY = SitePlace("secondary", SiteRole.SECONDARY)
RESERVED = [Reserved(22000, 22999, "guest ports"), Reserved(21000, 21999, "gateway ports"),
            Reserved(23010, 23010, "replica port")]
EPHEMERAL = range(32768, 61000)


def test_the_secondary_keeps_the_single_port_and_the_primary_takes_the_next() -> None:
    assert rest_ports([PRIMARY, SECONDARY], 23000, {}) == {"secondary": 23000, "primary": 23001}
    # the order the inventory lists them in does not matter
    assert rest_ports([SECONDARY, PRIMARY], 23000, {}) == {"secondary": 23000, "primary": 23001}
    # an older state folder's one setting (a test's, a bench's) stays the secondary's
    assert rest_ports([PRIMARY, SECONDARY], 24390, {}) == {"secondary": 24390, "primary": 24391}


def test_a_port_set_by_site_wins_and_the_others_keep_theirs() -> None:
    assert rest_ports([PRIMARY, SECONDARY], 23000, {"primary": 23005}) == {"secondary": 23000,
                                                                           "primary": 23005}
    assert rest_ports([PRIMARY, SECONDARY], 23000, {"secondary": 23004, "primary": 23003}) == {
        "secondary": 23004, "primary": 23003}


def test_more_sites_take_ports_in_role_then_name_order() -> None:
    dr2 = SitePlace("dr2", SiteRole.SECONDARY)
    assert rest_ports([PRIMARY, SECONDARY, dr2], 23000, {}) == {"dr2": 23000, "secondary": 23001,
                                                                "primary": 23002}


def test_the_default_ports_have_no_problem() -> None:
    ports = rest_ports([PRIMARY, SECONDARY], 23000, {})
    assert problems(ports, sites={"primary", "secondary"}, reserved=RESERVED, ephemeral=EPHEMERAL) == []


def test_two_sites_on_one_port_are_refused() -> None:
    ports = rest_ports([PRIMARY, SECONDARY], 23000, {"primary": 23000})
    said = problems(ports, declared={"primary"}, sites={"primary", "secondary"}, reserved=RESERVED,
                    ephemeral=EPHEMERAL)
    assert said == ["sites primary and secondary have the same backup REST port 23000: each site's server "
                    "needs its own (set backup_rest_ports)"]


@pytest.mark.parametrize(("port", "expected"), [
    (80, "site primary's backup REST port 80 is not an unprivileged port (1024-65535)"),
    (70000, "site primary's backup REST port 70000 is not an unprivileged port (1024-65535)"),
    (-1, "site primary's backup REST port -1 is not an unprivileged port (1024-65535)"),
    (22001, "site primary's backup REST port 22001 is in the guest ports (22000-22999)"),
    (21500, "site primary's backup REST port 21500 is in the gateway ports (21000-21999)"),
    (23010, "site primary's backup REST port 23010 is in the replica port (23010-23010)"),
    (40000, "site primary's backup REST port 40000 is in Linux's ephemeral ports 32768-60999: "
            "outgoing connections could take it"),
])
def test_a_port_out_of_range_or_in_another_range_is_refused(port: int, expected: str) -> None:
    ports = rest_ports([PRIMARY, SECONDARY], 23000, {"primary": port})
    assert problems(ports, declared={"primary"}, sites={"primary", "secondary"}, reserved=RESERVED,
                    ephemeral=EPHEMERAL) == [expected]


def test_a_port_for_a_site_not_declared_is_refused() -> None:
    ports = rest_ports([PRIMARY, SECONDARY], 23000, {"primry": 23005})
    assert problems(ports, declared={"primry"}, sites={"primary", "secondary"}, reserved=RESERVED,
                    ephemeral=EPHEMERAL) == [
        "backup_rest_ports names site 'primry', which is not a declared site (primary, secondary)"]


def test_a_site_without_a_port_is_named() -> None:
    with pytest.raises(KeyError, match="no backup REST port for site 'elsewhere'"):
        port_of({"primary": 23001}, "elsewhere")


def _engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'countycloud.db'}"
    migrate(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        declare.apply(session, loader.load_sample())
    return engine


def test_a_county_at_home_copies_to_the_secondarys_server_and_one_failed_over_to_the_primarys(
        tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    try:
        assert ops.sites_of(engine, "keelung", 23150) == ops.BackupSites("primary", "secondary", 23150)
        with session_scope(engine) as session:  # failed over: the inventory records where it runs
            county = queries.get_tenant(session, "keelung")
            queries.set_running_site(county, queries.get_site(session, "secondary"), actor="test")
        assert ops.sites_of(engine, "keelung", 23150) == ops.BackupSites("secondary", "primary", 23151)
        assert ops.sites_of(engine, "keelung", 23150, {"primary": 23158}) == ops.BackupSites(
            "secondary", "primary", 23158)
        assert ops.sites_of(engine, "penghu", 23150) == ops.BackupSites("primary", "secondary", 23150)
        assert ops.rest_ports(engine, 23150) == {"secondary": 23150, "primary": 23151}
    finally:
        engine.dispose()


def test_the_inventory_use_case_refuses_a_port_in_the_guest_range_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from controlplane import bootstrap, inventory_ops
    from controlplane.errors import InvalidInput

    monkeypatch.setenv("COUNTYCLOUD_DATABASE_URL", f"sqlite:///{tmp_path / 'countycloud.db'}")
    monkeypatch.setenv("COUNTYCLOUD_BACKUP_REST_PORTS", '{"primary": 22500}')
    yaml_text = loader.sample_path().read_text(encoding="utf-8")
    for use_case in (inventory_ops.plan, lambda text: inventory_ops.apply(text, actor="test")):
        with pytest.raises(InvalidInput, match=r"site primary's backup REST port 22500 is in the guest "
                                               r"ports \(22000-22999\)"):
            use_case(yaml_text)
    with session_scope(bootstrap.engine()) as session:
        assert queries.list_sites(session) == []
