"""The backup use cases through the service (real controlplane, real restic and REST server): the API's
restore points as each role sees them, who may back up and restore, the console's backup page, and
the per-county gauges on /metrics."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backup import consistent, ops, repository, restserver
from controlplane import backup_metrics, bootstrap
from inventory.enums import Lifecycle
from provisioning import records
from tests.integration.backup.conftest import lay_repositories
from tests.support import workers
from tests.unit.controlplane.conftest import state  # noqa: F401 (fixture)
from tests.unit.controlplane.service_support import OTHER, OWN, Service, make_service, sign_in

API = "/api/v1"
# Clear of the other tests' blocks (backup 23100-23199, controlplane 23500-23899) and of the VM
# suite's guest ports (24000-24999); split between xdist workers.
PORTS = workers.share(range(23200, 23300))


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


@pytest.fixture
def service(state: Path, monkeypatch: pytest.MonkeyPatch, county_db: Path,  # noqa: F811
            tmp_path: Path, made_repositories: Path) -> Iterator[tuple[Service, str]]:
    lay_repositories(made_repositories, state)
    port = free_port()
    monkeypatch.setenv("COUNTYCLOUD_BACKUP_REST_PORT", str(port))
    for cached in (bootstrap.settings, bootstrap.engine, bootstrap.platform):
        cached.cache_clear()
    for svc in make_service(os.environ["COUNTYCLOUD_DATABASE_URL"], state, real=True):
        records.place(svc.engine, OWN)
        records.mark_tenant(svc.engine, OWN, Lifecycle.ACTIVE, with_vms=True)
        (tmp_path / "scratch").mkdir()
        taken = ops.backup_now(bootstrap.platform(), OWN, sites=ops.BackupSites(rest_port=port),
                               producer=consistent.copy_argv(str(county_db), python=sys.executable,
                                                             scratch_dir=str(tmp_path / "scratch")))
        try:
            yield svc, taken.snapshot_id
        finally:
            restserver.stop(repository.site_backup(state, "secondary").rest_server(port))


def test_restore_points_per_role(service: tuple[Service, str]) -> None:
    svc, snapshot = service
    client = TestClient(svc.app)
    listed = client.get(f"{API}/tenants/{OWN}/restore-points", headers=svc.bearer("liaison"))
    assert listed.status_code == 200, listed.text
    [point] = listed.json()["points"]
    assert listed.json()["status"]["offsite_lag_s"] == 0 and listed.json()["status"]["points"] == 1
    assert point["snapshot_id"].startswith(snapshot) and point["primary"] and point["offsite"]
    assert int(point["figures"]["vouchers"]) == 60
    other = client.get(f"{API}/tenants/{OTHER}/restore-points", headers=svc.bearer("liaison"))
    assert other.status_code == 403
    for user in ("liaison", "auditor", "central"):
        assert client.post(f"{API}/tenants/{OWN}/backups", headers=svc.bearer(user)).status_code == 403
        assert client.post(f"{API}/tenants/{OWN}/restores", json={"mode": "in-place"},
                           headers=svc.bearer(user)).status_code == 403
    refused = client.post(f"{API}/tenants/{OWN}/restores", json={"mode": "sideways"},
                          headers=svc.bearer("oper"))
    assert refused.status_code == 422


def test_console_page_offers_what_the_role_may_do(service: tuple[Service, str]) -> None:
    svc, snapshot = service
    client = TestClient(svc.app)
    sign_in(client, "oper")
    page = client.get(f"/tenants/{OWN}/backups")
    assert page.status_code == 200 and snapshot[:8] in page.text
    assert "Offsite lag" in page.text and "no verification within" in page.text
    assert f'action="/tenants/{OWN}/backups/in-place"' in page.text
    assert f'action="/tenants/{OWN}/backups/verify"' in page.text
    sign_in(client, "liaison")
    page = client.get(f"/tenants/{OWN}/backups")
    assert page.status_code == 200 and snapshot[:8] in page.text
    assert "/backups/in-place" not in page.text and "/backups/now" not in page.text
    assert client.get(f"/tenants/{OTHER}/backups").status_code == 403


def test_metrics_per_county(service: tuple[Service, str]) -> None:
    svc, _ = service
    said = backup_metrics.refresh()
    assert any("no verification" in line for line in said)
    backup_metrics.metrics.add_registry(backup_metrics.REGISTRY)
    try:
        text = TestClient(svc.app).get("/metrics").text
    finally:
        backup_metrics.metrics.remove_registry(backup_metrics.REGISTRY)
    assert f'countycloud_backup_restore_points{{county="{OWN}"}} 1.0' in text
    assert f'countycloud_backup_offsite_lag_seconds{{county="{OWN}"}} 0.0' in text
    assert 'countycloud_backup_repository_readable{site="secondary"} 1.0' in text
    # the tier's interval, which BackupLagOverRPO compares the newest offsite point's age with
    assert f'countycloud_backup_rpo_objective_seconds{{county="{OWN}"}} 60.0' in text
    age = next(line for line in text.splitlines()
               if line.startswith(f'countycloud_backup_last_age_seconds{{county="{OWN}"}}'))
    assert 0 <= float(age.split()[-1]) < 300


def test_cli_lists_the_restore_points(service: tuple[Service, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from controlplane.cli import backup as backup_cli

    _, snapshot = service
    monkeypatch.setattr(backup_cli.console, "width", 200)  # the table whole, not cut to 80 columns
    app = typer.Typer()
    backup_cli.register(app)
    shown = CliRunner().invoke(app, ["backup", "list", OWN])
    assert shown.exit_code == 0, shown.output
    assert snapshot[:8] in shown.output and "offsite lag: 0.0 s, last verification: none" in shown.output
    unknown = CliRunner().invoke(app, ["backup", "list", "atlantis"])
    assert unknown.exit_code == 2, unknown.output
