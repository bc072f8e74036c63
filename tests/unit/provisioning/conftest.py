"""Fixtures for the provisioning unit tests."""

from __future__ import annotations

import pytest

from provisioning.spec import VMSpec
from tests.unit.provisioning.specs import keelung_spec


@pytest.fixture
def spec() -> VMSpec:
    return keelung_spec()
