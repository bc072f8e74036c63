"""Backup metrics per county on the service's /metrics (controlplane.metrics): last backup age, offsite
lag, the tier's RPO objective, last verification, restore points, the newest point's size, each
site's repository size and whether it could be read, and the number of alerts (backup.ops.alerts).

The figures come from one `restic snapshots` per repository, refreshed on a thread of the service
every REFRESH_S; a scrape reads memory only. Ages are as of the last refresh (at most REFRESH_S old).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Gauge

from backup import ops, verifications
from controlplane import metrics
from inventory.db import session_scope

log = logging.getLogger("countycloud.backup")

REFRESH_S = 15.0
REGISTRY = CollectorRegistry()
# `county`, as every other countycloud_* series (monitoring.metrics) and the alert rules have it.
_TENANT = ["county"]
LAST_BACKUP_AGE = Gauge("countycloud_backup_last_age_seconds", "Age of the county's newest restore point",
                        _TENANT, registry=REGISTRY)
OFFSITE_LAG = Gauge("countycloud_backup_offsite_lag_seconds",
                    "How far the offsite copy is behind the county's newest restore point", _TENANT,
                    registry=REGISTRY)
VERIFIED_OK = Gauge("countycloud_backup_last_verification_ok",
                    "The county's last verification: 1 succeeded, 0 failed, -1 none yet", _TENANT,
                    registry=REGISTRY)
VERIFIED_AGE = Gauge("countycloud_backup_last_verification_age_seconds", "Age of the last verification",
                     _TENANT, registry=REGISTRY)
POINTS = Gauge("countycloud_backup_restore_points", "Restore points in either repository", _TENANT,
               registry=REGISTRY)
DATABASE_BYTES = Gauge("countycloud_backup_database_bytes", "Size of the newest restore point's database",
                       _TENANT, registry=REGISTRY)
RPO_OBJECTIVE = Gauge("countycloud_backup_rpo_objective_seconds",
                      "The county's tier interval: the most its newest offsite restore point may be behind",
                      _TENANT, registry=REGISTRY)
ALERTS = Gauge("countycloud_backup_alerts", "Backup alerts standing for the county (backup.ops.alerts)",
               _TENANT, registry=REGISTRY)
REPOSITORY_BYTES = Gauge("countycloud_backup_repository_bytes", "Size of a site's restic repository on disk",
                         ["site"], registry=REGISTRY)
REPOSITORY_CHECK_OK = Gauge("countycloud_backup_repository_check_ok",
                            "The site repository's last daily check: 1 clean, 0 damage found, -1 none yet",
                            ["site"], registry=REGISTRY)
REPOSITORY_UP = Gauge("countycloud_backup_repository_readable", "1 when the site's repository was read",
                      ["site"], registry=REGISTRY)


def publish(status: ops.CountyStatus, thresholds: ops.Thresholds = ops.Thresholds()) -> list[str]:
    """Set one county's gauges; returns its alerts."""
    tenant = status.tenant
    missing = float("nan")  # nothing to say yet: absent rather than a misleading zero
    LAST_BACKUP_AGE.labels(tenant).set(status.last_backup_age_s if status.last_backup_age_s is not None
                                       else missing)
    OFFSITE_LAG.labels(tenant).set(status.offsite_lag_s if status.offsite_lag_s is not None else missing)
    VERIFIED_OK.labels(tenant).set(-1 if status.last_verified_ok is None else int(status.last_verified_ok))
    VERIFIED_AGE.labels(tenant).set(status.last_verified_age_s if status.last_verified_age_s is not None
                                    else missing)
    POINTS.labels(tenant).set(status.points)
    DATABASE_BYTES.labels(tenant).set(status.bytes if status.bytes is not None else missing)
    said = ops.alerts(status, thresholds)
    ALERTS.labels(tenant).set(len(said))
    return said


def publish_check(site: str, ok: bool, findings: tuple[str, ...] = ()) -> None:
    """The daily repository check's outcome; damage is an alert (logged) as well as the gauge."""
    REPOSITORY_CHECK_OK.labels(site).set(int(ok))
    if not ok:
        log.error("backup alert: %s's repository is damaged: %s", site, "; ".join(findings[:5]))


def refresh(now: datetime | None = None) -> list[str]:
    """Read every pair's repositories once and publish every protected county; returns the alerts."""
    from controlplane import backup_schedule, bootstrap

    platform = bootstrap.platform()
    now = now or datetime.now(UTC)
    with session_scope(platform.engine) as session:
        objectives = backup_schedule.rpo_objectives(session)  # one per protected county
    for slug, objective in objectives.items():
        RPO_OBJECTIVE.labels(slug).set(objective.total_seconds())
    grouped: dict[ops.BackupSites, list[str]] = {}
    for slug in objectives:
        grouped.setdefault(backup_schedule.county_sites(slug), []).append(slug)
    said: list[str] = []
    readable: dict[str, bool] = {}  # a repository in two pairs (a county failed over) is up if both read it
    for sites, slugs in grouped.items():
        found, unreachable = ops.points_by_county(platform, sites)
        for site in (sites.primary, sites.offsite):
            readable[site] = readable.get(site, True) and site not in unreachable
            REPOSITORY_BYTES.labels(site).set(ops.repository_bytes(platform, site))
        for slug in slugs:
            status = ops.county_status(slug, found.get(slug, []),
                                       verifications.of_tenant(platform.engine, slug), now)
            said += publish(status)
    for site, up in readable.items():
        REPOSITORY_UP.labels(site).set(int(up))
    return said


_stop = threading.Event()
_thread: threading.Thread | None = None


def start(interval_s: float = REFRESH_S) -> None:
    """Serve the backup gauges on /metrics and refresh them on a thread until `stop`."""
    global _thread
    metrics.add_registry(REGISTRY)
    if _thread is not None and _thread.is_alive():
        return
    _stop.clear()
    previous: set[str] = set()

    def loop() -> None:
        nonlocal previous
        while not _stop.is_set():
            try:
                standing = set(refresh())
                for line in sorted(standing - previous):  # an alert is logged when it starts
                    log.error("backup alert: %s", line)
                previous = standing
            except Exception:
                log.exception("backup metrics refresh failed")
            _stop.wait(interval_s)

    _thread = threading.Thread(target=loop, name="countycloud-backup-metrics", daemon=True)
    _thread.start()


def stop() -> None:
    _stop.set()
