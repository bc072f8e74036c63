"""Job step lists for a county's backup round and for restoring / verifying a restore point.

Backup round:  check -> copy (app-consistent: backup/frozen.py, else backup/consistent.py; the
figures read during its quick_check) -> figures -> snapshot (into both repositories at once) ->
offsite (restic copy, only when the offsite write did not succeed) -> retention. The figures are read
from the staged copy before the snapshot because they are stored as the snapshot's own tags
(backup/figures.py says why); the snapshot step's restic calls are what make a restore point.

Restore (`mode`: verify, copy, in-place): check (choose the snapshot) -> fetch (restic dump, integrity
check, figures compared with those recorded) -> data-disk (a NEW ccdata disk with the restored
tenant.db) -> then a VM brought up on it with provisioning.vm's operations at the chosen site:
verify and copy use a clone of their own (own name, UUID and ports, no tenant address); in-place
stops the county's VM, swaps its data disk (the old one kept beside it), and starts it again. Every
VM bring-up ends by reading the figures back from the running app's database over SSH.

Every step is idempotent: the snapshot step finds the snapshots a killed attempt of the same job
made (tag job=ID, in either repository) instead of making a second; disks are linked into place only
when complete; the VM operations are idempotent themselves.
"""

from __future__ import annotations

import hashlib
import os
import uuid as uuidlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from backup import consistent, figures, frozen, pairing, replication, repository, restored, verifications
from backup.figures import Figures
from backup.pairing import JOB_TAG
from backup.platformdb import CopyCheck, check_sqlite
from backup.policy import ProtectionTier, policy_from
from backup.restic import (
    BackupResult,
    Repository,
    RepositoryMissing,
    Restic,
    ResticTimeout,
    ServerUnreachable,
    Snapshot,
    SnapshotNotFound,
)
from backup.restserver import RestServerError
from inventory import queries
from inventory.db import session_scope
from inventory.jobs import JobKind, Step, StepContext, StepResult, StepsBuilder
from provisioning import images, records, templates, vm
from provisioning.address import port_free
from provisioning.hypervisor import DomainState, HypervisorError
from provisioning.platform import Platform
from provisioning.vmplan import VmPaths, VmPlan

# The secondary's REST server; every other site's port derives from it (backup/restports.py).
DEFAULT_REST_PORT = int(os.environ.get("COUNTYCLOUD_BACKUP_REST_PORT", "23000"))
# Forwards of restore clones (verify / copy): a block of the backup range, clear of the gateway's
# (21000-21999), the guests' (22000-22999) and the backup servers' (23000-23199) ports.
CLONE_PORTS = range(23200, 23400)
SECRET_TAG = "secret"  # a fingerprint of the county's app secret when the point was made
SIZE_TAG = "bytes"  # the database's size, recorded with the snapshot (restic 0.14 keeps no summary)
STAGED_NAME = "tenant.db"
SNAPSHOT_MARK = "snapshot.started"  # in the job's folder: an attempt of the snapshot step began


LogFn = Callable[[str], None]


class RestoreMode(StrEnum):
    VERIFY = "verify"  # prove the restore point: clone up, /healthz, figures, torn down
    COPY = "copy"  # the same clone, left running under its own name for inspection
    IN_PLACE = "in-place"  # the county's own VM on the restored disk


class BackupArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tenant: str
    offsite_site: str = "secondary"
    rest_port: int = DEFAULT_REST_PORT  # the offsite site's own server (backup.ops.sites_of)
    # Kept for recorded jobs; the retention step reads the county's tier from the inventory.
    tier: ProtectionTier = ProtectionTier.BACKUP


class RestoreArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tenant: str
    mode: RestoreMode = RestoreMode.VERIFY
    snapshot: str | None = None  # None: the newest of the county at `from_site`'s repository
    site: str = "secondary"  # where the restored VM runs (verification: the secondary)
    from_site: str = "secondary"  # whose repository the snapshot is read from (the offsite one)
    primary_site: str = "primary"
    rest_port: int = DEFAULT_REST_PORT  # `from_site`'s server, when it is not `primary_site`
    # A copy's own name (a hostname); None: SLUG-copy-XXXXXX. Never the county's own VM name.
    name: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")


# --- results handed between steps --------------------------------------------------------------

class CopyWay(StrEnum):
    """How a round's database copy was taken (backup/frozen.py says why the freeze is first)."""

    FREEZE = "freeze"  # guest-agent freeze of the data file system, read from the disk on the host
    SSH = "ssh"  # the guest's online backup streamed over its SSH forward (the agent did not freeze)
    PRODUCER = "producer"  # a command given by the caller (a database outside a guest)


class Staged(StepResult):
    path: str
    bytes: int
    way: CopyWay = CopyWay.SSH
    frozen_s: float | None = None  # how long the county's writers were held (way freeze)
    # Read during the copy's quick_check (figures.read_checked: the two overlap); the figures step
    # hands them on. None in results recorded before they were read here: that step reads them.
    figures: Figures | None = None

    def summary(self) -> str:
        how = (f"by freeze ({self.frozen_s:.2f} s frozen)" if self.way is CopyWay.FREEZE and self.frozen_s
               is not None else f"by {self.way.value}")
        return f"copy of {self.bytes} bytes staged {how}, quick_check ok"


class Snapshotted(StepResult):
    snapshot_id: str
    data_added: int
    duration_s: float
    reused: bool = False  # found from a killed attempt of this job, not made now
    # The same point written into the offsite repository at once (backup/pairing.py); None: not
    # written (the offsite step copies it), `offsite_error` says why when the write failed.
    offsite_id: str | None = None
    offsite_error: str | None = None

    def summary(self) -> str:
        made = "found (made by an earlier attempt of this job)" if self.reused else "made"
        return f"snapshot {self.snapshot_id[:8]} {made}, {self.data_added} bytes added"


class Chosen(StepResult):
    snapshot_id: str
    original_id: str | None = None  # for an offsite copy: the primary's snapshot it was copied from
    taken_at: str
    recorded: dict[str, str]  # the figures recorded with it (its tags)
    clone_name: str
    clone_uuid: str
    ssh_port: int
    app_port: int

    def summary(self) -> str:
        return f"snapshot {self.snapshot_id[:8]} of {self.taken_at}; VM {self.clone_name}"


class Fetched(StepResult):
    path: str
    bytes: int
    figures: Figures

    def summary(self) -> str:
        return f"{self.bytes} bytes, integrity_check ok, figures as recorded: {self.figures.summary()}"


class Proven(StepResult):
    healthz_port: int
    figures: Figures

    def summary(self) -> str:
        return f"/healthz answered on 127.0.0.1:{self.healthz_port}; figures as recorded"


# --- pure parts --------------------------------------------------------------------------------

def clone_name(tenant: str, job_id: str, mode: RestoreMode) -> str:
    """The restored VM's own name: a hostname (<= 63), stable for the job (a rerun finds its VM)."""
    suffix = hashlib.sha256(job_id.encode()).hexdigest()[:6]
    kind = "verify" if mode is RestoreMode.VERIFY else "copy"
    return f"{tenant[:63 - len(kind) - len(suffix) - 2]}-{kind}-{suffix}"


def clone_uuid(job_id: str) -> str:
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"countycloud:restore:{job_id}"))


def choose_ports(is_free: Callable[[int], bool], ports: range = CLONE_PORTS) -> tuple[int, int]:
    """Two free ports (SSH, app) from the clones' block."""
    found = [port for port in ports if is_free(port)][:2]
    if len(found) < 2:
        raise RuntimeError(f"no two free ports in {ports.start}-{ports.stop - 1} for a restore clone")
    return found[0], found[1]


def choose_snapshot(snapshots: list[Snapshot], wanted: str | None) -> Snapshot:
    """The snapshot asked for by id (full or short), or the newest; the error says what exists."""
    if not snapshots:
        raise SnapshotNotFound("restore", "the county has no restore point in this repository")
    if wanted is None:
        return max(snapshots, key=lambda snapshot: snapshot.time)
    for snapshot in snapshots:
        if snapshot.id.startswith(wanted) or wanted.startswith(snapshot.short_id):
            return snapshot
    for snapshot in snapshots:  # an offsite copy, asked for by the primary's id it was copied from
        if snapshot.original and len(wanted) >= 8 and snapshot.original.startswith(wanted):
            return snapshot
    raise SnapshotNotFound("restore", f"no restore point {wanted} of this county "
                           f"(have {', '.join(s.short_id for s in snapshots[-5:])} ...)")


def choose_held(points: list[Snapshot], wanted: str | None,
                primary: Callable[[], list[Snapshot]] | None = None) -> tuple[Snapshot, str | None]:
    """choose_snapshot, and the primary's id of the point chosen (its `original` for a copy). A
    primary's id asked for at the offsite, whose point was written there with it rather than copied
    (no `original`), is found through the primary's own list (`primary`, read only then)."""
    try:
        chosen = choose_snapshot(points, wanted)
        return chosen, chosen.original
    except SnapshotNotFound as missing:
        if wanted is None or primary is None:
            raise
        try:
            listed = primary()
        except Exception:  # the primary's repository lost with its site: the point is not known here
            raise missing from None
        found = pairing.counterpart(wanted, points, listed)
        if found is None:
            raise
        return found, next(s.id for s in listed if s.id.startswith(wanted))


def secret_fingerprint(secret: str) -> str:
    """Names the county's app secret without revealing it (a tag is readable to whoever lists)."""
    return hashlib.sha256(f"countycloud-backup:{secret}".encode()).hexdigest()[:16]


def check_secret(snapshot: Snapshot, secret: str) -> None:
    """The restored database's signing keys are wrapped with the secret it was made under: a VM given
    another one could not verify old approval chains nor accept its users' passwords. The platform
    database (backed up with the county's secret, backup/platformdb.py) is where the right one is."""
    recorded = snapshot.tag_value(SECRET_TAG)
    if recorded is not None and recorded != secret_fingerprint(secret):
        raise ValueError(f"restore point {snapshot.short_id} was made under another app secret than the "
                         "county's now; restore the platform database of that time to get it back")


def clone_plan(county: VmPlan, chosen: Chosen, site: str) -> VmPlan:
    """The county's VM as a clone of its own: same size, settings and secret (the restored database's
    signing keys are wrapped with it), its own name, UUID, ports and site."""
    return replace(county, name=chosen.clone_name, uuid=chosen.clone_uuid, site=site,
                   ssh_port=chosen.ssh_port, app_port=chosen.app_port)


def restored_disk(site_disks: Path, chosen: Chosen) -> Path:
    """Where a restore's new data disk is made: the site's disks, named by VM and restore point."""
    return site_disks / "restored" / f"{chosen.clone_name}-{chosen.snapshot_id[:8]}.img"


# What an unreachable offsite site looks like to a round: its server down or not starting, its
# repository not answering. A wrong password or a damaged repository is not that, and fails the round.
OFFSITE_AWAY: tuple[type[Exception], ...] = (ServerUnreachable, RepositoryMissing, ResticTimeout,
                                             RestServerError)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


# --- edges used by the steps -------------------------------------------------------------------

def write_mark(path: Path) -> None:
    """An empty file, on disk (file and folder synced) before the caller goes on."""
    with path.open("wb") as mark:
        os.fsync(mark.fileno())
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _offsite_snapshots(restic: Restic, repo: Repository, tags: Sequence[str]) -> list[Snapshot]:
    """The offsite repository's snapshots with `tags`; none when it cannot be reached (the rounds go
    on without it; any other failure is the offsite step's to report)."""
    try:
        return restic.snapshots(repo, tags=tags)
    except Exception:  # see the docstring
        return []


def _restic(platform: Platform, site: str) -> Restic:
    return Restic(cache_dir=repository.site_backup(platform.state_dir, site).cache_dir)


def _repositories(platform: Platform, primary: str, offsite: str, port: int) -> repository.Pair:
    return repository.pair(platform.state_dir, primary, offsite, port)


def _repository_of(platform: Platform, site: str, primary: str, port: int) -> Repository:
    """A site's repository as this control plane reaches it: the primary's by path, another's by REST."""
    backup = repository.site_backup(platform.state_dir, site)
    return backup.local() if site == primary else backup.remote(port)


def _county_plan(platform: Platform, tenant: str) -> VmPlan:
    plans = records.load_plans(platform.engine, tenant)
    if len(plans) != 1:
        raise RuntimeError(f"tenant {tenant}: {len(plans)} VMs; backups take a one-VM county's database")
    return plans[0]


def take_database(platform: Platform, site: str, plan: VmPlan, target: Path, log: LogFn, *,
                  disk: Path | None = None) -> Staged:
    """The VM's database, app-consistent, at `target`: by a freeze of its data file system and a read
    of its data disk on the host (backup/frozen.py); when the agent does not freeze (away, refusing,
    the site's daemon gone), by the guest's online backup over SSH. A thaw the agent cannot make is
    made over SSH; one that fails both ways is an error, never a fallback."""
    disk = disk or vm.vm_disks(platform, site, plan.name).data_disk

    def thaw_over_ssh() -> None:
        try:
            consistent.unfreeze(platform.ssh_key, plan.ssh_port)
        except consistent.CopyFailed as error:
            raise frozen.ThawFailed(f"{plan.name}: no thaw over SSH either: {error}") from error
        log(f"{plan.name}: the agent did not answer the thaw; thawed over SSH")

    try:
        with platform.hypervisor(site) as hv:
            taken = frozen.take(hv, plan.name, disk, target, check=False, thaw_otherwise=thaw_over_ssh)
        # quick_check (integrity_check is the verification's, CopyCheck says why) with the figures
        return Staged(path=str(taken.path), bytes=taken.bytes, way=CopyWay.FREEZE, frozen_s=taken.frozen_s,
                      figures=figures.read_checked(taken.path))
    except (frozen.FreezeFailed, frozen.ExtractFailed, HypervisorError) as error:
        log(f"no frozen copy ({_first_line(error)}); taking the online backup over SSH")
    # Thawed first in the same session: a freeze whose answer was lost may still hold the file system.
    size = consistent.stage(consistent.thawed_copy_argv(platform.ssh_key, plan.ssh_port), target)
    return Staged(path=str(target), bytes=size, way=CopyWay.SSH, figures=figures.read_checked(target))


# --- backup round ------------------------------------------------------------------------------

def backup_steps(raw: Mapping[str, Any], platform: Platform, *, producer: Sequence[str] | None = None,
                 look_up_always: bool = False) -> list[Step]:
    """`producer`: the command writing the database to stdout (default: the database taken by a freeze
    of the guest's data file system, or its online backup over SSH; backup.ops.backup_now passes
    another for a database outside a guest). `look_up_always`: the snapshot step looks for the
    job's snapshot even on a first attempt (backup_now: its folder does not outlive a call, its key
    does)."""
    args = BackupArgs.model_validate(raw)
    county = consistent.county_tag(args.tenant)

    def pair(primary: str) -> repository.Pair:
        return _repositories(platform, primary, args.offsite_site, args.rest_port)

    def check(ctx: StepContext) -> str:
        site = records.current_site(platform.engine, args.tenant)
        if site == args.offsite_site:
            # Requested before a failover or failback moved the county: its copy would land in the
            # repository it is taken from, and the two sides' forgets would lock each other out.
            raise RuntimeError(f"{args.tenant} runs at {site}, this round's offsite site; request a new "
                               f"round (it pairs {site} with the other site)")
        plan = _county_plan(platform, args.tenant)
        restic = _restic(platform, site)
        primary = repository.ensure_local(restic, platform.state_dir, site)
        # The offsite site being away must not stop the rounds: they keep landing locally and the
        # offsite catch-up (backup.ops.copy_offsite, scheduled) copies them once it is back.
        try:
            made = repository.ensure_pair(restic, platform.state_dir, site, args.offsite_site, args.rest_port)
            offsite = made.offsite.location
        except OFFSITE_AWAY as error:
            offsite = f"offsite unavailable ({_first_line(error)})"
        return (f"tenant {args.tenant} at {site}: VM {plan.name}, SSH 127.0.0.1:{plan.ssh_port}; "
                f"repositories {primary.location} and {offsite}")

    def copy(ctx: StepContext) -> Staged:
        staged = ctx.artifacts / STAGED_NAME
        if producer is not None:
            size = consistent.stage(producer, staged)
            return Staged(path=str(staged), bytes=size, way=CopyWay.PRODUCER,
                          figures=figures.read_checked(staged))
        site = records.current_site(platform.engine, args.tenant)
        return take_database(platform, site, _county_plan(platform, args.tenant), staged, ctx.log)

    def read_figures(ctx: StepContext) -> Figures:
        staged = ctx.result("copy", Staged)
        return staged.figures or figures.read(Path(staged.path))

    def snapshot(ctx: StepContext) -> Snapshotted:
        site = records.current_site(platform.engine, args.tenant)
        restic, repositories = _restic(platform, site), pair(site)
        mine = [county, f"{JOB_TAG}={ctx.job_id}"]
        # Only an attempt that already got as far as starting restic can have stored this job's
        # snapshots: the mark (durable before restic starts) says so, and saves the first attempt a
        # `restic snapshots` per repository (a key derivation each, ~0.5 s) per round.
        mark = ctx.artifacts / SNAPSHOT_MARK
        made: Snapshot | None = None
        offsite_made: Snapshot | None = None
        if look_up_always or mark.exists():
            with ThreadPoolExecutor(max_workers=1) as pool:
                there = pool.submit(_offsite_snapshots, restic, repositories.offsite, mine)
                made = next(iter(restic.snapshots(repositories.primary, tags=mine)[-1:]), None)
                offsite_made = next(iter(there.result()[-1:]), None)
            if made is not None:  # a killed attempt of this job already stored it: never a second point
                # restic 0.14's backup summary names a snapshot by its short id: so does this result
                return Snapshotted(snapshot_id=made.short_id, data_added=0, duration_s=0.0, reused=True,
                                   offsite_id=offsite_made.short_id if offsite_made else None)
        write_mark(mark)
        staged = Path(ctx.result("copy", Staged).path)
        tags = [*figures.to_tags(ctx.result("figures", Figures)), f"{JOB_TAG}={ctx.job_id}",
                f"{SIZE_TAG}={staged.stat().st_size}",
                f"{SECRET_TAG}={secret_fingerprint(_county_plan(platform, args.tenant).app_secret)}"]
        # Both repositories at once, from the same staged copy, with the same time and tags: the point
        # is at both sites when the slower of the two ends, instead of after a `restic backup` and then
        # a `restic copy` (which opens two repositories: two more key derivations; docs/benchmarks.md,
        # "#12: the round toward 2 s"). backup/pairing.py pairs the two by the job tag.
        # (a rerun that found the offsite's point alone gives the primary's the same time)
        taken_at = offsite_made.time if offsite_made else datetime.now(UTC).replace(microsecond=0)

        def store(repository_: Repository) -> BackupResult:
            return consistent.store(restic, repository_, staged, args.tenant, tags=tags, taken_at=taken_at)

        offsite_id, offsite_error = (offsite_made.short_id if offsite_made else None), None
        with ThreadPoolExecutor(max_workers=1) as pool:
            offsite_done = None if offsite_id else pool.submit(store, repositories.offsite)
            done = store(repositories.primary)
            if offsite_done is not None:
                try:
                    offsite_id = offsite_done.result().snapshot_id
                except Exception as error:  # the offsite step copies it, and reports whatever keeps
                    offsite_error = _first_line(error)  # the offsite away, as the rounds always did
        staged.unlink(missing_ok=True)
        return Snapshotted(snapshot_id=done.snapshot_id, data_added=done.data_added,
                           duration_s=done.duration_s, offsite_id=offsite_id, offsite_error=offsite_error)

    def offsite(ctx: StepContext) -> str:
        done = ctx.result("snapshot", Snapshotted)
        if done.offsite_id is not None:
            return f"written with the snapshot as {done.offsite_id[:8]} (both repositories at once)"
        # Not written with it (the offsite away or failing, or found made by a killed attempt alone):
        # `restic copy`, the catch-up's way, which records the primary's id as `original`.
        site = records.current_site(platform.engine, args.tenant)
        repositories, restic = pair(site), _restic(platform, site)
        try:
            there = restic.snapshots(repositories.offsite, tags=[county, f"{JOB_TAG}={ctx.job_id}"])
            if there:  # an offsite write that failed late, after saving, or an earlier attempt's copy
                return f"already there as {there[-1].short_id}"
            copied = restic.copy(repositories.offsite, repositories.primary, snapshot_ids=[done.snapshot_id])
        except OFFSITE_AWAY as error:
            return f"offsite unreachable ({_first_line(error)}); kept locally, the catch-up copies it later"
        return f"copied {len(copied.copied)}, already there {len(copied.skipped)} ({copied.wall_s:.2f} s)"

    def retention(ctx: StepContext) -> str:
        site = records.current_site(platform.engine, args.tenant)
        repositories, restic = pair(site), _restic(platform, site)
        # The county's tier as the inventory says now (args.tier is what was asked when submitted).
        with session_scope(platform.engine) as session:
            keep = policy_from(queries.protection_of(session, args.tenant)).retention
        # One group per county (its snapshots carry host=slug): the figures and job tags differ on
        # every snapshot, so grouping by tags would make each snapshot a group of its own.
        # The two repositories are apart (each its own lock): both forgets run at once.
        with ThreadPoolExecutor(max_workers=2) as pool:
            primary_done = pool.submit(restic.forget, repositories.primary, keep, tags=[county],
                                       group_by="host")
            offsite_done = pool.submit(restic.forget, repositories.offsite, keep, tags=[county],
                                       group_by="host")
            done = primary_done.result()
            said = [f"primary: kept {len(done.kept)}, forgot {len(done.removed)}"]
            try:
                done = offsite_done.result()
                said.append(f"offsite: kept {len(done.kept)}, forgot {len(done.removed)}")
            except OFFSITE_AWAY as error:
                said.append(f"offsite: unreachable ({_first_line(error)})")
        return "; ".join(said) + " (pruning is scheduled apart)"

    return [
        Step("check", check, "the county's VM, both repositories (made if missing)"),
        Step("copy", copy, "the county's database, app-consistent (freeze, else SSH), quick_check"),
        Step("figures", read_figures, "voucher count, certified per line, journal balance"),
        Step("snapshot", snapshot, "restic backup --stdin into both repositories at once, figures as tags"),
        Step("offsite", offsite, "restic copy to the secondary site, if its write did not succeed"),
        Step("retention", retention, "forget by the tier's retention, both repositories"),
    ]


# --- restore / verify --------------------------------------------------------------------------

def restore_steps(raw: Mapping[str, Any], platform: Platform) -> list[Step]:
    args = RestoreArgs.model_validate(raw)
    in_place = args.mode is RestoreMode.IN_PLACE

    def source() -> tuple[Restic, Repository]:
        return (_restic(platform, args.primary_site),
                _repository_of(platform, args.from_site, args.primary_site, args.rest_port))

    def check(ctx: StepContext) -> Chosen:
        restic, repo = source()
        tags = [consistent.county_tag(args.tenant)]
        points = restic.snapshots(repo, tags=tags)
        primary = None if args.from_site == args.primary_site else (lambda: restic.snapshots(
            _repository_of(platform, args.primary_site, args.primary_site, args.rest_port), tags=tags))
        chosen, original_id = choose_held(points, args.snapshot, primary)
        county = _county_plan(platform, args.tenant)
        if in_place:
            home = records.current_site(platform.engine, args.tenant)
            if args.site != home:
                raise RuntimeError(f"an in-place restore runs where {args.tenant} runs ({home}), "
                                   f"not at {args.site}; restore as a copy to bring it up elsewhere")
            name, uuid, ssh_port, app_port = county.name, county.uuid, county.ssh_port, county.app_port
        else:
            if args.name is not None and (args.mode is not RestoreMode.COPY or args.name == county.name):
                raise ValueError(f"a name of its own is for a copy, and not {county.name}: {args.name}")
            name = args.name or clone_name(args.tenant, ctx.job_id, args.mode)
            uuid = clone_uuid(ctx.job_id)
            ssh_port, app_port = choose_ports(port_free)
        check_secret(chosen, county.app_secret)
        return Chosen(snapshot_id=chosen.id, original_id=original_id, taken_at=chosen.time.isoformat(),
                      recorded=figures.from_tags(chosen.tags), clone_name=name, clone_uuid=uuid,
                      ssh_port=ssh_port, app_port=app_port)

    def fetch(ctx: StepContext) -> Fetched:
        chosen = ctx.result("check", Chosen)
        restic, repo = source()
        done = restic.dump(repo, chosen.snapshot_id, f"/{consistent.DATABASE_FILENAME}",
                           ctx.artifacts / STAGED_NAME)
        check_sqlite(done.target, CopyCheck.FULL)
        found = figures.read(done.target)
        differ = figures.differences(chosen.recorded, found)
        if differ:
            failed(ctx, f"restored database: {'; '.join(differ)}")
            raise figures.FiguresError(f"snapshot {chosen.snapshot_id[:8]}: {'; '.join(differ)}")
        return Fetched(path=str(done.target), bytes=done.bytes, figures=found)

    def restored_disk_path(chosen: Chosen) -> Path:
        return restored_disk(platform.site(args.site).disks, chosen)

    def plan(ctx: StepContext) -> VmPlan:
        return clone_plan(_county_plan(platform, args.tenant), ctx.result("check", Chosen), args.site)

    def paths(ctx: StepContext) -> VmPaths:
        chosen = ctx.result("check", Chosen)
        # in place, the restored disk is swapped into the VM's own data disk path (step swap)
        return vm.vm_disks(platform, args.site, chosen.clone_name,
                           data_disk=None if in_place else restored_disk_path(chosen))

    def data_disk(ctx: StepContext) -> str:
        chosen = ctx.result("check", Chosen)
        fetched = Path(ctx.result("fetch", Fetched).path)
        target = restored_disk_path(chosen)
        made = restored.make(target, plan(ctx).data_disk_mib, fetched)
        return f"{'made' if made else 'kept'} {target}"

    def stop(ctx: StepContext) -> str:
        chosen = ctx.result("check", Chosen)
        with platform.hypervisor(args.site) as hv:
            removed = vm.tear_down(hv, chosen.clone_name, paths(ctx), purge=False)
        return ", ".join(removed) or "already stopped"

    def swap(ctx: StepContext) -> str:
        chosen = ctx.result("check", Chosen)
        own, new = paths(ctx).data_disk, restored_disk_path(chosen)
        kept = own.with_name(f"{own.name}.before-{chosen.snapshot_id[:8]}")
        if not new.exists() and own.exists() and kept.exists():
            return f"already swapped (the disk before is {kept})"
        if own.exists() and not kept.exists():
            os.link(own, kept)
        os.replace(new, own)
        return f"{own} is the restored disk; the one before is kept as {kept}"

    def set_replica_aside(ctx: StepContext) -> str:
        """A replicated county's stream held the database this restore replaces: left served, that
        lineage's states (higher transaction ids than the restored database's new stream) would be a
        later failover's choice, bringing back what was just restored over. Kept, not served, as the
        failback does (replication.set_aside); the stream starts afresh when the county starts."""
        kept = replication.set_aside(platform, args.tenant, ctx.job_id)
        return f"its replica set aside as {kept}" if kept is not None else "no replica held"

    def bring_disks(ctx: StepContext) -> str:
        the_plan = plan(ctx)
        backing = _template(platform, args.site, the_plan, ctx).system_disk
        with platform.hypervisor(args.site) as hv:
            return ", ".join(vm.make_disks(hv, the_plan, paths(ctx), system_backing=backing,
                                           ssh_key=platform.ssh_key))

    def start(ctx: StepContext) -> str:
        the_plan = plan(ctx)
        with platform.hypervisor(args.site) as hv:
            exists = hv.state(the_plan.name) is not DomainState.MISSING
            template = None if exists else _template(platform, args.site, the_plan, ctx)
            image = None if exists else _image(platform, args.site, ctx)
            return vm.start(hv, the_plan, paths(ctx), mode=vm.BringUp.CLONE, image=image, template=template,
                            domain_type=platform.domain_type).how

    def activate(ctx: StepContext) -> str:
        chosen = ctx.result("check", Chosen)
        with platform.hypervisor(args.site) as hv:
            done = vm.activate(hv, chosen.clone_name, paths(ctx))
        return f"agent after {done.agent_wait_s:.2f} s; plugged {', '.join(done.plugged) or 'nothing'}"

    def prove(ctx: StepContext) -> Proven:
        chosen = ctx.result("check", Chosen)
        with platform.hypervisor(args.site) as hv:
            vm.wait_ready(hv, chosen.clone_name, chosen.app_port, platform.boot_timeout_s)
        served = ctx.artifacts / "served.db"
        # the database the clone serves, read the rounds' way (its data disk under a freeze)
        taken = take_database(platform, args.site, plan(ctx), served, ctx.log, disk=paths(ctx).data_disk)
        found = taken.figures or figures.read(served)
        differ = figures.differences(chosen.recorded, found)
        if differ:
            failed(ctx, f"served database: {'; '.join(differ)}")
            raise figures.FiguresError(f"the restored VM serves other figures: {'; '.join(differ)}")
        return Proven(healthz_port=chosen.app_port, figures=found)

    def failed(ctx: StepContext, why: str) -> None:
        chosen = ctx.result("check", Chosen)
        verifications.record(platform.engine, tenant=args.tenant, snapshot_id=chosen.snapshot_id,
                             original_id=chosen.original_id, site=args.site, ok=False, detail=why,
                             job_id=ctx.job_id)

    def record(ctx: StepContext) -> str:
        """The point is proven: a VM on it served the figures recorded with it."""
        chosen = ctx.result("check", Chosen)
        verifications.record(platform.engine, tenant=args.tenant, snapshot_id=chosen.snapshot_id,
                             original_id=chosen.original_id, site=args.site, ok=True,
                             detail=ctx.result("prove", Proven).summary(), job_id=ctx.job_id)
        return f"restore point {chosen.snapshot_id[:8]} verified"

    def tear_down(ctx: StepContext) -> str:
        chosen = ctx.result("check", Chosen)
        with platform.hypervisor(args.site) as hv:
            removed = vm.tear_down(hv, chosen.clone_name, paths(ctx), purge=True)
        for scratch in ctx.artifacts.glob("*.db"):
            scratch.unlink()
        return ", ".join(removed) or "nothing left"

    steps = [
        Step("check", check, "choose the restore point and the VM's name and ports"),
        Step("fetch", fetch, "restic dump, integrity_check, figures against those recorded"),
        Step("data-disk", data_disk, "a new ccdata disk holding the restored tenant.db"),
    ]
    if in_place:
        steps += [Step("stop", stop, "the county's VM down (its data disk kept)"),
                  Step("swap", swap, "the restored disk in place; the one before kept beside it"),
                  Step("replica", set_replica_aside, "a replicated county's stream of the replaced database "
                       "set aside")]
    steps += [
        Step("disks", bring_disks, "system overlay on the site's template, seed disk"),
        Step("start", start, "clone of the site's prebooted template"),
        Step("activate", activate, "identity, seed and the restored data disk"),
        Step("prove", prove, "/healthz, then the served database's figures against those recorded"),
        Step("record", record, "the restore point marked verified"),
    ]
    if args.mode is RestoreMode.VERIFY:
        steps.append(Step("tear-down", tear_down, "the verification clone and its disks removed"))
    return steps


def _image(platform: Platform, site: str, ctx: StepContext) -> images.GoldenImage:
    return images.at_site(images.ensure(platform.cache_dir, log=ctx.log), platform.site(site).images)


def _template(platform: Platform, site: str, plan: VmPlan, ctx: StepContext) -> templates.Template:
    image = _image(platform, site, ctx)
    with platform.hypervisor(site) as hv:
        template = templates.build(hv, platform.site(site), image, platform.domain_type, plan.memory_mib,
                                   log=ctx.log)
    templates.check_usable(template)
    return template


def builders() -> dict[JobKind, StepsBuilder]:
    """What the control plane registers (controlplane/bootstrap.register_job_builders)."""
    return {JobKind.BACKUP: backup_steps, JobKind.RESTORE: restore_steps}
