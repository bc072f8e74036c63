"""The tenant address as data: golden haproxy.cfg, `haproxy -c` accepts it, refusals that explain."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from provisioning.gateway import Backend, Frontend, GatewayError, ServerToggle, render, runtime_toggles
from provisioning.haproxy import ServerState, _parse_show_proc, _parse_state

GOLDEN = Path(__file__).parent / "golden" / "haproxy.cfg"
GOLDEN_RUM = Path(__file__).parent / "golden" / "haproxy-rum.cfg"  # with the real-user request log
RUNTIME_SOCKET = Path("/var/lib/countycloud/haproxy/runtime.sock")


def sample() -> list[Frontend]:
    return [
        Frontend("keelung", 41001, [Backend("keelung-app", 42001)]),
        # A county with two app VMs (a tenant may run several): both served, both health-checked.
        Frontend("hsinchu-county", 41003, [Backend("hsinchu-county-app", 42011),
                                           Backend("hsinchu-county-app-b", 42111)]),
        # A county failed over: its fenced VM's server kept in maintenance.
        Frontend("kinmen", 41004, [Backend("kinmen-app", 42021, enabled=False)]),
        Frontend("penghu", 41002),  # provisioned address, no VM yet: 503 until it has one
    ]


def test_sample_renders_to_the_golden_file() -> None:
    assert render(sample(), RUNTIME_SOCKET) == GOLDEN.read_text()


def test_sample_with_the_request_log_renders_to_its_golden_file() -> None:
    assert render(sample(), RUNTIME_SOCKET, request_log=True) == GOLDEN_RUM.read_text()


def test_request_log_goes_into_a_ring_that_forwards_nothing() -> None:
    """Each frontend logs into the ring (no syscall per request) and the ring has no server: a
    forwarder is woken by every line; the service reads the ring through the runtime socket."""
    text = render(sample(), RUNTIME_SOCKET, request_log=True)
    sections = {next(line for line in block.splitlines() if not line.startswith("#")): block
                for block in text.split("\n\n")}
    assert "log ring@rum len 4096 format raw local0 info info" in text
    ring = sections["ring rum"]
    assert "size 4194304" in ring and "format raw" in ring
    assert not [line for line in ring.splitlines() if line.split()[:1] == ["server"]]
    assert "unix@" not in text.replace(f"stats socket {RUNTIME_SOCKET}", "")  # no other socket
    assert text.count("capture response header Server-Timing len 120") == len(sample())  # every county
    assert "rum" not in render(sample(), RUNTIME_SOCKET)  # off: no ring, no log


def test_order_of_frontends_does_not_change_the_text() -> None:
    assert render(list(reversed(sample())), RUNTIME_SOCKET) == render(sample(), RUNTIME_SOCKET)


def test_servers_going_in_or_out_of_maintenance_need_no_reload_and_anything_else_does() -> None:
    served = render(sample(), RUNTIME_SOCKET)

    others = [frontend for frontend in sample() if frontend.tenant != "kinmen"]

    def with_kinmen(*backends: Backend) -> str:
        return render([*others, Frontend("kinmen", 41004, backends)], RUNTIME_SOCKET)

    switched = with_kinmen(Backend("kinmen-app", 42021))  # the failover's switch
    assert runtime_toggles(served, switched) == [ServerToggle("be_kinmen", "kinmen-app", enabled=True)]
    assert runtime_toggles(switched, served) == [ServerToggle("be_kinmen", "kinmen-app", enabled=False)]
    assert runtime_toggles(served, served) == []
    two_fenced = render([Frontend("keelung", 41001, [Backend("keelung-app", 42001, enabled=False)]),
                         *sample()[1:]], RUNTIME_SOCKET)
    assert runtime_toggles(switched, two_fenced) == [
        ServerToggle("be_keelung", "keelung-app", enabled=False),
        ServerToggle("be_kinmen", "kinmen-app", enabled=False)]
    for needs_reload in (with_kinmen(Backend("kinmen-app", 42022)),  # another port
                         with_kinmen(Backend("kinmen-app-2", 42021, enabled=False)),  # another server
                         with_kinmen(),  # a server gone
                         render(others, RUNTIME_SOCKET),  # a county gone
                         render(sample(), RUNTIME_SOCKET, request_log=True)):  # anything else
        assert runtime_toggles(served, needs_reload) is None


@pytest.mark.skipif(shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists(),
                    reason="haproxy not installed")
@pytest.mark.parametrize("golden", [GOLDEN, GOLDEN_RUM], ids=["plain", "request_log"])
def test_haproxy_accepts_the_golden_file(golden: Path) -> None:
    result = subprocess.run(["/usr/sbin/haproxy", "-c", "-f", str(golden)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stdout + result.stderr  # e.g. an HTTP option left on the TCP relay


@pytest.mark.parametrize(
    ("frontends", "message"),
    [
        ([Frontend("a", 41001), Frontend("b", 41001)], "port 41001 is the address of both a and b"),
        ([Frontend("a", 41001), Frontend("a", 41002)], "tenant a has two frontends"),
        ([Frontend("a", 41001, [Backend("a-app", 41002)]), Frontend("b", 41002)],
         "points at port 41002, which is the gateway's own address for b"),
    ],
)
def test_conflicting_frontends_are_refused_with_the_reason(frontends: list[Frontend], message: str) -> None:
    with pytest.raises(GatewayError, match=message):
        render(frontends, RUNTIME_SOCKET)


def test_bad_names_ports_and_duplicate_servers_are_refused() -> None:
    with pytest.raises(GatewayError, match="tenant 'Keelung City'"):
        Frontend("Keelung City", 41001)
    with pytest.raises(GatewayError, match="port 70000"):
        Frontend("keelung", 70000)
    with pytest.raises(GatewayError, match="port 0"):
        Backend("keelung-app", 0)
    with pytest.raises(GatewayError, match="duplicate backend names"):
        Frontend("keelung", 41001, [Backend("x", 42001), Backend("x", 42002)])


def test_show_proc_parsing_separates_current_and_old_workers() -> None:
    text = (
        "#<PID>          <type>          <reloads>       <uptime>        <version>\n"
        "100             master          3 [failed: 1]   0d00h01m00s     2.6.12\n"
        "# workers\n"
        "130             worker          0               0d00h00m01s     2.6.12\n"
        "# old workers\n"
        "120             worker          1               0d00h00m30s     2.6.12\n"
        "# programs\n\n"
    )
    procs = _parse_show_proc(text)
    assert (procs.master, procs.failed_reloads, procs.workers) == (100, 1, (130,))


@pytest.mark.parametrize(("raw", "state"), [("UP", ServerState.UP), ("DOWN 1/2", ServerState.DOWN),
                                            ("UP 1/3", ServerState.UP), ("MAINT", ServerState.MAINT),
                                            ("no check", ServerState.OTHER), ("DRAIN", ServerState.OTHER)])
def test_server_state_words(raw: str, state: ServerState) -> None:
    assert _parse_state(raw) == state
