"""Site daemons: each site is its own libvirtd + virtlogd in a private mount namespace.

On one machine two data centres are simulated by giving each site private copies of libvirt's
state folders (bind-mounted over /run/libvirt, /var/lib/libvirt, ... inside `unshare --mount`).
Killing every process in a site's namespace (daemons and QEMU) is a real site outage that leaves
the other site serving. This module is the edge for those processes; it never touches libvirt's
API (that is hypervisor.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from provisioning.errors import ProvisioningError

# Host folders libvirt uses, and the name of each one's private copy inside a site folder.
_BIND_MOUNTS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "etc": "/etc/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}

SCRATCH_ROOT = Path("/dev/shm")  # tmpfs on every Linux with systemd


class SiteState(StrEnum):
    UP = "up"
    DOWN = "down"


class SiteError(ProvisioningError):
    """A site daemon could not be started or reached; the message says which and why."""


@dataclass(frozen=True)
class SitePaths:
    name: str
    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    @property
    def scratch(self) -> Path:
        """Short-lived big files of this site, in memory (/dev/shm), one folder per site root."""
        return SCRATCH_ROOT / f"countycloud-{hashlib.sha256(str(self.root).encode()).hexdigest()[:12]}"

    @property
    def libvirtd_pidfile(self) -> Path:
        return self.root / "run" / "libvirtd.pid"

    @property
    def virtlogd_pidfile(self) -> Path:
        return self.root / "run" / "virtlogd.pid"

    @property
    def namespace_file(self) -> Path:
        return self.root / "mntns"

    @property
    def disks(self) -> Path:
        """Where this site's VM disks, seed images and state files live (visible in every namespace)."""
        return self.root / "disks"

    @property
    def images(self) -> Path:
        """The site's own copies of golden images (see images.at_site)."""
        return self.disks / "images"


def site_paths(state_dir: Path, name: str) -> SitePaths:
    return SitePaths(name=name, root=state_dir / "sites" / name)


def _pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _of_site(site: SitePaths, pid: int) -> bool:
    """Whether the process runs in this site: its /run/libvirt is the site's own run folder.

    Pids and namespace ids are both reused once free; a stale pid file or namespace file once
    named another site's libvirtd, and `stop` killed that site. The bind mount cannot be mistaken.
    """
    try:
        return os.path.samefile(f"/proc/{pid}/root/run/libvirt", site.root / "run")
    except OSError:
        return False


def _site_pid(site: SitePaths, pidfile: Path) -> int | None:
    pid = _pid_alive(pidfile)
    return pid if pid is not None and _of_site(site, pid) else None


def _prepare_config(site: SitePaths) -> None:
    """Private copy of /etc/libvirt for the site: QEMU as root, no NAT network ever (network rule)."""
    etc = site.root / "etc"
    if not (etc / "qemu.conf").exists():
        if etc.exists():
            shutil.rmtree(etc)
        shutil.copytree("/etc/libvirt", etc, symlinks=True)
    qemu_conf = etc / "qemu.conf"
    text = qemu_conf.read_text()
    marker = "# countycloud site settings"
    if marker not in text:
        qemu_conf.write_text(
            text + f'\n{marker}\nuser = "root"\ngroup = "root"\nsecurity_driver = "none"\n'
        )
    # libvirt's package defines a `default` NAT network; a site must never have it.
    for leftover in (etc / "qemu" / "networks" / "default.xml", etc / "qemu" / "networks" / "autostart"):
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink(missing_ok=True)


def _namespace_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def state(site: SitePaths) -> SiteState:
    if _site_pid(site, site.libvirtd_pidfile) and site.socket.exists():
        return SiteState.UP
    return SiteState.DOWN


PR_SET_THP_DISABLE = 41


def _without_transparent_hugepages() -> None:
    """No transparent huge pages for the site's daemons and so for every QEMU they start (the flag is
    inherited across fork and exec).

    QEMU asks for huge pages on guest memory. A restored clone's state file writes ~200 MB of pages
    scattered over its 1 GiB, and each write into an untouched 2 MiB stretch took a whole huge page:
    measured 342 MB of guest memory resident for 205 MB of state. With 4 KiB pages a clone keeps
    only what it restored and what it touches.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_THP_DISABLE)")


def _started_with_huge_pages(site: SitePaths) -> bool:
    pid = _site_pid(site, site.libvirtd_pidfile)
    try:
        status = Path(f"/proc/{pid}/status").read_text() if pid else ""
    except OSError:
        return False
    return "THP_enabled:\t1" in status


def start(site: SitePaths, timeout_s: float = 60.0) -> None:
    """Start the site's daemons if they are not running (idempotent)."""
    # Up already: done, unless its daemons predate running without huge pages and no guest would
    # be disturbed by restarting them.
    if state(site) is SiteState.UP and (not _started_with_huge_pages(site) or qemu_pids(site)):
        return
    # Clear half-started leftovers (a daemon without the other, stale sockets), but never a guest:
    # daemons that died under running VMs are restarted and take their VMs back (libvirt reconnects
    # to each QEMU from the status it keeps in the site's run folder).
    _stop_daemons(site)
    for sub in _BIND_MOUNTS:
        (site.root / sub).mkdir(parents=True, exist_ok=True)
    site.disks.mkdir(parents=True, exist_ok=True)
    _prepare_config(site)
    for stale in ("libvirt-sock", "libvirt-sock-ro", "libvirt-admin-sock", "virtlogd-sock",
                  "virtlogd-admin-sock"):
        (site.root / "run" / stale).unlink(missing_ok=True)
    mounts = " && ".join(
        f"mkdir -p {target} && mount --bind {site.root / sub} {target}"
        for sub, target in _BIND_MOUNTS.items()
    )
    script = (
        f"set -e; {mounts}; "
        "virtlogd -d -p /run/libvirt/virtlogd.pid; "
        "libvirtd -d -p /run/libvirt/libvirtd.pid"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
        capture_output=True, text=True, check=False, preexec_fn=_without_transparent_hugepages,
    )
    if result.returncode != 0:
        raise SiteError(f"site {site.name}: daemons did not start: {result.stderr.strip()}")
    deadline = time.monotonic() + timeout_s
    while state(site) is not SiteState.UP:
        if time.monotonic() > deadline:
            raise SiteError(
                f"site {site.name}: libvirtd did not answer on {site.socket} within {timeout_s:.0f} s; "
                f"see {site.root / 'log'}"
            )
        time.sleep(0.1)
    pid = _site_pid(site, site.libvirtd_pidfile)
    namespace = _namespace_of(pid) if pid else None
    if namespace:
        site.namespace_file.write_text(namespace)
    _warm_capabilities(site)


def capabilities_cache(site: SitePaths) -> Path:
    """Where the site's libvirtd keeps what it learnt by probing QEMU (one XML file per binary)."""
    return site.root / "cache" / "qemu" / "capabilities"


def _warm_capabilities(site: SitePaths) -> None:
    """Have the new libvirtd probe QEMU now rather than at its first domain start.

    On this machine every libvirtd start finds its cached QEMU capabilities outdated and probes QEMU
    again, 4.0 s under TCG (measured at two restarts), and libvirt does it at the first call that
    needs them: the first clone a failover makes at a freshly started site waited those 4 s (tier-1's
    `start` 5.0-5.3 s against 0.8-1.1 s; docs/dr.md). Asked here in a thread, the probe runs while
    nothing waits for it; a domain start that comes during it waits only for the rest. The answer
    is thrown away: only the daemon's cache matters."""
    command = ["virsh", "-q", "-c", site.uri, "domcapabilities", "--virttype", "qemu"]
    threading.Thread(
        target=subprocess.run, args=(command,), daemon=True, name=f"warm-{site.name}",
        kwargs={"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": False, "timeout": 120},
    ).start()


def _processes_in_namespace(namespace: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _namespace_of(int(entry.name)) == namespace:
            pids.append(int(entry.name))
    return pids


def qemu_pids(site: SitePaths) -> set[int]:
    """The site's running QEMU processes, from the pid files its libvirtd keeps for them.

    libvirt starts each QEMU in a mount namespace of its own, so the site's namespace alone does not
    find them; the pid files live in the site's private /run/libvirt/qemu.
    """
    pids = set()
    for pidfile in (site.root / "run" / "qemu").glob("*.pid"):
        pid = _site_pid(site, pidfile)
        if pid and _is_qemu(pid):
            pids.add(pid)
    return pids


def _is_qemu(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"qemu-system-x86_64")
    except OSError:
        return False


def _daemon_pids(site: SitePaths) -> set[int]:
    """The site's own processes besides its guests: its daemons and what runs in their namespace."""
    pids: set[int] = set()
    if site.namespace_file.exists():
        namespace = site.namespace_file.read_text().strip()
        # Never kill our own namespace (a stale file could name the host's).
        if namespace and namespace != _namespace_of(os.getpid()):
            pids.update(pid for pid in _processes_in_namespace(namespace) if _of_site(site, pid))
    for pidfile in (site.libvirtd_pidfile, site.virtlogd_pidfile):
        pid = _site_pid(site, pidfile)
        if pid:
            pids.add(pid)
    return {pid for pid in pids if not _is_qemu(pid)}


def _kill(site: SitePaths, pids: set[int]) -> list[int]:
    """kill -9 of `pids`, waited for (10 s at most); the daemons' pid files and socket removed."""
    killed: list[int] = []
    for pid in sorted(pids):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pidfile in (site.libvirtd_pidfile, site.virtlogd_pidfile):
        pidfile.unlink(missing_ok=True)
    site.socket.unlink(missing_ok=True)
    return killed


def _stop_daemons(site: SitePaths) -> list[int]:
    return _kill(site, _daemon_pids(site))


def stop(site: SitePaths) -> list[int]:
    """Site outage: kill -9 the site's daemons and every QEMU it runs. Returns the pids killed."""
    return _kill(site, qemu_pids(site) | _daemon_pids(site))
