"""Host-port allocation (pure): hand out free ports from a range, never one already in use.

Guests' forwards (SSH, app) take ports from the guest range; each tenant's address (its gateway
frontend) takes one from the gateway range. The defaults mirror controlplane.settings; the control
plane passes the configured ranges down.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from inventory.errors import InventoryError


class PortsExhausted(InventoryError):
    """Not enough free ports left in a range."""


@dataclass(frozen=True)
class PortRange:
    first: int
    last: int
    purpose: str = "ports"

    def __post_init__(self) -> None:
        if not 1 <= self.first <= self.last <= 65535:
            raise ValueError(f"invalid {self.purpose} range {self.first}-{self.last}")

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.purpose} {self.first}-{self.last}"


@dataclass(frozen=True)
class PortRanges:
    guest: PortRange = PortRange(22000, 22999, "guest ports")
    gateway: PortRange = PortRange(21000, 21999, "gateway ports")


def allocate(count: int, port_range: PortRange, used: Iterable[int]) -> list[int]:
    """The `count` lowest ports of `port_range` not in `used`, ascending; PortsExhausted if too few.

    Lowest-first keeps allocation deterministic, so a plan, a test and a rerun see the same ports.
    """
    if count < 0:
        raise ValueError("count must not be negative")
    taken = set(used)
    free: list[int] = []
    for port in range(port_range.first, port_range.last + 1):
        if len(free) == count:
            break
        if port not in taken:
            free.append(port)
    if len(free) < count:
        in_use = sum(1 for port in taken if port_range.first <= port <= port_range.last)
        raise PortsExhausted(
            f"{port_range}: {count} port(s) needed, only {len(free)} free "
            f"({in_use} of {port_range.size} in use); widen the range in the settings "
            "or retire tenants that are no longer needed"
        )
    return free
