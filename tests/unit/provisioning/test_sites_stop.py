"""`site stop` kills only its own site's processes, whatever its stale pid and namespace files say."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning import sites


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """A process of no site at all, standing in for another site's daemon that reused a pid."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def test_a_stale_pid_file_naming_another_process_kills_nothing(tmp_path: Path,
                                                                bystander: subprocess.Popen[bytes]) -> None:
    site = sites.site_paths(tmp_path, "primary")
    (site.root / "run" / "qemu").mkdir(parents=True)
    for pidfile in (site.libvirtd_pidfile, site.virtlogd_pidfile, site.root / "run" / "qemu" / "old.pid"):
        pidfile.write_text(f"{bystander.pid}\n")
    assert sites.state(site) is sites.SiteState.DOWN
    assert sites.stop(site) == []
    assert bystander.poll() is None


def test_a_stale_namespace_file_naming_a_reused_namespace_kills_nothing(tmp_path: Path) -> None:
    site = sites.site_paths(tmp_path, "primary")
    site.root.mkdir(parents=True)
    # The bystander in a mount namespace of its own, as another site's daemons are.
    other = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "60"])
    try:
        namespace = ""
        for _ in range(100):
            namespace = os.readlink(f"/proc/{other.pid}/ns/mnt")
            if namespace != os.readlink("/proc/self/ns/mnt"):
                break
            os.sched_yield()
        site.namespace_file.write_text(namespace)
        assert sites.stop(site) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


class _Stopped(Exception):
    pass


def test_starting_a_site_whose_daemons_died_keeps_its_running_guests(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Daemons killed under running VMs: `site start` restarts the daemons and kills no guest (libvirt
    takes them back); `site stop`, the outage, kills both."""
    site = sites.site_paths(tmp_path, "primary")
    killed: list[set[int]] = []

    def kill(_site: sites.SitePaths, pids: set[int]) -> list[int]:
        killed.append(set(pids))
        raise _Stopped  # what start does next needs real daemons

    monkeypatch.setattr(sites, "state", lambda _site: sites.SiteState.DOWN)
    monkeypatch.setattr(sites, "qemu_pids", lambda _site: {2002})
    monkeypatch.setattr(sites, "_site_pid", lambda _site, _pidfile: 1001)
    monkeypatch.setattr(sites, "_is_qemu", lambda pid: pid == 2002)
    monkeypatch.setattr(sites, "_kill", kill)
    with pytest.raises(_Stopped):
        sites.start(site)
    with pytest.raises(_Stopped):
        sites.stop(site)
    assert killed == [{1001}, {1001, 2002}]
