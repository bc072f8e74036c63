"""Stopping the primary site is a real outage that leaves the secondary serving."""

from __future__ import annotations

import pytest

from provisioning.address import healthy
from tests.integration.vm.conftest import Cloud

pytestmark = [pytest.mark.vm, pytest.mark.outage]


def test_primary_outage_leaves_the_secondary_untouched(cloud: Cloud, keelung: str) -> None:
    cloud.create("kinmen")  # at the secondary site
    primary_port, secondary_port = cloud.address(keelung), cloud.address("kinmen")
    assert healthy(primary_port) and healthy(secondary_port)
    cloud.cli("site", "stop", "primary")
    try:
        sites = {site["site"]: site for site in cloud.json("site", "list")}
        assert sites["primary"]["state"] == "down"
        assert sites["secondary"]["state"] == "up" and "kinmen-accounting-1" in sites["secondary"]["domains"]
        assert not healthy(primary_port), "the primary's county went down with its site"
        assert healthy(secondary_port), "the secondary's county kept serving"
        refused = cloud.cli("tenant", "create", "taichung", check=False)
        assert refused.returncode == 1 and "site primary is down" in refused.stderr
    finally:
        cloud.cli("site", "start", "primary")
