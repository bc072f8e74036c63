"""The tenant address: which VM serves each county behind its stable port, and waiting for health.

`frontends` is pure (inventory records in, gateway data out); HAProxy itself is reached only
through provisioning.haproxy.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from inventory.enums import Lifecycle, VmRole
from inventory.models import Tenant
from provisioning.errors import ProvisioningError
from provisioning.gateway import Backend, Frontend
from provisioning.haproxy import ApplyAction, HAProxyGateway

# Tenants in these states have an address; a retired one's frontend is dropped.
ADDRESSED = frozenset({Lifecycle.PROVISIONING, Lifecycle.ACTIVE, Lifecycle.FAILED})
SERVING_ROLE = VmRole.ACCOUNTING
# A retired VM is no backend. A fenced one (at a failed site: a site coming back must not put it back
# behind its county's address) is a disabled one, never sent a request, which the failover's switch
# enables without a reload when the county's VM at the other site takes its place.
NO_BACKEND = Lifecycle.RETIRED
DISABLED = Lifecycle.FENCED


class NotHealthy(ProvisioningError):
    """An address did not answer /healthz with 200 in time."""


def frontends(tenants: Iterable[Tenant]) -> list[Frontend]:
    result = []
    for tenant in tenants:
        if tenant.status not in ADDRESSED or tenant.gateway_port is None:
            continue
        backends = tuple(
            Backend(name=vm.name, host_port=vm.app_port, enabled=vm.status is not DISABLED)
            for vm in tenant.vms
            if vm.role is SERVING_ROLE and vm.app_port is not None and vm.status is not NO_BACKEND
        )
        result.append(Frontend(tenant=tenant.slug, listen_port=tenant.gateway_port, backends=backends))
    return sorted(result, key=lambda frontend: frontend.tenant)


def apply(haproxy_dir: Path, wanted: list[Frontend]) -> bool:
    """Make HAProxy serve exactly these frontends; returns whether anything changed."""
    result = HAProxyGateway(haproxy_dir).apply(wanted)
    return result.action is not ApplyAction.UNCHANGED


def vouch_serving(haproxy_dir: Path, tenant: str, servers: Mapping[str, int]) -> list[str]:
    """Mark UP in HAProxy each of the county's servers (VM name -> its app port on 127.0.0.1) whose
    app answers /healthz now, rather than wait for HAProxy's next check; returns those marked."""
    serving = [name for name, port in servers.items() if healthy(port)]
    return HAProxyGateway(haproxy_dir).vouch_up(tenant, serving) if serving else []


def port_free(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:port now (what QEMU's forward will need)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def healthy(port: int, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout_s) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def poll_interval_s(waited_s: float) -> float:
    """Often at first (a clone answers within seconds), then less: every attempt on a guest that does
    not listen yet costs CPU in QEMU's user-mode network and in the guest, and 13 counties coming up
    at once polled 130 times a second."""
    return 0.1 if waited_s < 1.0 else 0.25


def wait_healthy(port: int, timeout_s: float) -> float:
    """Poll 127.0.0.1:port/healthz until it answers 200; returns the seconds waited."""
    started = time.monotonic()
    while not healthy(port):
        waited = time.monotonic() - started
        if waited > timeout_s:
            raise NotHealthy(f"127.0.0.1:{port}/healthz did not answer 200 within {timeout_s:.0f} s")
        time.sleep(poll_interval_s(waited))
    return time.monotonic() - started
