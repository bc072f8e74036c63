"""What a recovery of the platform database tells the operator before the failover (`countycloud
platform recover` prints it, --json gives it whole): what the restored copy holds (the sites, the
counties and where each ran, the fenced copies, the jobs the lost control plane left unfinished), and
what else the failover and the service at the DR site read from its state folder and whether it is
there. Both are read only, after the restore, so that the operator decides on the failover from what
is actually at the DR site rather than from what the lost site had."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from backup import repository
from controlplane.platform_recovery_plan import Next
from inventory import queries
from inventory.db import make_engine, session_scope
from inventory.jobs import Job, JobStatus
from provisioning import fencing, probe_accounts, sites

# --- what the DR site holds besides the database ----------------------------------------------

@dataclass(frozen=True)
class Need:
    """Something besides the database that a control plane at the DR site uses, and whether it is there."""

    what: str
    path: str
    present: bool
    without: str  # what happens without it


def dr_site_needs(state_dir: Path, site: str, counties: list[str]) -> list[Need]:
    """What the failover and the service at `site` read from the state folder (docs/dr.md), checked
    (reads only)."""
    backup = repository.site_backup(state_dir, site)
    platform_key = Path(state_dir) / "ssh" / "id_ed25519"
    probes = [county for county in counties if not probe_accounts.path_of(state_dir, county).exists()]
    return [
        Need(f"{site}'s repository password", str(backup.password_file), backup.password_file.exists(),
             "the failover cannot read the counties' restore points (keep it in the DR safe)"),
        Need(f"{site}'s repository", str(backup.repository_dir), (backup.repository_dir / "config").is_file(),
             "no restore point to bring a county back from"),
        Need(f"{site}'s daemons", str(sites.site_paths(state_dir, site).root),
             sites.state(sites.site_paths(state_dir, site)) is sites.SiteState.UP,
             f"the failover refuses to start: `countycloud site start {site}`"),
        Need("the guests' SSH key", str(platform_key), platform_key.exists(),
             "a new key is made; counties brought up here get it, the ones already running here do "
             "not answer SSH (`tenant exec`, the SSH copy) until configured again"),
        Need("probe accounts", str(probe_accounts.directory(state_dir)), not probes,
             f"monitoring does not probe {', '.join(probes)} until `tenant configure` makes accounts"
             if probes else ""),
    ]


# --- what the copy holds ------------------------------------------------------------------------

@dataclass(frozen=True)
class CountyAt:
    slug: str
    name: str
    home: str
    runs_at: str
    status: str


@dataclass(frozen=True)
class Holding:
    """What a platform database says: the sites, the counties and where each runs, the fence ledger,
    the jobs left unfinished (their processes ran at the lost control plane)."""

    sites: list[dict[str, str]]
    counties: list[CountyAt]
    fenced: list[dict[str, str]]
    unfinished_jobs: list[dict[str, str]]


@dataclass(frozen=True)
class _LedgerHome:
    engine: Any
    state_dir: Path


def holding(url: str, state_dir: Path) -> Holding:
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            declared = [{"site": site.name, "role": site.role.value, "status": site.status.value}
                        for site in queries.list_sites(session)]
            counties = [CountyAt(tenant.slug, tenant.name, tenant.home_site.name, tenant.current_site.name,
                                 tenant.status.value) for tenant in queries.list_tenants(session)]
            left = (select(Job).where(Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]))
                    .order_by(Job.created_at))
            unfinished = [{"job": job.id, "kind": job.kind.value, "target": job.target,
                           "status": job.status.value} for job in session.scalars(left)]
        fenced = [{"site": copy.site, "vm": copy.vm, "how": copy.how.value,
                   "at": datetime.fromtimestamp(copy.at, UTC).isoformat()}
                  for copy in fencing.fenced(_LedgerHome(engine, state_dir))]
    finally:
        engine.dispose()
    return Holding(declared, counties, fenced, unfinished)


@dataclass(frozen=True)
class Recovery:
    done: Next
    database: str
    site: str
    repository: str
    snapshot_id: str
    original_id: str | None  # the primary's snapshot it is a copy of (restic copy's `original`)
    taken_at: datetime
    age_s: float
    holding: Holding
    needs: list[Need]
    password_installed: str | None = None
    lost_anchor_seq: int | None = None

    def as_json(self) -> dict[str, Any]:
        found = asdict(self)
        found["done"] = self.done.value
        found["taken_at"] = self.taken_at.isoformat()
        return found
