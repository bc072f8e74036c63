"""backup.repository and the REST server's addressing, without running anything."""

from __future__ import annotations

import os
from pathlib import Path

from backup import repository, restserver


def test_site_layout_keeps_the_password_outside_what_is_served(tmp_path: Path) -> None:
    secondary = repository.site_backup(tmp_path, "secondary")
    assert secondary.root == tmp_path / "sites" / "secondary" / "backup"
    password = repository.ensure_password(secondary)
    assert os.stat(password).st_mode & 0o777 == 0o600
    assert not password.is_relative_to(secondary.served)
    # made once: a second call keeps the same password
    first = password.read_text()
    repository.ensure_password(secondary)
    assert password.read_text() == first and len(first.strip()) >= 32


def test_pair_reaches_the_primary_by_path_and_the_offsite_over_rest_on_loopback(tmp_path: Path) -> None:
    pair = repository.pair(tmp_path, "primary", "secondary", 23000)
    primary_dir = tmp_path / "sites" / "primary" / "backup" / "repositories" / "countycloud"
    assert pair.primary.location == str(primary_dir)
    assert pair.offsite.location == "rest:http://127.0.0.1:23000/countycloud"
    assert pair.offsite_server.root == tmp_path / "sites" / "secondary" / "backup" / "repositories"
    assert pair.primary.password_file != pair.offsite.password_file


def test_the_server_binds_loopback_only(tmp_path: Path) -> None:
    server = repository.site_backup(tmp_path, "secondary").rest_server(23000)
    for program in restserver.ServerProgram:
        argv = restserver._argv(server, program)
        assert "127.0.0.1:23000" in argv
        assert not any(arg.startswith(("0.0.0.0", ":")) for arg in argv)
    assert restserver.DEFAULT_PORT == 23000
    # nothing listens for this folder: the state says so without raising
    assert restserver.pid(server) is None
