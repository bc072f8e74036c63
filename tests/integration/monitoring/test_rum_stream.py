"""The gateway's request log as a stream: monitoring.edge.RumReceiver's framing over real unix
sockets, then the real HAProxy forwarding every line through its ring and relay, across a reload,
and costing nothing while nobody reads (the ring must not spin)."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from monitoring.edge import RumListener, RumReceiver
from provisioning.gateway import Backend, Frontend
from provisioning.haproxy import HAPROXY, HAProxyGateway, ServerState
from tenant_app.devserver import free_port

from .conftest import RumLines
from .support import gateway, wait_reader


def _drain_until(receiver: RumReceiver, count: int, timeout_s: float = 5.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(lines) < count and time.monotonic() < deadline:
        if receiver.wait(0.1):
            lines += receiver.drain()
    return lines


def _connect(path: Path) -> socket.socket:
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sender.connect(str(path))
    return sender


def test_receiver_splits_a_stream_into_lines_from_several_connections_at_once(tmp_path: Path) -> None:
    path = tmp_path / "rum.sock"
    receiver = RumReceiver(path)
    try:
        old, new = _connect(path), _connect(path)  # a reload: the old and the new worker's rings
        check = _connect(path)
        check.close()  # a health check: connects, sends nothing, closes
        old.sendall(b"ccrum1 a 1\nccrum1 a 2\nccrum1 a")  # the third line cut mid-way
        new.sendall(b"ccrum1 b 1\n")
        assert sorted(_drain_until(receiver, 3)) == ["ccrum1 a 1", "ccrum1 a 2", "ccrum1 b 1"]
        assert receiver.connections == 2  # the check's closed connection is gone
        old.sendall(b" 3\n")
        new.sendall(b"".join(b"ccrum1 b %d\n" % i for i in range(2, 5002)))  # a burst, many reads
        lines = _drain_until(receiver, 5001)
        assert lines.count("ccrum1 a 3") == 1
        burst = [line for line in lines if line.startswith("ccrum1 b")]
        assert burst == [f"ccrum1 b {i}" for i in range(2, 5002)]
        old.sendall(b"ccrum1 a 4")  # the old worker exits with its last line unended: kept as is
        old.close()
        assert _drain_until(receiver, 1) == ["ccrum1 a 4"]
        assert receiver.connections == 1
        new.close()
    finally:
        receiver.close()
    assert not path.exists()


def test_receiver_rebinds_over_a_socket_left_by_a_previous_run(tmp_path: Path) -> None:
    path = tmp_path / "rum.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, as after a crash
    receiver = RumReceiver(path)
    try:
        with _connect(path) as sender:
            sender.sendall(b"ccrum1 x\n")
            assert _drain_until(receiver, 1) == ["ccrum1 x"]
    finally:
        receiver.close()


# ------------------------------------------------------------------ the real gateway

needs_haproxy = pytest.mark.skipif(not HAPROXY.exists(), reason="haproxy is not installed")


class _Quiet(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy's health checks close with a reset


@pytest.fixture(scope="module")
def backend() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.send_header("Server-Timing", "app;dur=1.00, db;dur=0.50")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = _Quiet(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _get(port: int, n: int, path: str = "/r") -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for i in range(n):
            client.get(f"{path}?i={i}").raise_for_status()


def _cpu_s(gw: HAProxyGateway) -> float:
    """CPU seconds used so far by the gateway's HAProxy: master and workers."""
    pid = gw.master_pid()
    assert pid is not None
    master = psutil.Process(pid)
    return sum(t.user + t.system for t in (p.cpu_times() for p in [master, *master.children(recursive=True)]))


def _ours(lines: list[str], path: str) -> list[str]:
    return [line for line in lines if f'"{path}"' in line]


IDLE_WINDOW_S = 6.0  # more than one hold of the relay (5 s): a spinning ring would show in it
# A ring spinning on a refused server burns a whole core (HAProxy 2.6: +113 % in the bench); an
# idle gateway uses ~0. A tenth of a core over the window is loose for a loaded machine, and still
# ten times below a spin.
IDLE_CPU_BOUND = 0.1


@needs_haproxy
@pytest.mark.timeout(120)
def test_every_request_line_reaches_the_reader_through_the_ring_also_across_a_reload(backend: int) -> None:
    with gateway({"keelung": backend}) as (gw, addresses):
        lines = RumLines()
        with RumListener(gw.paths.rum_socket, lines.add):
            gw.wait_for("keelung", "keelung-vm", ServerState.UP)
            wait_reader(gw)
            _get(addresses["keelung"], 300, "/before")
            deadline = time.monotonic() + 10
            seen: list[str] = []
            while len(_ours(seen, "/before")) < 300 and time.monotonic() < deadline:
                time.sleep(0.1)
                seen += lines.take()
            before = _ours(seen, "/before")
            assert len(before) == 300  # every line kept, each once
            assert sorted(int(line.split('"?i=')[1].split('"')[0]) for line in before) == list(range(300))
            assert all(line.startswith("ccrum1 ") and " fe_keelung 200 GET " in line
                       and line.endswith("{app;dur=1.00, db;dur=0.50}") for line in before)

            # A reload (a county added): the new worker's ring connects, the old one's closes.
            port = free_port()
            gw.apply([Frontend("keelung", addresses["keelung"], (Backend("keelung-vm", backend),)),
                      Frontend("penghu", port, (Backend("penghu-vm", backend),))])
            gw.wait_for("penghu", "penghu-vm", ServerState.UP)
            wait_reader(gw)
            _get(port, 50, "/after")
            deadline = time.monotonic() + 10
            while len(_ours(seen, "/after")) < 50 and time.monotonic() < deadline:
                time.sleep(0.1)
                seen += lines.take()
            after = _ours(seen, "/after")
            assert len(after) == 50 and all(" fe_penghu 200 GET " in line for line in after)


@needs_haproxy
@pytest.mark.timeout(120)
def test_with_nobody_reading_the_gateway_stays_idle_and_lines_flow_again_when_the_reader_is_back(
        backend: int) -> None:
    with gateway({"keelung": backend}) as (gw, addresses):
        gw.wait_for("keelung", "keelung-vm", ServerState.UP)
        address = addresses["keelung"]
        # Never a reader: requests still served, the log's ring idle.
        _get(address, 50, "/never")
        began = _cpu_s(gw)
        time.sleep(IDLE_WINDOW_S)
        assert _cpu_s(gw) - began < IDLE_CPU_BOUND * IDLE_WINDOW_S

        lines = RumLines()
        listener = RumListener(gw.paths.rum_socket, lines.add).start()
        try:
            wait_reader(gw)
            _get(address, 20, "/first")
            deadline = time.monotonic() + 10
            seen: list[str] = []
            while len(_ours(seen, "/first")) < 20 and time.monotonic() < deadline:
                time.sleep(0.1)
                seen += lines.take()
            assert len(_ours(seen, "/first")) == 20
        finally:
            listener.stop()  # the service stops: its socket is gone

        # The reader went away after being connected: its server is marked down at the first failed
        # connect, and the ring reconnects once per hold, not in a loop.
        _get(address, 50, "/gone")
        wait_reader(gw, ServerState.DOWN)
        began = _cpu_s(gw)
        time.sleep(IDLE_WINDOW_S)
        assert _cpu_s(gw) - began < IDLE_CPU_BOUND * IDLE_WINDOW_S

        # The service back (a new socket at the same path): lines flow again.
        with RumListener(gw.paths.rum_socket, lines.add):
            wait_reader(gw)
            _get(address, 20, "/back")
            deadline = time.monotonic() + 10
            while len(_ours(seen, "/back")) < 20 and time.monotonic() < deadline:
                time.sleep(0.1)
                seen += lines.take()
            assert len(_ours(seen, "/back")) == 20
