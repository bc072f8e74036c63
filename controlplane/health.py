"""Health of the counties through their addresses, as the use cases report it: probed in the
background and cached, so a request never waits on a county that does not answer (a thousand
counties are one page). Only the CLI asks for a fresh probe (`probe_now`): it is not serving anyone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from provisioning import address

TTL_S = 15.0
PROBE_TIMEOUT_S = 1.0
PARALLEL = 16

Probe = Callable[[int], bool]


def _probe(port: int) -> bool:
    return address.healthy(port, timeout_s=PROBE_TIMEOUT_S)


class HealthCache:
    def __init__(self, probe: Probe = _probe, ttl_s: float = TTL_S) -> None:
        self.probe, self.ttl_s = probe, ttl_s
        self.lock = threading.Lock()
        self.known: dict[int, bool] = {}
        self.checked_at = 0.0
        self.wanted: set[int] = set()
        self.refreshing = False

    def get(self, ports: Mapping[str, int]) -> dict[str, bool | None]:
        """Each county's last known health (None: not probed yet); starts a refresh when stale."""
        with self.lock:
            self.wanted |= set(ports.values())
            unknown = not set(ports.values()) <= set(self.known)
            stale = unknown or time.monotonic() - self.checked_at > self.ttl_s
            if stale and not self.refreshing and ports:
                self.refreshing = True
                threading.Thread(target=self._refresh, name="countycloud-health", daemon=True).start()
            return {slug: self.known.get(port) for slug, port in ports.items()}

    def _refresh(self) -> None:
        try:
            with self.lock:
                ports = sorted(self.wanted)
            results = probe_ports(ports, self.probe)
            with self.lock:
                self.known.update(results)
                self.checked_at = time.monotonic()
        finally:
            with self.lock:
                self.refreshing = False


def probe_ports(ports: list[int], probe: Probe = _probe) -> dict[int, bool]:
    if not ports:
        return {}
    with ThreadPoolExecutor(min(PARALLEL, len(ports))) as pool:
        return dict(zip(ports, pool.map(probe, ports), strict=True))


# One per process: the service's requests share it.
CACHE = HealthCache()


def cached(ports: Mapping[str, int]) -> dict[str, bool | None]:
    return CACHE.get(ports)


def probe_now(ports: Mapping[str, int]) -> dict[str, bool | None]:
    """Probe now and wait (the CLI's `tenant show`)."""
    found = probe_ports(sorted(set(ports.values())))
    return {slug: found[port] for slug, port in ports.items()}


def port_of(address_url: object) -> int | None:
    """The gateway port in a county's address (http://127.0.0.1:PORT/)."""
    if not isinstance(address_url, str) or not address_url:
        return None
    try:
        return int(address_url.rstrip("/").rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None
