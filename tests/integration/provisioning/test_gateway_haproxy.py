"""The real HAProxy (Debian's /usr/sbin/haproxy) in front of tiny HTTP servers on 127.0.0.1.

Each test gets its own short state dir under /tmp and random free ports, so tests never collide with
each other or with the demo's gateway. Load loops are bounded in count and in time.
"""

from __future__ import annotations

import http.client
import http.server
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.gateway import Backend, Frontend, GatewayError, Timeouts
from provisioning.haproxy import HAPROXY, ApplyAction, HAProxyGateway, ServerState

pytestmark = pytest.mark.skipif(not HAPROXY.exists(), reason="haproxy is not installed")

REQUESTS = 300
LOAD_DEADLINE_S = 20.0


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy closes health-check connections with a reset: not an error worth a traceback


def serve(name: str) -> Iterator[_Server]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def app_a() -> Iterator[_Server]:
    yield from serve("app-a")


@pytest.fixture
def app_b() -> Iterator[_Server]:
    yield from serve("app-b")


@pytest.fixture
def gateway() -> Iterator[HAProxyGateway]:
    # Short path: unix socket paths are limited to 107 bytes, pytest's tmp_path can be longer.
    state = Path(tempfile.mkdtemp(prefix="ccgw-", dir="/tmp"))
    gw = HAProxyGateway(state / "haproxy")
    try:
        yield gw
    finally:
        gw.stop()
        shutil.rmtree(state, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_of(server: _Server) -> int:
    return int(server.server_address[1])


def get(port: int, path: str = "/healthz", timeout: float = 5.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_a_county_is_reached_through_its_frontend_and_reported_up(
    gateway: HAProxyGateway, app_a: _Server
) -> None:
    port = free_port()
    fronts = [Frontend("keelung", port, [Backend("keelung-app", port_of(app_a))])]
    first = gateway.apply(fronts)
    assert first.action == ApplyAction.STARTED
    assert get(port) == (200, "app-a")
    status = gateway.wait_for("keelung", "keelung-app", ServerState.UP)
    assert status.check.startswith("L7OK")
    again = gateway.apply(fronts)
    assert again.action == ApplyAction.UNCHANGED and again.worker_pid == first.worker_pid


def test_three_reloads_under_load_fail_no_request(gateway: HAProxyGateway, app_a: _Server) -> None:
    port = free_port()
    fronts = [Frontend("keelung", port, [Backend("keelung-app", port_of(app_a))])]
    gateway.apply(fronts)
    assert get(port) == (200, "app-a")

    failures: list[str] = []
    done = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal done
        deadline = time.monotonic() + LOAD_DEADLINE_S
        while done < REQUESTS and time.monotonic() < deadline and not stop.is_set():
            try:
                status, body = get(port)  # a new connection each time: accepts are what a reload risks
                if (status, body) != (200, "app-a"):
                    failures.append(f"{status} {body[:60]}")
            except OSError as error:
                failures.append(repr(error))
            done += 1
            time.sleep(0.01)

    loader = threading.Thread(target=load)
    loader.start()
    actions, added = [], []
    try:
        for index in range(3):
            time.sleep(0.6)
            added.append(free_port())
            backend = Backend(f"county-{index}-app", port_of(app_a))
            fronts.append(Frontend(f"county-{index}", added[-1], [backend]))
            actions.append(gateway.apply(fronts).action)
    finally:
        loader.join(timeout=LOAD_DEADLINE_S + 5)
        stop.set()
    assert actions == [ApplyAction.RELOADED] * 3
    assert done == REQUESTS
    assert failures == []
    for new_port in added:  # and each reload did take effect
        assert get(new_port) == (200, "app-a")


def test_switching_a_frontend_to_another_server_takes_effect(
    gateway: HAProxyGateway, app_a: _Server, app_b: _Server
) -> None:
    port = free_port()
    gateway.apply([Frontend("penghu", port, [Backend("penghu-app", port_of(app_a))])])
    assert get(port) == (200, "app-a")
    # What failover does: the same address, now served by the county's VM at the other site.
    result = gateway.apply([Frontend("penghu", port, [Backend("penghu-app", port_of(app_b))])])
    assert result.action == ApplyAction.RELOADED
    assert [get(port) for _ in range(5)] == [(200, "app-b")] * 5
    assert gateway.wait_for("penghu", "penghu-app", ServerState.UP).server == "penghu-app"


def test_a_fenced_server_goes_out_and_back_into_service_without_a_reload(
        app_a: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The failover's fence and switch: the county's server in maintenance (no request reaches it,
    and a reload keeps it so), then back in service; both through the runtime API, the same worker,
    and no second `haproxy -c` (only `disabled` flags differ from a file it accepted)."""
    state = Path(tempfile.mkdtemp(prefix="ccgw-", dir="/tmp"))
    minute = Timeouts(check_interval_ms=60000, check_transition_ms=60000, check_down_ms=60000)
    gw = HAProxyGateway(state / "haproxy", timeouts=minute)  # only the vouch can bring it UP here
    try:
        port = free_port()
        serving = [Frontend("matsu", port, [Backend("matsu-app", port_of(app_a))])]
        fenced = [Frontend("matsu", port, [Backend("matsu-app", port_of(app_a), enabled=False)])]
        started = gw.apply(serving)
        assert get(port) == (200, "app-a")

        def no_check(config: Path) -> None:
            raise AssertionError(f"haproxy -c asked again for {config}")

        monkeypatch.setattr(gw, "check", no_check)
        out = gw.apply(fenced)
        assert (out.action, out.worker_pid) == (ApplyAction.TOGGLED, started.worker_pid)
        assert gw.backend_state("matsu")["matsu-app"].state == ServerState.MAINT
        assert get(port)[0] == 503  # its app answers, and is sent nothing
        assert gw.vouch_up("matsu", ["matsu-app"]) == ["matsu-app"]  # a vouch does not end maintenance
        assert get(port)[0] == 503
        assert "check disabled" in gw.paths.config.read_text()  # a reload or restart keeps it out
        back = gw.apply(serving)
        assert (back.action, back.worker_pid) == (ApplyAction.TOGGLED, started.worker_pid)
        assert gw.vouch_up("matsu", ["matsu-app"]) == ["matsu-app"]
        assert get(port) == (200, "app-a")
        assert gw.apply(serving).action == ApplyAction.UNCHANGED
    finally:
        gw.stop()
        shutil.rmtree(state, ignore_errors=True)


def test_a_dead_backend_is_reported_down_and_answers_503(gateway: HAProxyGateway) -> None:
    port, dead = free_port(), free_port()
    gateway.apply([Frontend("kinmen", port, [Backend("kinmen-app", dead)])])
    status = gateway.wait_for("kinmen", "kinmen-app", ServerState.DOWN, timeout=15)
    assert status.check.startswith("L4")  # connection refused: a layer-4 failure, not the app's answer
    assert get(port)[0] == 503


def test_a_reload_that_cannot_bind_keeps_the_old_config_serving(
    gateway: HAProxyGateway, app_a: _Server
) -> None:
    port = free_port()
    good = [Frontend("keelung", port, [Backend("keelung-app", port_of(app_a))])]
    gateway.apply(good)
    before = gateway.paths.config.read_text()
    with socket.socket() as squatter:  # another program holds the port the new frontend wants
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = int(squatter.getsockname()[1])
        with pytest.raises(GatewayError, match="refused the reload") as refused:
            gateway.apply([*good, Frontend("lienchiang", taken)])
    assert str(taken) in str(refused.value)  # HAProxy's own reason reaches the operator
    assert gateway.paths.config.read_text() == before
    assert get(port) == (200, "app-a")
    assert gateway.apply(good).action == ApplyAction.UNCHANGED


def test_a_start_that_cannot_bind_fails_fast_with_the_reason(gateway: HAProxyGateway) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = int(squatter.getsockname()[1])
        began = time.monotonic()
        with pytest.raises(GatewayError, match=f"cannot bind.*{taken}"):
            gateway.apply([Frontend("lienchiang", taken)])
    assert time.monotonic() - began < 10
    assert not gateway.running()
    assert not gateway.paths.config.exists()  # nothing claims to serve what never started


@pytest.fixture
def header_echo() -> Iterator[_Server]:
    """A backend that answers with the X-Forwarded-* header lines it received, one per line."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            lines = [f"{name.lower()}: {value}" for name, value in self.headers.items()
                     if name.lower().startswith("x-forwarded-")]
            body = "\n".join(lines).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_the_gateway_replaces_client_sent_forwarded_headers(
    gateway: HAProxyGateway, header_echo: _Server
) -> None:
    """Issue 14, item 5: the app trusts X-Forwarded-For from the gateway only, so the gateway must
    send the client's real address and scheme, never what the client claimed."""
    port = free_port()
    gateway.apply([Frontend("keelung", port, [Backend("keelung-app", port_of(header_echo))])])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5.0)
    try:
        conn.putrequest("GET", "/spoof")
        for name, value in (("X-Forwarded-For", "203.0.113.9"),
                            ("X-Forwarded-For", "198.51.100.1, 192.0.2.9"),
                            ("X-Forwarded-Proto", "https")):
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 200
        seen = response.read().decode().splitlines()
    finally:
        conn.close()
    assert sorted(seen) == ["x-forwarded-for: 127.0.0.1", "x-forwarded-proto: http"]


def test_a_server_vouched_for_serves_at_once_not_at_its_next_check(app_a: _Server) -> None:
    # Checks a minute apart: within this test only the vouch can bring a DOWN server back UP.
    state = Path(tempfile.mkdtemp(prefix="ccgw-", dir="/tmp"))
    minute = Timeouts(check_interval_ms=60000, check_transition_ms=60000, check_down_ms=60000)
    gw = HAProxyGateway(state / "haproxy", timeouts=minute)
    try:
        port = free_port()
        gw.apply([Frontend("yilan", port, [Backend("yilan-app", port_of(app_a))])])
        assert get(port) == (200, "app-a")
        # What the checks did to a county whose VM was not up yet when its address was added.
        from provisioning.haproxy import _ask

        assert _ask(gw.paths.runtime_socket, "set server be_yilan/yilan-app health down").strip() == ""
        gw.wait_for("yilan", "yilan-app", ServerState.DOWN, timeout=5)
        time.sleep(1.0)
        assert get(port)[0] == 503, "still DOWN: its next check is a minute away"
        assert gw.vouch_up("yilan", ["yilan-app", "no-such-server"]) == ["yilan-app"]
        assert gw.backend_state("yilan")["yilan-app"].state == ServerState.UP
        assert get(port) == (200, "app-a")
    finally:
        gw.stop()
        shutil.rmtree(state, ignore_errors=True)


def test_vouching_with_haproxy_not_running_does_nothing(gateway: HAProxyGateway) -> None:
    assert gateway.vouch_up("yilan", ["yilan-app"]) == []
