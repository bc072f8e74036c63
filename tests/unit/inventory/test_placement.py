from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inventory.placement import HostLoad, Need, NoHostFits, choose_host, place_all

SMALL = Need(vcpus=1, memory_mb=1024, disk_mb=256)


def host(name: str, **kwargs: object) -> HostLoad:
    defaults: dict[str, object] = {"vcpus": 16, "memory_mb": 65536, "disk_gb": 500}
    defaults.update(kwargs)
    return HostLoad(name=name, **defaults)  # type: ignore[arg-type]


def test_fits_on_the_only_host_with_room() -> None:
    full = host("p1", used_memory_mb=65536 * 3 // 2)
    empty = host("p2")
    assert choose_host("vm", SMALL, [full, empty]).name == "p2"


def test_spreads_to_the_least_loaded_host() -> None:
    hosts = [host("p1", used_vcpus=8), host("p2", used_vcpus=2), host("p3", used_vcpus=4)]
    assert choose_host("vm", SMALL, hosts).name == "p2"


def test_ties_are_broken_by_name_so_placement_is_deterministic() -> None:
    hosts = [host("p3"), host("p1"), host("p2")]
    assert choose_host("vm", SMALL, hosts).name == "p1"


def test_place_all_spreads_evenly_over_equal_hosts() -> None:
    hosts = [host("p1"), host("p2"), host("p3")]
    placed = place_all([(f"vm{i}", SMALL) for i in range(12)], hosts)
    assert Counter(placed.values()) == {"p1": 4, "p2": 4, "p3": 4}


def test_cpu_overcommit_lets_more_vcpus_than_cores() -> None:
    small_host = host("p1", vcpus=2, cpu_ratio=4.0)
    # 2 cores × 4 = 8 vCPUs: seven are taken, one more fits, two do not.
    assert choose_host("vm", Need(1, 512, 0), [small_host.plus(Need(7, 0, 0))]).name == "p1"
    with pytest.raises(NoHostFits):
        choose_host("vm", Need(2, 512, 0), [small_host.plus(Need(7, 0, 0))])


def test_memory_overcommit_uses_the_ram_ratio() -> None:
    h = host("p1", memory_mb=4096, ram_ratio=1.5)  # 6144 MB offered
    assert choose_host("vm", Need(1, 6144, 0), [h]).name == "p1"
    with pytest.raises(NoHostFits):
        choose_host("vm", Need(1, 6145, 0), [h])


def test_disk_is_never_overcommitted() -> None:
    h = host("p1", disk_gb=1, used_disk_mb=1000)
    with pytest.raises(NoHostFits) as error:
        choose_host("vm", Need(1, 512, 100), [h])
    assert "needs 100 MB disk, 24 MB free of 1024 MB" in str(error.value)


def test_no_fit_explains_per_host_why() -> None:
    hosts = [
        host("p1", memory_mb=65536, ram_ratio=1.5, used_memory_mb=97792),
        host("p2", vcpus=1, cpu_ratio=1.0, used_vcpus=1),
    ]
    with pytest.raises(NoHostFits) as error:
        choose_host("keelung-accounting-1", Need(2, 2048, 0), hosts)
    message = str(error.value)
    assert "no host can take keelung-accounting-1" in message
    assert "host p1: needs 2048 MB, 512 MB free of 98304 MB (65536 MB × ratio 1.5)" in message
    assert "host p2: needs 2 vCPU, 0 free of 1 (1 × ratio 1)" in message
    assert error.value.reasons.keys() == {"p1", "p2"}


def test_no_hosts_at_all_is_explained() -> None:
    with pytest.raises(NoHostFits, match="the site has no hosts"):
        choose_host("vm", SMALL, [])


def test_place_all_counts_earlier_placements() -> None:
    # Room for exactly two 1-vCPU VMs in total: the third must be refused.
    hosts = [host("p1", vcpus=1, cpu_ratio=1.0), host("p2", vcpus=1, cpu_ratio=1.0)]
    with pytest.raises(NoHostFits) as error:
        place_all([("a", SMALL), ("b", SMALL), ("c", SMALL)], hosts)
    assert error.value.vm == "c"


@given(
    loads=st.lists(st.tuples(st.integers(0, 64), st.integers(0, 98304)), min_size=1, max_size=5),
    need_vcpus=st.integers(1, 8),
    need_memory=st.integers(256, 16384),
)
def test_choice_always_fits_and_is_the_least_loaded(
    loads: list[tuple[int, int]], need_vcpus: int, need_memory: int
) -> None:
    hosts = [host(f"h{i}", used_vcpus=v, used_memory_mb=m) for i, (v, m) in enumerate(loads)]
    need = Need(need_vcpus, need_memory, 0)
    try:
        chosen = choose_host("vm", need, hosts)
    except NoHostFits as error:
        assert all(h.shortfalls(need) for h in hosts)
        assert set(error.reasons) == {h.name for h in hosts}
        return
    assert not chosen.shortfalls(need)
    fitting = [h for h in hosts if not h.shortfalls(need)]
    assert chosen.load_with(need) == min(h.load_with(need) for h in fitting)
