"""The tenant address as data: golden haproxy.cfg, `haproxy -c` accepts it, refusals that explain."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from provisioning.gateway import Backend, Frontend, GatewayError, render
from provisioning.haproxy import ServerState, _parse_show_proc, _parse_state

GOLDEN = Path(__file__).parent / "golden" / "haproxy.cfg"
GOLDEN_RUM = Path(__file__).parent / "golden" / "haproxy-rum.cfg"  # with the real-user request log
RUNTIME_SOCKET = Path("/var/lib/countycloud/haproxy/runtime.sock")
RUM_SOCKET = Path("/var/lib/countycloud/haproxy/rum.sock")


def sample() -> list[Frontend]:
    return [
        Frontend("keelung", 41001, [Backend("keelung-app", 42001)]),
        # A county with two app VMs (a tenant may run several): both served, both health-checked.
        Frontend("hsinchu-county", 41003, [Backend("hsinchu-county-app", 42011),
                                           Backend("hsinchu-county-app-b", 42111)]),
        Frontend("penghu", 41002),  # provisioned address, no VM yet: 503 until it has one
    ]


def test_sample_renders_to_the_golden_file() -> None:
    assert render(sample(), RUNTIME_SOCKET) == GOLDEN.read_text()


def test_sample_with_the_request_log_renders_to_its_golden_file() -> None:
    assert render(sample(), RUNTIME_SOCKET, rum_socket=RUM_SOCKET) == GOLDEN_RUM.read_text()


def test_request_log_goes_through_the_ring_and_the_relay_never_straight_to_the_reader() -> None:
    """Each frontend logs into the ring (no syscall per request); the ring's one server is the
    gateway's own relay; only the relay connects to the reader, and it holds the ring's connection
    while the reader is down (the no-spin property, tested for real in
    tests/integration/provisioning/test_gateway_rum.py)."""
    text = render(sample(), RUNTIME_SOCKET, rum_socket=RUM_SOCKET)
    relay = "/var/lib/countycloud/haproxy/rum-relay.sock"
    # Each blank-line-separated block by its first line that is not a comment.
    sections = {next(line for line in block.splitlines() if not line.startswith("#")): block
                for block in text.split("\n\n")}
    assert "log ring@rum len 4096 format raw local0 info info" in text
    assert f"unix@{RUM_SOCKET}" not in text.split("listen rum_relay")[0]
    ring = sections["ring rum"]
    assert [line.split()[:3] for line in ring.splitlines() if line.strip().startswith("server")] == \
        [["server", "relay", f"unix@{relay}"]]
    assert "log-proto legacy" in ring  # LF after each line: what monitoring.edge.RumReceiver splits on
    listen = sections["listen rum_relay from rum_relay"]
    assert f"bind unix@{relay} mode 600" in listen and "no log" in listen  # its own sessions unlogged
    assert "tcp-request inspect-delay 5s" in listen
    assert "tcp-request content accept if { nbsrv(rum_relay) gt 0 }" in listen
    assert "tcp-request content reject if WAIT_END" in listen
    assert f"server reader unix@{RUM_SOCKET} check" in listen and "on-error mark-down" in listen
    assert sections["defaults rum_relay"].count("mode tcp") == 1
    assert "rum" not in render(sample(), RUNTIME_SOCKET)  # off: no ring, no relay, no log


def test_order_of_frontends_does_not_change_the_text() -> None:
    assert render(list(reversed(sample())), RUNTIME_SOCKET) == render(sample(), RUNTIME_SOCKET)


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
