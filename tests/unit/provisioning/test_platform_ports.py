"""Forward port ranges must stay out of the kernel's ephemeral range (seen: a county's SSH forward
found its port held by an unrelated outgoing connection)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.platform import check_port_range, ephemeral_ports

EPHEMERAL = range(32768, 61000)


def test_reads_the_kernels_ephemeral_range(tmp_path: Path) -> None:
    proc = tmp_path / "ip_local_port_range"
    proc.write_text("32768\t60999\n")
    assert ephemeral_ports(proc) == EPHEMERAL


@pytest.mark.parametrize(("first", "last"), [(22000, 22999), (21000, 21999), (61000, 61999)])
def test_ranges_outside_the_ephemeral_ports_are_accepted(first: int, last: int) -> None:
    check_port_range(first, last, "guest ports", EPHEMERAL)


@pytest.mark.parametrize(("first", "last"), [(42000, 42999), (32000, 32768), (60999, 61500)])
def test_ranges_touching_the_ephemeral_ports_are_refused(first: int, last: int) -> None:
    with pytest.raises(ValueError, match="overlap Linux's ephemeral ports 32768-60999"):
        check_port_range(first, last, "guest ports", EPHEMERAL)


@pytest.mark.parametrize(("first", "last"), [(80, 90), (23000, 22000), (65000, 70000)])
def test_nonsense_ranges_are_refused(first: int, last: int) -> None:
    with pytest.raises(ValueError, match="not a range of unprivileged ports"):
        check_port_range(first, last, "gateway ports", EPHEMERAL)
