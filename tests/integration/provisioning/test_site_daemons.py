"""A site's real libvirtd, started by `sites.start`, has probed QEMU before anything asks it to.

A fresh site folder has no capabilities cache: without the warm-up the first file would appear only
when a domain is defined or started there, and that start would wait for QEMU's probe (4 s here).
Boots nothing.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from provisioning import sites

PROBE_WITHIN_S = 60.0  # 4 s measured on a quiet machine; the suite's VMs may run beside it


@pytest.fixture
def site() -> Iterator[sites.SitePaths]:
    if shutil.which("libvirtd") is None or shutil.which("virsh") is None:
        pytest.skip("libvirt is not installed (scripts/host-setup.sh installs it)")
    # Short: the site's libvirt socket path must fit a unix socket address (108 bytes).
    folder = Path(tempfile.mkdtemp(prefix="sdw-"))
    paths = sites.site_paths(folder, "secondary")
    try:
        yield paths
    finally:
        sites.stop(paths)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_started_site_probes_qemu_by_itself(site: sites.SitePaths) -> None:
    began = time.time()
    sites.start(site)
    cache = sites.capabilities_cache(site)
    deadline = time.monotonic() + PROBE_WITHIN_S
    probed: list[Path] = []
    while not probed and time.monotonic() < deadline:
        probed = [p for p in cache.glob("*.xml") if p.stat().st_mtime >= began and p.stat().st_size > 0]
        time.sleep(0.2)
    assert probed, f"no QEMU capabilities cached in {cache} within {PROBE_WITHIN_S:.0f} s of the start"
    # What a clone's restore asks for first now comes from the cache, not from a probe.
    connection = libvirt.open(site.uri)
    try:
        asked = time.monotonic()
        connection.getDomainCapabilities(None, None, None, "qemu")
        assert time.monotonic() - asked < 1.0
    finally:
        connection.close()
