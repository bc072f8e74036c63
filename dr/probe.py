"""The site watch's check edge: asks a site's libvirtd and its counties' addresses, each within a
timeout, and returns one Observation (dr.health judges it). The only module of dr that talks to
anything.

A paused libvirtd accepts the connection and then never answers, and libvirt's client has no
timeout of its own, so the question runs in a thread the check stops waiting for. At most one
question per site is in flight: while a paused daemon holds one, each later check waits on that
same question (and counts the daemon as silent if it still has no answer) instead of piling up a
thread a second.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

import libvirt

from dr.health import Observation
from dr.targets import SiteTarget
from provisioning import address
from provisioning.errors import ProvisioningError
from provisioning.hypervisor import Hypervisor


def ask_daemon(site: str, uri: str) -> bool:
    """Whether the site's libvirtd answers a real request (not just accepts a connection)."""
    try:
        with Hypervisor(site, uri) as hypervisor:
            hypervisor.names()
    except (ProvisioningError, libvirt.libvirtError):
        return False
    return True


class DaemonCheck:
    """One site's daemon question, with at most one in flight."""

    def __init__(self, site: str) -> None:
        self.site = site
        self._pending: Future[bool] | None = None

    def answered(self, uri: str, timeout_s: float) -> bool:
        if self._pending is None or self._pending.done():
            self._pending = Future()
            pending = self._pending
            threading.Thread(
                target=self._ask, args=(pending, uri), name=f"dr-daemon-{self.site}", daemon=True
            ).start()
        done, _ = wait([self._pending], timeout=timeout_s)
        return bool(done) and self._pending.result()

    def _ask(self, future: Future[bool], uri: str) -> None:
        try:
            answered = ask_daemon(self.site, uri)
        except Exception as error:  # a bug: let the check that reads it raise it, not hang on it
            future.set_exception(error)
            return
        future.set_result(answered)


class Prober:
    """Checks sites from one vantage point; keeps each site's DaemonCheck between ticks."""

    def __init__(self, vantage: str, timeout_s: float, workers: int = 64) -> None:
        self.vantage = vantage
        self.timeout_s = timeout_s
        self._daemons: dict[str, DaemonCheck] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dr-probe")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def observe(self, target: SiteTarget) -> Observation:
        at = time.time()
        started = time.monotonic()
        counties = [
            self._pool.submit(address.healthy, port, self.timeout_s) for port in target.counties.values()
        ]
        daemon = self._daemons.setdefault(target.site, DaemonCheck(target.site))
        daemon_ok = daemon.answered(target.libvirt_uri, self.timeout_s)
        # Each county check has the same timeout for its connect and for its answer: stop waiting at
        # the check's deadline, so one tick of a silent site takes about timeout_s, not twice that.
        wait(counties, timeout=max(0.0, self.timeout_s - (time.monotonic() - started)))
        counties_ok = sum(1 for f in counties if f.done() and f.result())
        return Observation(
            vantage=self.vantage, site=target.site, at=at, took_s=time.monotonic() - started,
            daemon_ok=daemon_ok, counties_checked=len(counties), counties_ok=counties_ok,
        )

    def observe_all(self, targets: list[SiteTarget]) -> list[Observation]:
        """Every site at once: a silent site must not delay the others' checks."""
        with ThreadPoolExecutor(max_workers=max(1, len(targets)), thread_name_prefix="dr-site") as sites:
            return list(sites.map(self.observe, targets))
