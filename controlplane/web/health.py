"""Health of the counties through their addresses, for the dashboard: probed in the background and
cached, so a page never waits on a county that does not answer (1000 counties are one render)."""

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
            with ThreadPoolExecutor(PARALLEL) as pool:
                results = dict(zip(ports, pool.map(self.probe, ports), strict=True))
            with self.lock:
                self.known.update(results)
                self.checked_at = time.monotonic()
        finally:
            with self.lock:
                self.refreshing = False


def port_of(address_url: str | None) -> int | None:
    """The gateway port in a county's address (http://127.0.0.1:PORT/)."""
    if not address_url:
        return None
    try:
        return int(address_url.rstrip("/").rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None
