"""`countycloud serve --background` / `--stop` as real processes: the first start's admin password
file (0600, never in the log), the pid file, a second start refused, sign-in with that password."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controlplane", *args], env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=120, check=False)


@pytest.mark.timeout(300)
def test_serve_in_the_background_then_stop(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "COUNTYCLOUD_STATE_DIR": str(tmp_path), "COUNTYCLOUD_SERVICE_PORT": str(port),
           "COUNTYCLOUD_SERVICE_OPERATIONS": "tests.support.fake_service_operations",
           "PYTHONPATH": str(REPO)}
    started = _cli(env, "serve", "--background")
    try:
        assert started.returncode == 0, started.stderr + started.stdout
        password_file = tmp_path / "admin-password"
        assert str(password_file) in started.stdout.replace("\n", "")
        assert password_file.stat().st_mode & 0o777 == 0o600
        name, password = password_file.read_text().split()
        assert password not in started.stdout
        pid = int((tmp_path / "service.pid").read_text())
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
        assert httpx.get(f"{base}/api/v1/sites", timeout=5).status_code == 401
        with httpx.Client(base_url=base, timeout=10, follow_redirects=True) as browser:
            browser.get("/login")
            signed = browser.post("/login", data={"username": name, "password": password, "next": "/",
                                                  "csrf": browser.cookies["cc_login_csrf"]})
            assert signed.status_code == 200 and "keelung" in signed.text
        again = _cli(env, "serve", "--background")
        assert again.returncode == 1 and f"pid {pid}" in again.stderr
    finally:
        stopped = _cli(env, "serve", "--stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not (tmp_path / "service.pid").exists()
    assert not Path(f"/proc/{pid}").exists() or b"serve" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert password not in (tmp_path / "service.log").read_text()
    # The second start finds the admin and writes no new password.
    assert password_file.read_text().split()[1] == password


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("ports", "said"), [
    ('{"primary": 23000}', "sites primary and secondary have the same backup REST port 23000"),
    ('{"primary": 22010}', "site primary's backup REST port 22010 is in the guest ports (22000-22999)"),
    ('{"primary": 99999}', "site primary's backup REST port 99999 is not an unprivileged port"),
])
def test_serve_refuses_backup_ports_the_sites_cannot_all_listen_on(tmp_path: Path, ports: str,
                                                                   said: str) -> None:
    env = {**os.environ, "COUNTYCLOUD_STATE_DIR": str(tmp_path),
           "COUNTYCLOUD_SERVICE_PORT": str(_free_port()),
           "COUNTYCLOUD_SERVICE_OPERATIONS": "tests.support.fake_service_operations",
           "COUNTYCLOUD_BACKUP_REST_PORT": "23000", "COUNTYCLOUD_BACKUP_REST_PORTS": ports,
           "PYTHONPATH": str(REPO)}
    refused = _cli(env, "serve", "--background")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert said in " ".join(refused.stderr.split()) and "Traceback" not in refused.stderr
    # nothing started: no pid file, no first admin
    assert not (tmp_path / "service.pid").exists() and not (tmp_path / "admin-password").exists()
