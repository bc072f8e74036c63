"""Backups on a real county VM (issue 12): an acknowledged certification is backed up (the guest's
online-backup copy over its SSH forward into restic, copied to the secondary's REST server), the
restore point is verified on a clone at the secondary, and an in-place restore brings the county back
to it: the certification acknowledged before the backup is there, the one made after it is not.

Lean on purpose: it shares the suite's `keelung` and runs each job once."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backup import repository, restserver
from tests.integration.vm.conftest import STATE_DIR, Cloud

pytestmark = pytest.mark.vm

# The secondary's REST server for this test: one of the ports kept for backup servers (23000-23009;
# the bench uses 23009), clear of the VM suite's guest ports (24000-24999).
REST_PORT = 23008
APP = ("runuser -u tenant-app -- env PYTHONPATH=/opt/tenant-app/src /opt/tenant-app/venv/bin/python "
       "-m tenant_app --settings-file /etc/tenant-app.env")


@pytest.fixture(scope="module")
def backups(cloud: Cloud) -> Iterator[Cloud]:
    server = repository.site_backup(STATE_DIR, "secondary").rest_server(REST_PORT)
    restserver.stop(server)
    for site in ("primary", "secondary"):  # repositories of an earlier run would hold its points
        shutil.rmtree(repository.site_backup(STATE_DIR, site).root, ignore_errors=True)
    own = Cloud(env={**cloud.env, "COUNTYCLOUD_BACKUP_REST_PORT": str(REST_PORT)})
    yield own
    restserver.stop(server)


def certify(cloud: Cloud, county: str, token: str, lines: range) -> tuple[int, int]:
    """One acknowledged certification of 1 元 (201 and its id) on the first line that takes it."""
    with httpx.Client(base_url=f"http://127.0.0.1:{cloud.address(county)}", timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        said = []
        for line in lines:
            answer = client.post("/api/v1/certifications", json={"budget_line_id": line, "amount": 1})
            if answer.status_code == 201:
                return line, int(answer.json()["id"])
            said.append(f"{line}: {answer.status_code}")
    raise AssertionError(f"no line took a certification: {', '.join(said[-5:])}")


def certification_ids(cloud: Cloud, county: str, token: str, line: int) -> set[int]:
    with httpx.Client(base_url=f"http://127.0.0.1:{cloud.address(county)}", timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        answer = client.get("/api/v1/certifications", params={"budget_line_id": line})
    assert answer.status_code == 200, answer.text[:300]
    return {int(item["id"]) for item in answer.json()}


def points(cloud: Cloud, county: str) -> list[dict[str, Any]]:
    listed = cloud.json("backup", "list", county)
    assert listed["unreachable"] == {}
    return list(listed["points"])


def test_backup_verify_and_restore_in_place_keep_what_was_acknowledged(backups: Cloud, keelung: str) -> None:
    backups.exec(keelung, f"{APP} generate 20")
    token = backups.exec(keelung, f"{APP} token fin-clerk").strip().splitlines()[-1]
    line, before = certify(backups, keelung, token, range(1, 80))

    backups.cli("backup", "now", keelung)
    [point] = points(backups, keelung)
    assert point["primary"] and point["offsite"] and not point["verified"]
    assert point["bytes"] and int(point["figures"]["vouchers"]) >= 20
    assert point["figures"]["journal"] == "balanced"

    backups.cli("backup", "verify", keelung, "--snapshot", point["short_id"])
    [verified] = points(backups, keelung)
    assert verified["verified"] and verified["snapshot_id"] == point["snapshot_id"]

    _, after = certify(backups, keelung, token, range(line, line + 1))
    assert {before, after} <= certification_ids(backups, keelung, token, line)
    backups.cli("backup", "restore", keelung, "--in-place", "--snapshot", point["short_id"])
    assert backups.serving(keelung, within_s=120)
    ids = certification_ids(backups, keelung, token, line)
    assert before in ids, "a certification acknowledged before the backup is lost"
    assert after not in ids, "the county was not brought back to the restore point"
