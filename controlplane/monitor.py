"""Monitoring in the service (issue 13): the MonitoringEngine of `countycloud serve`, wired.

- probes of every serving county on a schedule (workers.register_periodic, every
  `monitoring_probe_interval_s`, 60 s by default), with the probe credentials the platform keeps
  (provisioning.probe_accounts); a county with none is counted, not probed;
- the gateway's request log, its ring read once a second (RequestLogReader, its own thread);
- host and VM usage per site on the same schedule;
- what arrived flushed into the platform database (monitoring.storage) after each probe round and
  each stats round; retention (a day of samples, a year of rollups) pruned hourly;
- its metrics added to /metrics (controlplane.metrics).

Nothing here blocks a request: /metrics and the console read memory and the database only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select

from inventory.db import session_scope
from inventory.enums import Lifecycle
from inventory.models import Tenant
from monitoring import edge, storage
from monitoring.advice import figures
from monitoring.engine import MonitoringEngine
from monitoring.probes import DEFAULT_INTERVAL_S, ProbeAccount, ProbeSessions, Target, probe_all_kept
from monitoring.rollups import HOUR_S
from provisioning import probe_accounts
from provisioning.haproxy import GatewayPaths
from provisioning.platform import Platform

log = logging.getLogger("countycloud.monitor")

PRUNE_CRON = "0 7 * * * *"  # hourly, off the minute the probes start
AFTER_S = HOUR_S  # applied advice is compared over the hour before and the hour after


def cron_every(seconds: int, offset_s: int = 0) -> str:
    """A six-field cron (seconds first) firing every `seconds`, `offset_s` into each period; the
    interval divides a minute, or is whole minutes dividing an hour."""
    if 0 < seconds < 60 and 60 % seconds == 0:
        return f"{offset_s % seconds}/{seconds} * * * * *"
    minutes = seconds // 60
    if seconds % 60 == 0 and 0 < minutes <= 60 and 60 % minutes == 0:
        return f"{offset_s % 60} */{minutes} * * * *"
    raise ValueError(f"{seconds} s: an interval divides a minute or is whole minutes dividing an hour")


def stats_cron(seconds: int) -> str:
    """The stats round: as often as the probes, half a period later (they do not start together)."""
    return cron_every(seconds, min(seconds // 2, 30))


@dataclass(frozen=True)
class Serving:
    county: str
    gateway_port: int


def serving_counties(engine: Engine) -> list[Serving]:
    with session_scope(engine) as session:
        rows = session.execute(select(Tenant.slug, Tenant.gateway_port)
                               .where(Tenant.status == Lifecycle.ACTIVE, Tenant.gateway_port.is_not(None))
                               .order_by(Tenant.slug)).all()
    return [Serving(slug, int(port)) for slug, port in rows if port is not None]


Credentials = Callable[[str], probe_accounts.ProbeCredentials | None]


def targets(serving: Iterable[Serving], credentials: Credentials) -> tuple[list[Target], list[str]]:
    """Probe targets (the county's address, its kept probe account) and the counties without one."""
    found, missing = [], []
    for county in serving:
        kept = credentials(county.county)
        if kept is None:
            missing.append(county.county)
            continue
        found.append(Target(county.county, f"http://127.0.0.1:{county.gateway_port}",
                            ProbeAccount(kept.username, kept.password, kept.api_token, kept.budget_line_id)))
    return found, missing


class Monitor:
    """The running monitoring of one service process."""

    def __init__(self, db: Engine, platform: Platform, sites: Iterable[str],
                 gateway: GatewayPaths | None) -> None:
        self.db = db
        self.platform = platform
        self.sites = list(sites)
        self.engine = MonitoringEngine(db=db)
        self.executor = ThreadPoolExecutor(max_workers=13, thread_name_prefix="probe")
        self.sessions = ProbeSessions()  # each county's probe session, logged in once per 5 rounds
        self.gateway = gateway
        self.request_log: edge.RequestLogReader | None = None
        self._round = threading.Lock()  # one probe round at a time in this process

    def start(self) -> None:
        if self.gateway is not None:
            try:
                self.request_log = edge.RequestLogReader(self.gateway.runtime_socket,
                                                         self.gateway.request_log_mark,
                                                         self.engine.ingest_ring_read).start()
            except OSError as error:  # another service on this machine reads it: probes still run
                log.warning("gateway request log not read (%s): %s", self.gateway.root, error)

    def stop(self) -> None:
        if self.request_log is not None:
            self.request_log.stop()
            self.request_log = None
        self.executor.shutdown(wait=False, cancel_futures=True)
        with self._round:  # a round in progress still uses the sessions
            self.sessions.close()
        self._flush()

    def probe_round(self, _at: datetime | None = None) -> int:
        if not self._round.acquire(blocking=False):
            return 0  # the previous round still runs (a slow county): skip, never pile up
        try:
            found, missing = targets(serving_counties(self.db),
                                     lambda county: probe_accounts.load(self.platform.state_dir, county))
            self.engine.metrics.record_unprobed(missing)
            self.engine.record_probes(probe_all_kept(found, self.executor, self.sessions))
            self._flush()
            return len(found)
        finally:
            self._round.release()

    def stats_round(self, _at: datetime | None = None) -> None:
        reading = edge.read_host()
        for site in self.sites:
            self.engine.record_host(site, reading)
            try:
                with self.platform.hypervisor(site) as hv:
                    self.engine.record_vms(site, hv)
            except Exception:  # the site's daemon is down: the site is down, the round goes on
                self.engine.record_vms(site, None)
        self._flush()

    def prune(self, _at: datetime | None = None) -> None:
        self.engine.prune()
        self.record_after()

    def record_after(self) -> int:
        """Applied advice whose hour after has passed gets its "after" figures, beside "before"."""
        now = self.engine.clock()
        done = 0
        for advice_id, county, applied_at in storage.awaiting_after(self.db, now, AFTER_S):
            after = figures(self.engine.history(county, applied_at), county, applied_at, applied_at + AFTER_S)
            storage.record_after(self.db, advice_id, after)
            done += 1
        return done

    def _flush(self) -> None:
        try:
            self.engine.flush()
        except Exception:  # the database away a moment: kept in memory for the next flush
            log.exception("monitoring flush failed; kept for the next one")


_current: Monitor | None = None


def current() -> Monitor | None:
    return _current


def start(db: Engine, platform: Platform, sites: Iterable[str], *,
          interval_s: int = int(DEFAULT_INTERVAL_S), read_gateway_log: bool = True) -> Monitor:
    """Build the monitor, register its periodic work (before the process becomes a worker) and its
    metrics, and start reading the gateway's log."""
    from controlplane import metrics, workers

    global _current
    monitor = Monitor(db, platform, sites, GatewayPaths(platform.haproxy_dir) if read_gateway_log else None)
    workers.register_periodic("monitoring-probe", cron_every(interval_s), lambda at: _call("probe_round", at))
    workers.register_periodic("monitoring-stats", stats_cron(interval_s), lambda at: _call("stats_round", at))
    workers.register_periodic("monitoring-prune", PRUNE_CRON, lambda at: _call("prune", at))
    metrics.add_registry(monitor.engine.metrics.registry)
    monitor.start()
    _current = monitor
    return monitor


def _call(what: str, at: datetime) -> None:
    """The periodic workflows call the process's current monitor (none: this worker has none)."""
    monitor = _current
    if monitor is not None:
        getattr(monitor, what)(at)


def stop() -> None:
    from controlplane import metrics

    global _current
    monitor, _current = _current, None
    if monitor is not None:
        metrics.remove_registry(monitor.engine.metrics.registry)
        monitor.stop()
