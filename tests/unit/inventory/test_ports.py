from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inventory.ports import PortRange, PortRanges, PortsExhausted, allocate

GUEST = PortRange(42000, 42009, "guest ports")


def test_allocates_lowest_free_ports_never_a_used_one() -> None:
    used = {42000, 42002, 42003}
    ports = allocate(3, GUEST, used)
    assert ports == [42001, 42004, 42005]
    assert not set(ports) & used


def test_ports_outside_the_range_do_not_count_as_used() -> None:
    assert allocate(2, GUEST, {41000, 80}) == [42000, 42001]


def test_exhausted_range_says_how_many_were_needed_and_free() -> None:
    used = set(range(42000, 42008))
    with pytest.raises(PortsExhausted) as error:
        allocate(3, GUEST, used)
    message = str(error.value)
    assert "guest ports 42000-42009" in message
    assert "3 port(s) needed, only 2 free" in message
    assert "8 of 10 in use" in message


def test_zero_ports_is_an_empty_allocation() -> None:
    assert allocate(0, GUEST, set(range(42000, 42010))) == []


def test_invalid_range_is_refused() -> None:
    with pytest.raises(ValueError):
        PortRange(5000, 4000)


def test_default_ranges_match_the_settings() -> None:
    ranges = PortRanges()
    assert (ranges.guest.first, ranges.guest.last) == (22000, 22999)
    assert (ranges.gateway.first, ranges.gateway.last) == (21000, 21999)


@given(
    used=st.sets(st.integers(min_value=41990, max_value=42020), max_size=15),
    count=st.integers(min_value=0, max_value=12),
)
def test_allocation_never_collides_and_is_exact(used: set[int], count: int) -> None:
    free_in_range = GUEST.size - len({p for p in used if GUEST.first <= p <= GUEST.last})
    if count > free_in_range:
        with pytest.raises(PortsExhausted):
            allocate(count, GUEST, used)
        return
    ports = allocate(count, GUEST, used)
    assert len(ports) == len(set(ports)) == count
    assert not set(ports) & used
    assert all(GUEST.first <= port <= GUEST.last for port in ports)
    assert ports == sorted(ports)
