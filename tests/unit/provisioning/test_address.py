"""provisioning.address: frontends from inventory records (pure), and health polling against a tiny
HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from inventory.enums import Lifecycle, VmRole
from inventory.models import Tenant, Vm
from provisioning import address
from provisioning.address import NotHealthy
from provisioning.gateway import Backend, Frontend, render


def _vm(name: str, role: VmRole = VmRole.ACCOUNTING, app_port: int | None = 42002,
        status: Lifecycle = Lifecycle.ACTIVE) -> Vm:
    return Vm(name=name, role=role, app_port=app_port, status=status)


def _tenant(slug: str, status: Lifecycle, gateway_port: int | None, vms: list[Vm]) -> Tenant:
    return Tenant(slug=slug, name=slug, status=status, gateway_port=gateway_port, vms=vms)


def test_frontend_per_addressed_tenant_backed_by_its_accounting_vms() -> None:
    keelung = _tenant("keelung", Lifecycle.ACTIVE, 41001, [
        _vm("keelung-accounting-1", app_port=42002),
        _vm("keelung-accounting-2", app_port=42004),
        _vm("keelung-database-1", role=VmRole.DATABASE, app_port=42006),
    ])
    assert address.frontends([keelung]) == [Frontend(
        tenant="keelung", listen_port=41001,
        backends=(Backend("keelung-accounting-1", 42002), Backend("keelung-accounting-2", 42004)),
    )]


@pytest.mark.parametrize("status", [Lifecycle.PROVISIONING, Lifecycle.ACTIVE, Lifecycle.FAILED])
def test_provisioning_active_and_failed_tenants_keep_their_address(status: Lifecycle) -> None:
    [frontend] = address.frontends([_tenant("penghu", status, 41002, [_vm("penghu-accounting-1")])])
    assert frontend.listen_port == 41002


@pytest.mark.parametrize("status", [Lifecycle.PLANNED, Lifecycle.RETIRING, Lifecycle.RETIRED])
def test_planned_retiring_and_retired_tenants_have_no_frontend(status: Lifecycle) -> None:
    assert address.frontends([_tenant("penghu", status, 41002, [_vm("penghu-accounting-1")])]) == []


def test_tenant_without_gateway_port_has_no_frontend() -> None:
    assert address.frontends([_tenant("kinmen", Lifecycle.ACTIVE, None, [_vm("kinmen-accounting-1")])]) == []


def test_retired_and_portless_vms_are_not_backends() -> None:
    tenant = _tenant("kinmen", Lifecycle.ACTIVE, 41003, [
        _vm("kinmen-accounting-1", status=Lifecycle.RETIRED),
        _vm("kinmen-accounting-2", app_port=None),
        _vm("kinmen-accounting-3", app_port=42010, status=Lifecycle.PROVISIONING),
    ])
    [frontend] = address.frontends([tenant])
    assert frontend.backends == (Backend("kinmen-accounting-3", 42010),)


def test_a_fenced_vm_is_never_a_serving_backend_again() -> None:
    """Issue 15: a VM fenced at a failed site must not be put back behind its county's address. Its
    server stays in the configuration in maintenance (`disabled`: never sent a request, across
    reloads too), so the failover's switch enables it without a reload; a retired one is dropped."""
    tenant = _tenant("kinmen", Lifecycle.ACTIVE, 41003, [
        _vm("kinmen-accounting-1", app_port=42010, status=Lifecycle.FENCED),
        _vm("kinmen-accounting-2", app_port=42011, status=Lifecycle.RETIRED),
    ])
    [frontend] = address.frontends([tenant])
    assert frontend.backends == (Backend("kinmen-accounting-1", 42010, enabled=False),)
    assert "    server kinmen-accounting-1 127.0.0.1:42010 check disabled\n" in render([frontend], Path("/s"))


def test_tenant_whose_vms_are_all_gone_keeps_an_empty_frontend() -> None:
    # An address with no backend answers 503 instead of vanishing while the tenant is still active.
    [frontend] = address.frontends([_tenant("yunlin", Lifecycle.FAILED, 41004, [])])
    assert frontend.backends == ()


def test_frontends_are_sorted_by_tenant() -> None:
    tenants = [_tenant(slug, Lifecycle.ACTIVE, port, [_vm(f"{slug}-accounting-1", app_port=port + 1000)])
               for slug, port in (("yunlin", 41010), ("changhua", 41011), ("keelung", 41012))]
    assert [f.tenant for f in address.frontends(tenants)] == ["changhua", "keelung", "yunlin"]


# --- health against a local server ---------------------------------------------------------------

class _Health:
    """What the tiny server answers on /healthz: a status code, after an optional delay."""

    def __init__(self) -> None:
        self.status = 200
        self.delay_s = 0.0
        self.hits = 0


@pytest.fixture
def health_server() -> Iterator[tuple[int, _Health]]:
    health = _Health()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            health.hits += 1
            time.sleep(health.delay_s)
            code = health.status if self.path == "/healthz" else 404
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), health
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = int(server.server_address[1])
    server.server_close()
    return port


def test_healthy_on_200(health_server: tuple[int, _Health]) -> None:
    port, health = health_server
    assert address.healthy(port) is True
    assert health.hits == 1


def test_not_healthy_on_503(health_server: tuple[int, _Health]) -> None:
    port, health = health_server
    health.status = 503
    assert address.healthy(port) is False


def test_not_healthy_when_nothing_listens() -> None:
    assert address.healthy(_closed_port()) is False


def test_not_healthy_when_the_answer_is_too_slow(health_server: tuple[int, _Health]) -> None:
    port, health = health_server
    health.delay_s = 1.0
    started = time.monotonic()
    assert address.healthy(port, timeout_s=0.2) is False
    assert time.monotonic() - started < 0.9


def test_wait_healthy_returns_once_the_app_answers(health_server: tuple[int, _Health]) -> None:
    port, health = health_server
    health.status = 503
    threading.Timer(0.3, lambda: setattr(health, "status", 200)).start()
    waited = address.wait_healthy(port, timeout_s=5)
    assert 0.2 <= waited < 3
    assert health.hits >= 2  # it polled while the app said 503


def test_wait_healthy_gives_up_naming_the_address(health_server: tuple[int, _Health]) -> None:
    port, health = health_server
    health.status = 503
    started = time.monotonic()
    with pytest.raises(NotHealthy, match=rf"127\.0\.0\.1:{port}/healthz did not answer 200"):
        address.wait_healthy(port, timeout_s=0.3)
    assert time.monotonic() - started < 2


def test_polls_often_at_first_then_less_often() -> None:
    assert address.poll_interval_s(0.0) == address.poll_interval_s(0.9) == 0.1
    assert address.poll_interval_s(1.0) == address.poll_interval_s(60.0) == 0.25


def test_a_slow_app_is_polled_at_the_slower_pace(health_server: tuple[int, _Health]) -> None:
    port, health = health_server
    health.status = 503
    threading.Timer(2.0, lambda: setattr(health, "status", 200)).start()
    address.wait_healthy(port, timeout_s=10)
    # ~10 polls in the first second, then one every 0.25 s: not the 20 of a steady 0.1 s.
    assert 12 <= health.hits <= 17


def test_port_free_until_another_process_listens() -> None:
    port = _closed_port()
    assert address.port_free(port) is True
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        assert address.port_free(port) is False
    assert address.port_free(port) is True
