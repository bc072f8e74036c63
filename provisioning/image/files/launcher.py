"""The county VM's one long-running process: activation (identity, settings, data), then tenant_app.

Everything `serve` needs is imported before anything else happens, and activation is done here
with system calls rather than by a shell script: under TCG every process started in the guest
costs 0.1-0.7 s, and a prebooted template is saved while this process waits, so a clone pays
neither Python's imports nor a single fork to become a county.

How it is told what to do:
- cold boot of a county VM: its seed disk (ext4 labelled `ccseed`) is there from the start;
- clone of a template: the host writes ACTIVATE_REQUEST (the host's time, through the guest
  agent's file API, no process started) and then hot-plugs the seed and data disks;
- the template itself: no seed ever comes; it waits, and is saved waiting.

The app does not run as root: activation needs root (the clock, mounts, the hostname, the pool's
reseed, files under /etc), serving does not. Once activated, this process gives the county's data
to the unprivileged APP_USER and becomes that user for good (setgroups, setgid, setuid: real,
effective and saved ids, so no capability is left to get back). It is the same process on every
path: a clone's restored launcher, a cold boot's, and the one systemd starts again when Ansible
restarts the app after a changed setting. No fork, no exec: a clone pays nothing for it.

sshd is not restarted for the new host key: Debian's sshd re-executes itself for every connection
and that child reads the host keys from disk, so the next connection already shows this county's
key (tests/integration/vm checks it with ssh-keyscan). A restart would be a process and a key load
competing with the app's start on the clone's one vCPU.
"""

import asyncio
import ctypes
import fcntl
import gc
import hashlib
import logging.config  # noqa: F401  (uvicorn configures logging with it at start)
import os
import pwd
import shutil
import socket
import time

# Imported before the wait on purpose: the app, its migrations and the server.
import alembic.command  # noqa: F401
import uvicorn
import uvicorn.lifespan.on
import uvicorn.loops.auto
import uvicorn.main
import uvicorn.protocols.http.auto
from fastapi import FastAPI

import tenant_app.__main__ as entry
import tenant_app.app
import tenant_app.migrations
from tenant_app.settings import load_settings

RUN = "/run/countycloud"
SETTINGS = "/etc/tenant-app.env"
ACTIVATE_REQUEST = f"{RUN}/activate-request"
ACTIVATED = f"{RUN}/activated"
FAILED = f"{RUN}/activation-error"
# The digest of the settings this process serves with, read by the host through the guest agent
# (provisioning/configure.py): equal to the declared settings' digest, no Ansible converge is needed.
SETTINGS_DIGEST = f"{RUN}/settings-digest"
APP_USER = "tenant-app"  # made in the golden image (provisioning/images.py)
SEED_DIR = f"{RUN}/seed"
DATA_DIR = "/srv/tenant-data"
EMPTY_DB = "/opt/tenant-app/empty.db"
SEED_LABEL, DATA_LABEL = b"ccseed", b"ccdata"
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07): reseed the kernel's generator from its input pool now
MS_RDONLY = 1
POLL_S = 0.02

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def ext4_label(device: str) -> bytes | None:
    """The volume label of an ext4 file system, read from its superblock (no blkid process)."""
    try:
        with open(device, "rb") as disk:
            disk.seek(1024)
            superblock = disk.read(136)
    except OSError:
        return None
    if len(superblock) < 136 or superblock[56:58] != b"\x53\xef":
        return None
    return superblock[120:136].rstrip(b"\0")


def devices_by_label() -> dict[bytes, str]:
    found = {}
    for name in sorted(os.listdir("/sys/class/block")):
        if name.startswith("vd") and not name[-1].isdigit():
            label = ext4_label(f"/dev/{name}")
            if label:
                found[label] = f"/dev/{name}"
    return found


def mount(device: str, target: str, flags: int = 0) -> None:
    os.makedirs(target, exist_ok=True)
    if os.path.ismount(target):
        return
    if _libc.mount(device.encode(), target.encode(), b"ext4", flags, None) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mount {device} on {target}: {os.strerror(code)}")


def install(source: str, target: str, mode: int) -> None:
    """Copy a file into place atomically with its mode (what install(1) does, without a process),
    on disk before this returns: a VM killed seconds after its first activation (a site stopped)
    had come back with its settings file empty (ext4 had the name, not yet the bytes), and its app
    could not start again."""
    partial = target + ".new"
    shutil.copyfile(source, partial)
    os.chmod(partial, mode)
    with open(partial, "rb") as written:
        os.fsync(written.fileno())
    os.replace(partial, target)
    folder = os.open(os.path.dirname(target), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def settings_missing(path: str) -> bool:
    """No settings yet, or an empty file: one left by a crash before its bytes reached the disk (a
    guest made before install() synced) is replaced by the seed's as on a first boot."""
    try:
        return os.path.getsize(path) == 0
    except FileNotFoundError:
        return True


def set_clock() -> bool:
    """A restored clone's clock is behind by the time since its template was saved.

    The agent creates the request file before it writes to it: only a complete request (one
    newline-terminated number) counts; until then, look again on the next round.
    """
    try:
        with open(ACTIVATE_REQUEST) as request:
            text = request.read()
    except FileNotFoundError:
        return False
    if not text.endswith("\n"):
        return False
    time.clock_settime(time.CLOCK_REALTIME, float(text))
    # Taken once: the request stays in /run for the whole boot, and a launcher started again later
    # (a converge that changed the settings, a crash) would set the clock back to the activation.
    os.replace(ACTIVATE_REQUEST, ACTIVATE_REQUEST + ".taken")
    return True


def settings_digest(text: str) -> str:
    """sha256 of the settings as provisioning renders them (one KEY=VALUE line each, each ending in a
    newline; provisioning.vmplan.settings_digest), so a copy that lost its last newline still matches."""
    canonical = "".join(f"{line}\n" for line in text.splitlines())
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def record_settings_digest() -> None:
    with open(SETTINGS, encoding="utf-8") as settings_file:
        digest = settings_digest(settings_file.read())
    with open(SETTINGS_DIGEST + ".new", "w") as record:
        record.write(digest + "\n")
    os.replace(SETTINGS_DIGEST + ".new", SETTINGS_DIGEST)


def hand_over(account: pwd.struct_passwd) -> None:
    """The county's data belongs to the app's user (the directory too: SQLite makes its -wal and -shm
    files beside the database). Done at every activation, so data made by a root app before this
    change, or by a root command, is handed over too. The settings are readable by the app's group."""
    uid, gid = account.pw_uid, account.pw_gid
    os.chown(DATA_DIR, uid, gid)
    os.chmod(DATA_DIR, 0o750)
    with os.scandir(DATA_DIR) as entries:
        for entry in entries:
            if entry.name != "lost+found" and not entry.is_symlink():
                os.chown(entry.path, uid, gid)
    os.chown(SETTINGS, 0, gid)
    os.chmod(SETTINGS, 0o640)


def drop_privileges(account: pwd.struct_passwd) -> None:
    """Become the app's user for good: no supplementary groups, then group, then user (the order
    matters: once the uid is not 0, the gid can no longer change)."""
    os.setgroups([])
    os.setresgid(account.pw_gid, account.pw_gid, account.pw_gid)
    os.setresuid(account.pw_uid, account.pw_uid, account.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise OSError(f"could not drop root for {APP_USER}")


def activate(devices: dict[bytes, str]) -> bool:
    """Make this VM its county; True when its database is a fresh copy of the migrated empty one."""
    mount(devices[SEED_LABEL], SEED_DIR, MS_RDONLY)
    seed = SEED_DIR + "/"
    # Identity first, so nothing below runs with the template's.
    install(seed + "machine-id", "/etc/machine-id", 0o444)
    install(seed + "hostname", "/etc/hostname", 0o644)
    with open("/etc/hostname") as hostname_file:
        hostname = hostname_file.read().strip()
    socket.sethostname(hostname)
    # Clones of one saved guest share its RNG state (the cloud kernel has no VM generation ID
    # driver): mix this clone's own bytes into the pool and make the generator reseed at once.
    with open(seed + "random-seed", "rb") as fresh, open("/dev/urandom", "wb") as pool:
        pool.write(fresh.read())
        pool.flush()
        fcntl.ioctl(pool.fileno(), RNDRESEEDCRNG)
    install(seed + "ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key", 0o600)
    install(seed + "ssh_host_ed25519_key.pub", "/etc/ssh/ssh_host_ed25519_key.pub", 0o644)
    os.makedirs("/root/.ssh", mode=0o700, exist_ok=True)
    install(seed + "authorized_keys", "/root/.ssh/authorized_keys", 0o600)
    mount(devices[DATA_LABEL], DATA_DIR)
    fresh_database = not os.path.exists(DATA_DIR + "/tenant.db")
    if fresh_database:
        # A new county starts from the image's migrated empty database, not a migration under TCG.
        install(EMPTY_DB, DATA_DIR + "/tenant.db", 0o600)
    # First-boot settings only: once the guest has settings, Ansible converges them (and restarts this
    # process, which activates again); the seed must not put the old ones back.
    if settings_missing(SETTINGS):
        install(seed + "tenant-app.env", SETTINGS, 0o600)
    with open(ACTIVATED, "w") as marker:
        marker.write(hostname + "\n")
    return fresh_database


class CountyServer(uvicorn.Server):
    """uvicorn's server, waking once a second instead of ten times when idle.

    uvicorn's main loop wakes every 0.1 s to refresh its Date header (which has a one-second
    resolution) and to notice a shutdown. Under TCG every wakeup of an idle guest is host CPU
    (the guest's timer, scheduler and Python, emulated), paid by every county that already serves
    while the others come up. The counter steps by ten so each tick is a "once a second" tick.
    """

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000
            await asyncio.sleep(1.0)
            should_exit = await self.on_tick(counter)


setattr(uvicorn.main, "Server", CountyServer)  # noqa: B010  (uvicorn.run builds `Server` from there)


def prepare() -> FastAPI:
    """What every county's app does before it serves, done before the wait (so a template is saved
    with it done): the ORM's mappers, the migration scripts and the queries of a start-up, run on a
    scratch copy of the empty database, and the app's routes built."""
    scratch, scratch_settings = f"{RUN}/warm-up.db", f"{RUN}/warm-up.env"
    shutil.copyfile(EMPTY_DB, scratch)
    with open(scratch_settings, "w") as settings_file:  # reading a settings file imports its parser
        settings_file.write(f"TENANT_APP_DATABASE_URL=sqlite:///{scratch}\n")
    try:
        entry.migrate(load_settings(scratch_settings))
        # /healthz compares the database with the scripts' head, read once per process: read it here,
        # not on a clone's first health check.
        tenant_app.migrations.head_revision()
    finally:
        os.unlink(scratch)
        os.unlink(scratch_settings)
    app = tenant_app.app.build_app()
    # All of this lives as long as the process: the app's own collection at start-up then skips it.
    gc.collect()
    gc.freeze()
    return app


def wait_and_activate() -> bool:
    """Every boot or clone of a county VM activates (idempotent: a reboot must mount its data again)."""
    clock_set = False
    while True:
        if not clock_set:
            clock_set = set_clock()
        devices = devices_by_label()
        # Both disks: hot-plugged ones appear one after the other, and the app must never start
        # with its database anywhere but the data disk.
        if SEED_LABEL in devices and DATA_LABEL in devices:
            return activate(devices)
        time.sleep(POLL_S)


def main() -> None:
    os.makedirs(RUN, exist_ok=True)
    account = pwd.getpwnam(APP_USER)  # before the wait: a clone reads no /etc/passwd
    app = prepare()
    # The template builder saves the guest once this marker exists: imports done, settings awaited.
    with open(f"{RUN}/launcher-waiting", "w") as marker:
        marker.write(str(os.getpid()))
    try:
        fresh_database = wait_and_activate()
        hand_over(account)
        settings = load_settings(SETTINGS)
        record_settings_digest()
    except OSError as error:
        with open(FAILED, "w") as failure:
            failure.write(f"{error}\n")
        raise
    if os.path.exists(FAILED):
        os.unlink(FAILED)
    drop_privileges(account)
    entry.serve(settings, app=app, migrated=fresh_database)


if __name__ == "__main__":
    main()
