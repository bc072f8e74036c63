"""The replicated tier's periodic work (`countycloud serve`): the secondary's replica target kept up
(backup/replicaserver.py, like the offsite REST server before each copy) and every active county of
the `replicated` tier streaming (backup.replication.check_streams: Litestream installed and running
in its guest, and its replica reaching the transaction the guest had cut; one that stays behind,
as after a restart of the target under it, restarted on a new host connection of its guestfwd).
Registered with controlplane.workers.register_periodic."""

from __future__ import annotations

import logging
from datetime import datetime

from backup import replication
from controlplane import bootstrap
from inventory import queries
from inventory.db import session_scope
from inventory.enums import Lifecycle, ProtectionTier

log = logging.getLogger("countycloud.backup")

WORK = "backup-replication"
SCHEDULE = "*/15 * * * * *"  # a county that lost its stream is back within about 15 s


def replicated_counties() -> list[str]:
    """Active counties of the replicated tier running at their home site. One running elsewhere
    after a failover does not stream: its target is the site it runs at, whose replica is what it
    was restored from (the failback sets that replica aside; the stream resumes at home)."""
    with session_scope(bootstrap.engine()) as session:
        return [tenant.slug for tenant in queries.list_tenants(session, Lifecycle.ACTIVE)
                if tenant.protection is ProtectionTier.REPLICATED and tenant.running_site is None]


def replicate(_at: datetime) -> None:
    counties = replicated_counties()
    if not counties:
        return
    platform = bootstrap.platform()
    target = replication.ensure_target(platform)
    # All counties in one check: their replicas share one catch-up wait instead of one each.
    for checked in replication.check_streams(platform, counties, target=target):
        if checked.action is replication.StreamAction.FAILED:
            log.error("replication of %s could not be checked or restarted: %s", checked.tenant,
                      checked.error)
        elif checked.action is not replication.StreamAction.STREAMING:
            log.info("replication of %s %s", checked.tenant, checked.action.value)


def register() -> None:
    from controlplane import workers

    workers.register_periodic(WORK, SCHEDULE, replicate)
