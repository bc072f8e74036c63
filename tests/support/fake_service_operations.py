"""The fake use-case backend as a module, for a real `countycloud serve` process in tests
(COUNTYCLOUD_SERVICE_OPERATIONS=tests.support.fake_service_operations): counties are created as
recorded jobs that a test may run with fake steps, never as VMs. Seeds the demo inventory."""

from __future__ import annotations

from functools import cache
from typing import Any

from controlplane import bootstrap
from inventory import declare
from inventory.db import session_scope
from inventory.loader import load_sample
from tests.unit.controlplane.fake_operations import FakeOperations


@cache
def _backend() -> FakeOperations:
    engine = bootstrap.engine()
    with session_scope(engine) as session:
        declare.apply(session, load_sample(), actor="test")
    return FakeOperations(engine)


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(_backend(), name)
