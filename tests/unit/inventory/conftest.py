"""Fixtures for the inventory tests: a migrated database and small declarations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from inventory.db import make_engine, migrate
from inventory.loader import sample_path

SMALL_DECLARATION = """\
sites:
  - name: primary
    role: primary
    hosts:
      - {name: p1, vcpus: 4, memory_mb: 8192, disk_gb: 100}
      - {name: p2, vcpus: 4, memory_mb: 8192, disk_gb: 100}
  - name: secondary
    role: secondary
    hosts:
      - {name: s1, vcpus: 4, memory_mb: 8192, disk_gb: 100}
size_templates:
  - {name: small, vcpus: 1, memory_mb: 1024, data_disk_mb: 256}
  - {name: medium, vcpus: 2, memory_mb: 2048, data_disk_mb: 1024}
networks:
  - {name: tenant-user, kind: user}
images:
  - {name: bookworm-tenant}
tenants:
  - slug: keelung
    name: 基隆市
    site: primary
    network: tenant-user
    image: bookworm-tenant
    vms:
      - {role: accounting, size: small}
      - {role: database, size: small}
  - slug: penghu
    name: 澎湖縣
    site: primary
    network: tenant-user
    image: bookworm-tenant
    vms:
      - {role: accounting, size: small}
"""


@pytest.fixture
def small_text() -> str:
    return SMALL_DECLARATION


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    migrate(sqlite_url)
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def demo_path() -> Path:
    return sample_path()
