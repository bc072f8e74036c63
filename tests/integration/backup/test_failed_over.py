"""A county failed over to the secondary (the inventory's `running_site`) keeps being backed up: its
round lands in the secondary's repository (by path) and is written at the same time to the
primary's repository through the primary's own REST server, on its own port, while the secondary's
server keeps serving on its port. Real restic, real REST servers, the app's own database."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine

from backup import consistent, figures, ops, repository, restserver
from backup.restic import Restic
from inventory import queries
from inventory.db import session_scope
from provisioning.platform import Platform
from tests.integration.backup.conftest import TEST_PORTS, county_platform, producer, stop_rest_servers
from tests.unit.provisioning.test_steps_lists import demo_db, engine  # noqa: F401 (fixtures)


@pytest.fixture
def ports() -> dict[str, int]:
    """Two free ports of this worker's block, one per site."""
    found: list[int] = []
    with ExitStack() as held:  # each port held while the next is looked for: two different ones
        for port in TEST_PORTS:
            probe = held.enter_context(socket.socket())
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            found.append(port)
            if len(found) == 2:
                return {"secondary": found[0], "primary": found[1]}
    raise RuntimeError(f"no two free ports in {TEST_PORTS}")


@pytest.fixture
def platform(engine: Engine, tmp_path: Path, ports: dict[str, int],  # noqa: F811
             made_repositories: Path) -> Iterator[Platform]:
    platform = county_platform(engine, tmp_path, made_repositories)
    yield platform
    stop_rest_servers(platform, ports)


def run_at(database: Engine, slug: str, site: str | None) -> None:
    """What the failover's recover step (and the failback's switch) records: where the county runs."""
    with session_scope(database) as session:
        queries.set_running_site(queries.get_tenant(session, slug),
                                 queries.get_site(session, site) if site else None, actor="test")


def job_snapshots(restic: Restic, platform: Platform, site: str, job: str) -> list[str]:
    """The county's snapshots of round `job` in `site`'s repository, read by path."""
    local = repository.site_backup(platform.state_dir, site).local()
    return [snapshot.id for snapshot in restic.snapshots(local, tags=[consistent.county_tag("keelung")])
            if snapshot.tag_value("job") == job]


def test_a_failed_over_countys_round_is_copied_to_the_primary_through_its_own_server(
        platform: Platform, county_db: Path, tmp_path: Path, ports: dict[str, int]) -> None:
    base, by_site = ports["secondary"], {"primary": ports["primary"]}
    database = tmp_path / "live.db"
    shutil.copy(county_db, database)
    secondary_server = repository.site_backup(platform.state_dir, "secondary").rest_server(ports["secondary"])
    primary_server = repository.site_backup(platform.state_dir, "primary").rest_server(ports["primary"])
    restic = Restic(cache_dir=tmp_path / "restic-cache", timeout_s=120)

    # at home: copied to the secondary through its server
    home = ops.sites_of(platform.engine, "keelung", base, by_site)
    assert home == ops.BackupSites("primary", "secondary", ports["secondary"])
    before = ops.backup_now(platform, "keelung", sites=home, key="home-1",
                            producer=producer(database, tmp_path / "scratch"))
    assert before.offsite.startswith("written with the snapshot")
    serving = restserver.pid(secondary_server)
    assert serving is not None and restserver.pid(primary_server) is None

    # failed over: the county runs at the secondary; its offsite is the primary, on the primary's port
    run_at(platform.engine, "keelung", "secondary")
    away = ops.sites_of(platform.engine, "keelung", base, by_site)
    assert away == ops.BackupSites("secondary", "primary", ports["primary"])
    taken = ops.backup_now(platform, "keelung", sites=away, key="away-1",
                           producer=producer(database, tmp_path / "scratch"))
    assert not taken.reused and taken.offsite.startswith("written with the snapshot"), taken.steps
    assert taken.figures == figures.read(database).tags()

    # landed in the secondary's repository and in the primary's, the latter through the primary's server
    assert len(job_snapshots(restic, platform, "secondary", "away-1")) == 1
    assert len(job_snapshots(restic, platform, "primary", "away-1")) == 1
    assert restserver.state(primary_server) is restserver.ServerState.UP
    assert restserver.has_config(primary_server, repository.REPOSITORY_NAME)
    # the secondary's server kept serving on its own port, the same process, its own repository
    assert restserver.pid(secondary_server) == serving
    assert restserver.state(secondary_server) is restserver.ServerState.UP
    through_secondary = repository.site_backup(platform.state_dir, "secondary").remote(ports["secondary"])
    assert {s.tag_value("job") for s in restic.snapshots(through_secondary)} >= {"home-1", "away-1"}
    through_primary = repository.site_backup(platform.state_dir, "primary").remote(ports["primary"])
    assert {s.tag_value("job") for s in restic.snapshots(through_primary)} >= {"home-1", "away-1"}

    # its restore points, as the secondary now sees them: both rounds at both sites
    listed = ops.restore_points(platform, "keelung", away)
    assert listed.unreachable == {}
    assert [(p.primary, p.offsite) for p in listed.points] == [(True, True), (True, True)]

    # the catch-up of this pair copies nothing back that is not the county's own
    other = tmp_path / "penghu.db"
    other.write_bytes(b"another county's copy, held at the secondary")
    secondary_local = repository.site_backup(platform.state_dir, "secondary").local()
    restic.backup_paths(secondary_local, [other], tags=[consistent.county_tag("penghu")], host="penghu")
    caught = ops.copy_offsite(platform, away, tenants={"keelung"})
    assert caught.copied == {} and len(caught.skipped) == 2
    primary_local = repository.site_backup(platform.state_dir, "primary").local()
    assert restic.snapshots(primary_local, tags=[consistent.county_tag("penghu")]) == []

    # failed back: the rounds follow it home, to the secondary's server again
    run_at(platform.engine, "keelung", None)
    assert ops.sites_of(platform.engine, "keelung", base, by_site) == home
    after = ops.backup_now(platform, "keelung", sites=home, key="home-2",
                           producer=producer(database, tmp_path / "scratch"))
    assert after.offsite.startswith("written with the snapshot")
    assert len(job_snapshots(restic, platform, "secondary", "home-2")) == 1
    assert [(p.primary, p.offsite) for p in ops.restore_points(platform, "keelung", home).points] == [
        (True, True)] * 3
