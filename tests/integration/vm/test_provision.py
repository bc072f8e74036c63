"""A county provisioned on a real VM, reached through its own HAProxy address."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from tests.integration.vm.conftest import INVENTORY, Cloud, needs_clones

pytestmark = pytest.mark.vm


@needs_clones
def test_county_serves_through_its_address_from_a_template_clone(cloud: Cloud, keelung: str) -> None:
    shown = cloud.json("tenant", "show", keelung)
    assert shown["status"] == "active"
    assert cloud.serving(keelung)
    port = cloud.address(keelung)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as answer:
        assert answer.status == 200
        # The app reports its own time, which probes use to split network from server time.
        assert "app;dur=" in answer.headers["Server-Timing"]
    # Its provision job (other tests, the backup test's restores among them, may have run since).
    job = next(job for job in cloud.json("job", "list", "--target", keelung) if job["kind"] == "provision")
    steps = {step["name"]: step for step in cloud.json("job", "show", job["id"])["steps"]}
    assert all(step["status"] == "succeeded" for step in steps.values())
    assert "cloned the template state" in steps["keelung-accounting-1:start"]["output"]
    assert "activation requested" in steps["keelung-accounting-1:identity"]["output"]
    # The guest already serves with the declared settings (its seed's), so Ansible is not run.
    assert steps["configure"]["output"].startswith("skipped: settings digest matches for 1 VM(s)")


def test_county_vm_has_its_own_identity_and_settings(cloud: Cloud, keelung: str) -> None:
    assert cloud.exec(keelung, "hostname").strip() == "keelung-accounting-1"
    settings = cloud.exec(keelung, "cat /etc/tenant-app.env")
    assert "TENANT_APP_COUNTY_ID=keelung" in settings
    assert "TENANT_APP_COUNTY_NAME=基隆市" in settings
    # The county's database lives on its data disk, not on the disposable system disk.
    assert "/srv/tenant-data" in cloud.exec(keelung, "findmnt -n -o TARGET LABEL=ccdata")
    assert cloud.exec(keelung, "test -s /srv/tenant-data/tenant.db && echo present").strip() == "present"


def test_live_resize_is_seen_inside_the_guest(cloud: Cloud, keelung: str) -> None:
    mem_total = "awk '/MemTotal/ {print $2}' /proc/meminfo"
    before_kib = int(cloud.exec(keelung, mem_total))
    cloud.cli("tenant", "resize", keelung, "--vcpus", "2", "--memory", "768")
    assert cloud.exec(keelung, "nproc").strip() == "2"
    total_kib = int(cloud.exec(keelung, mem_total))
    # 1024 -> 768 MiB: the balloon takes 256 MiB. (MemTotal is less than the size by what the kernel
    # keeps for itself, which grows with the VM's maximum: 4 GiB for a cold-booted one.)
    assert total_kib <= 768 * 1024
    assert abs((before_kib - total_kib) - 256 * 1024) <= 4 * 1024, (before_kib, total_kib)
    vm = cloud.json("tenant", "show", keelung)["vms"][0]
    assert (vm["vcpus"], vm["memory_mb"]) == (2, 768)
    # Beyond the maximum fixed when the template was saved: refused, the VM untouched.
    # Refused before any job exists (issue 14, item 9): exit 2, and no failed job blocks the next.
    jobs_before = len(cloud.json("job", "list", "--target", f"{keelung}-accounting-1"))
    refused = cloud.cli("tenant", "resize", keelung, "--vcpus", "8", "--memory", "768", check=False)
    assert refused.returncode == 2
    assert "possible live" in refused.stderr
    assert len(cloud.json("job", "list", "--target", f"{keelung}-accounting-1")) == jobs_before
    assert cloud.exec(keelung, "nproc").strip() == "2"
    cloud.cli("tenant", "resize", keelung, "--memory", "704")  # the next valid resize goes ahead
    vm = cloud.json("tenant", "show", keelung)["vms"][0]
    assert (vm["vcpus"], vm["memory_mb"]) == (2, 704)


def test_changed_settings_converge_with_ansible(cloud: Cloud, keelung: str, tmp_path: Path) -> None:
    declared = INVENTORY.read_text(encoding="utf-8").replace(
        "{slug: keelung, name: 基隆市, site: primary,",
        "{slug: keelung, name: 基隆市, site: primary, settings: {county_name: 基隆市政府},")
    changed = tmp_path / "counties.yaml"
    changed.write_text(declared, encoding="utf-8")
    cloud.cli("inventory", "apply", str(changed))
    cloud.cli("tenant", "configure", keelung)
    assert "TENANT_APP_COUNTY_NAME=基隆市政府" in cloud.exec(keelung, "cat /etc/tenant-app.env")
    assert cloud.serving(keelung)
    # The converge restarted the app, and so its launcher: the guest's clock stays the host's (the
    # activation request's time is taken once; it had set the clock back to the activation).
    asked = time.time()
    guest_time = float(cloud.exec(keelung, "date +%s.%N"))
    assert asked - 5 < guest_time < time.time() + 5, f"guest clock {guest_time - asked:+.1f} s off"
    job = next(job for job in cloud.json("job", "list", "--target", keelung) if job["kind"] == "configure")
    steps = {step["name"]: step for step in cloud.json("job", "show", job["id"])["steps"]}
    assert "converged 1 VM(s)" in steps["configure"]["output"]
    run_dir = Path(steps["configure"]["output"].strip().rsplit("run folder ", 1)[1])
    assert (run_dir / "artifacts").is_dir(), "each playbook run's folder is kept with its job"


APP_USER = "tenant-app"
AUDIT_COUNT = (
    "setpriv --reuid=tenant-app --regid=tenant-app --clear-groups /opt/tenant-app/venv/bin/python -c "
    "\"import sqlite3; db = sqlite3.connect('file:/srv/tenant-data/tenant.db?mode=ro', uri=True); "
    "print(db.execute('select count(*) from audit_event where action = ?', "
    "('auth.login_failed',)).fetchone()[0])\""
)


def test_county_app_serves_as_an_unprivileged_user_and_writes_its_database(cloud: Cloud,
                                                                            keelung: str) -> None:
    listening = cloud.exec(keelung, "ss -Hltnp 'sport = :8080'")
    pids = re.findall(r"pid=(\d+)", listening)
    assert pids, f"nothing listens on the app's port: {listening!r}"
    app_uid = int(cloud.exec(keelung, f"id -u {APP_USER}").strip())
    assert app_uid != 0
    for pid in set(pids):
        lines = cloud.exec(keelung, f"cat /proc/{pid}/status").splitlines()
        status = dict(line.split(":", 1) for line in lines if ":" in line)
        # Real, effective, saved and file-system ids: none of them root, so root cannot be taken back.
        assert [int(uid) for uid in status["Uid"].split()] == [app_uid] * 4, status["Uid"]
        assert 0 not in [int(gid) for gid in status["Gid"].split()], status["Gid"]
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
        assert status["Groups"].strip() == ""
    owners = cloud.exec(keelung, "stat -c '%U %n' /srv/tenant-data /srv/tenant-data/tenant.db")
    assert owners.split() == [APP_USER, "/srv/tenant-data", APP_USER, "/srv/tenant-data/tenant.db"]
    # The settings hold the app's secret: readable by its group, not by anyone.
    assert cloud.exec(keelung, "stat -c '%a %U %G' /etc/tenant-app.env").split() == ["640", "root", APP_USER]

    # The app still writes its database: a failed log-in through the county's address is audited
    # (a read-only or unreadable database would answer 500, or nothing).
    before = int(cloud.exec(keelung, AUDIT_COUNT).strip())
    with httpx.Client(base_url=f"http://127.0.0.1:{cloud.address(keelung)}", timeout=30) as client:
        form = client.get("/login")
        assert form.status_code == 200
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token, "the log-in form has no CSRF field"
        refused = client.post("/login", data={"username": "nobody-here", "password": "wrong-password",
                                              "csrf_token": token.group(1), "next": "/"})
    assert refused.status_code == 401, refused.text[:500]
    assert int(cloud.exec(keelung, AUDIT_COUNT).strip()) == before + 1
