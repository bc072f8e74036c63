"""pytest-xdist workers (scripts/test.sh runs the fast tests in two): a fixed block of ports is split
between them, so two workers never pick the same port in the instant between probing and binding."""

from __future__ import annotations

import os


def index() -> int:
    """0 for the first worker ("gw0") and for a run without xdist."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def count() -> int:
    return max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def share(block: range) -> range:
    """This worker's consecutive part of `block` (the whole block without xdist)."""
    size = len(block) // count()
    start = block.start + index() * size
    return range(start, start + size)
