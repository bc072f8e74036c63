"""The gateway's request log read from its ring: the real HAProxy logging every request into a
ring that forwards nothing, and the service's reader (monitoring.edge.RequestLogReader) taking each
line once, across a reload and a restart of the reader; a gateway nobody reads stays idle."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from monitoring.edge import ReaderBusy
from monitoring.rum import Gap
from provisioning.gateway import Backend, Frontend
from provisioning.haproxy import HAPROXY, HAProxyGateway, ServerState
from tenant_app.devserver import free_port

from .conftest import RumLines
from .support import gateway, request_log_reader

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


def _until(lines: RumLines, seen: list[str], path: str, count: int, timeout_s: float = 10.0) -> list[str]:
    """Collect what the reader hands over until `count` lines of `path` came (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while len(_ours(seen, path)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
        seen += lines.take()
    return _ours(seen, path)


IDLE_WINDOW_S = 3.0
# An idle gateway uses ~0; read every 0.2 s it answers 15 whole-ring dumps here (a few ms each). A
# tenth of a core over the window is loose for a loaded machine and still far below a spin.
IDLE_CPU_BOUND = 0.1


@needs_haproxy
@pytest.mark.timeout(120)
def test_every_request_line_is_read_once_also_across_a_reload(backend: int) -> None:
    with gateway({"keelung": backend}) as (gw, addresses):
        lines = RumLines()
        with request_log_reader(gw, lines.add):
            gw.wait_for("keelung", "keelung-vm", ServerState.UP)
            _get(addresses["keelung"], 300, "/before")
            seen: list[str] = []
            before = _until(lines, seen, "/before", 300)
            time.sleep(0.5)  # two more reads of the same ring: nothing read twice
            before = _until(lines, seen, "/before", 301, timeout_s=0.0)
            assert len(before) == 300  # every line kept, each once
            assert sorted(int(line.split('"?i=')[1].split('"')[0]) for line in before) == list(range(300))
            assert all(line.startswith("ccrum2 ") and " fe_keelung 200 GET " in line
                       and line.endswith("{app;dur=1.00, db;dur=0.50}") for line in before)
            assert lines.gaps == []

            # A reload (a county added): a new worker with a ring of its own.
            port = free_port()
            gw.apply([Frontend("keelung", addresses["keelung"], (Backend("keelung-vm", backend),)),
                      Frontend("penghu", port, (Backend("penghu-vm", backend),))])
            gw.wait_for("penghu", "penghu-vm", ServerState.UP)
            _get(port, 50, "/after")
            after = _until(lines, seen, "/after", 50)
            assert len(after) == 50 and all(" fe_penghu 200 GET " in line for line in after)
            assert lines.gaps == [Gap.NEW_WORKER]  # said once, not at every read after


@needs_haproxy
@pytest.mark.timeout(120)
def test_a_restarted_reader_takes_what_came_while_it_was_away_and_nothing_twice(backend: int) -> None:
    with gateway({"keelung": backend}) as (gw, addresses):
        gw.wait_for("keelung", "keelung-vm", ServerState.UP)
        address = addresses["keelung"]
        lines = RumLines()
        seen: list[str] = []
        with request_log_reader(gw, lines.add):
            _get(address, 20, "/first")
            assert len(_until(lines, seen, "/first", 20)) == 20
        _get(address, 30, "/away")  # the service restarting: nobody reads
        again = RumLines()
        with request_log_reader(gw, again.add):
            _get(address, 10, "/back")
            taken: list[str] = []
            assert len(_until(again, taken, "/back", 10)) == 10
            assert len(_ours(taken, "/away")) == 30 and _ours(taken, "/first") == []
        assert again.gaps == []


@needs_haproxy
@pytest.mark.timeout(60)
def test_a_second_reader_of_the_same_gateway_is_refused(backend: int) -> None:
    with (gateway({"keelung": backend}) as (gw, _addresses), request_log_reader(gw, RumLines().add),
          pytest.raises(ReaderBusy, match="another process reads the request log")):
        request_log_reader(gw, RumLines().add).start()


@needs_haproxy
@pytest.mark.timeout(60)
def test_the_gateway_stays_idle_unread_and_read(backend: int) -> None:
    with gateway({"keelung": backend}) as (gw, addresses):
        gw.wait_for("keelung", "keelung-vm", ServerState.UP)
        _get(addresses["keelung"], 50, "/never")  # never a reader: requests still served
        began = _cpu_s(gw)
        time.sleep(IDLE_WINDOW_S)
        assert _cpu_s(gw) - began < IDLE_CPU_BOUND * IDLE_WINDOW_S
        lines = RumLines()
        with request_log_reader(gw, lines.add):
            began = _cpu_s(gw)
            time.sleep(IDLE_WINDOW_S)
            assert _cpu_s(gw) - began < IDLE_CPU_BOUND * IDLE_WINDOW_S
        assert len(_ours(lines.take(), "/never")) == 50  # the ring kept them for the first reader


@needs_haproxy
@pytest.mark.timeout(60)
def test_a_gateway_not_running_is_tried_again_at_the_next_read(tmp_path: Path) -> None:
    gw = HAProxyGateway(tmp_path / "haproxy")
    lines = RumLines()
    reader = request_log_reader(gw, lines.add)
    assert reader.read_once() == 0 and reader.failed_reads == 1 and not gw.paths.request_log_mark.exists()


@needs_haproxy
@pytest.mark.timeout(60)
def test_a_gateway_without_its_request_log_gives_no_lines(backend: int) -> None:
    with gateway({"keelung": backend}, real_user_timing=False) as (gw, addresses):
        gw.wait_for("keelung", "keelung-vm", ServerState.UP)
        _get(addresses["keelung"], 5, "/unlogged")
        lines = RumLines()
        reader = request_log_reader(gw, lines.add)
        assert reader.read_once() == 0 and reader.failed_reads == 1 and lines.take() == []
