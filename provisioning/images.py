"""The golden image: Debian bookworm with tenant_app baked in, built by debootstrap, cached by recipe.

Two cache levels, both outside any clone:
- the *base* root file system (debootstrap, guest configuration, the app's Python packages), keyed
  by this recipe, the guest files and the guest requirements: rebuilt rarely (~2-3 min);
- the *image* (base + tenant_app's source, made into an ext4 qcow2 with its kernel and initrd),
  keyed by the base key and tenant_app's source: rebuilt whenever the app changes (~20 s).
A file lock keeps two builders from building at once; stale images are removed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisioning import locks
from provisioning.errors import ProvisioningError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RECIPE_DIR = Path(__file__).resolve().parent / "image"
TENANT_APP_DIR = PROJECT_ROOT / "tenant_app"
SUITE = "bookworm"
GUEST_PACKAGES = (
    "systemd-sysv", "udev", "openssh-server", "qemu-guest-agent", "python3", "python3-venv",
    "linux-image-cloud-amd64", "ifupdown", "iproute2", "kmod", "initramfs-tools", "procps",
)
# Units that cost boot time and do nothing for a headless county VM.
MASKED_UNITS = (
    "e2scrub_reap.service", "serial-getty@ttyS0.service", "getty@tty1.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "fstrim.timer",
    "e2scrub_all.timer", "systemd-timesyncd.service", "dpkg-db-backup.timer",
    # ifupdown-pre is a full `udevadm settle` (8 s under TCG); our one NIC needs no wait.
    "ifupdown-pre.service", "getty-static.service",
)
# The unprivileged user the county's app serves as (the launcher drops root to it after activation;
# provisioning/image/files/launcher.py). A fixed system id, so its files mean the same in every image.
APP_USER = "tenant-app"
APP_UID = 990
INITRD_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "virtio_rng", "ext4")
IMAGE_SIZE = "2G"
KEEP_IMAGES = 2
Log = Callable[[str], None]


class ImageBuildError(ProvisioningError):
    """The golden image could not be built; the message says which step and why."""


@dataclass(frozen=True)
class GoldenImage:
    key: str
    disk: Path
    kernel: Path
    initrd: Path
    cmdline: str = "root=/dev/vda rw console=ttyS0 quiet net.ifnames=0 systemd.show_status=0"


def _hash_tree(root: Path, digest: hashlib._Hash) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".db"):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())


def base_key() -> str:
    """Changes with what the base root file system is made of, not with unrelated edits here."""
    digest = hashlib.sha256()
    recipe = (SUITE, GUEST_PACKAGES, MASKED_UNITS, INITRD_MODULES, IMAGE_SIZE, APP_USER, APP_UID)
    digest.update(repr(recipe).encode())
    for step in (_configure_guest, _build_base):
        digest.update(inspect.getsource(step).encode())
    _hash_tree(RECIPE_DIR, digest)
    constraints = PROJECT_ROOT / "constraints.txt"
    if constraints.exists():
        digest.update(constraints.read_bytes())
    return digest.hexdigest()[:16]


def image_key() -> str:
    digest = hashlib.sha256(base_key().encode())
    _hash_tree(TENANT_APP_DIR, digest)
    return digest.hexdigest()[:16]


def _run(argv: list[str], step: str, log: Log, **kwargs: object) -> str:
    log(f"image: {step}")
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise ImageBuildError(f"golden image, step '{step}' failed (exit {result.returncode}): {tail}")
    return str(result.stdout)


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses, so the guest comes from the same registry."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        # `deb [arch=amd64 signed-by=...] URI SUITE ...`: the options in brackets are not the URI.
        match = re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", legacy.read_text(), re.M)
        if match:
            return match.group(1)
    raise ImageBuildError("no Debian mirror found in /etc/apt/sources.list(.d): cannot debootstrap")


def _chroot(rootfs: Path, script: str, step: str, log: Log) -> None:
    # A private mount namespace keeps /proc and /dev mounts from leaking into the host's.
    # The root and the script travel as arguments ($0, $1), so the script may contain any quotes.
    wrapped = ('set -e; mount -t proc proc "$0/proc"; mount --bind /dev "$0/dev"; '
               'mount -t sysfs sys "$0/sys"; chroot "$0" /bin/sh -ec "$1"')
    _run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", wrapped, str(rootfs), script],
         step, log,
         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"})


def _configure_guest(rootfs: Path) -> None:
    files = RECIPE_DIR / "files"
    (rootfs / "etc/hostname").write_text("countycloud-template\n")
    (rootfs / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (rootfs / "etc/fstab").write_text("/dev/vda / ext4 rw,noatime 0 1\n")
    shutil.copy(files / "interfaces", rootfs / "etc/network/interfaces")
    shutil.copy(files / "sshd_config", rootfs / "etc/ssh/sshd_config")
    shutil.copy(files / "tenant-app", rootfs / "usr/local/bin/tenant-app")
    (rootfs / "usr/local/bin/tenant-app").chmod(0o755)
    app_dir = rootfs / "opt/tenant-app"
    app_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(files / "launcher.py", app_dir / "launcher.py")
    units = rootfs / "etc/systemd/system"
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("tenant-app.service",):
        shutil.copy(files / unit, units / unit)
        target = wants / unit
        target.unlink(missing_ok=True)
        target.symlink_to(f"/etc/systemd/system/{unit}")
    for unit in MASKED_UNITS:
        masked = units / unit
        masked.unlink(missing_ok=True)
        masked.symlink_to("/dev/null")
    initramfs = rootfs / "etc/initramfs-tools"
    conf = initramfs / "initramfs.conf"
    conf.write_text(re.sub(r"^MODULES=.*$", "MODULES=list", conf.read_text(), flags=re.M))
    (initramfs / "modules").write_text("\n".join(INITRD_MODULES) + "\n")
    (rootfs / "etc/machine-id").write_text("")
    # Only the ed25519 host key is used; the county's own replaces it at activation.
    for old in (rootfs / "etc/ssh").glob("ssh_host_*"):
        if "ed25519" not in old.name:
            old.unlink()


def _build_base(cache_dir: Path, key: str, log: Log) -> Path:
    base = cache_dir / "base" / key
    rootfs = base / "rootfs"
    if (base / "done").exists():
        return rootfs
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(GUEST_PACKAGES)}", SUITE,
          str(rootfs), debian_mirror()], "debootstrap", log)
    _configure_guest(rootfs)
    _chroot(rootfs, "update-initramfs -u -k all", "initramfs", log)
    _chroot(rootfs, f"groupadd --system --gid {APP_UID} {APP_USER} && "
                    f"useradd --system --uid {APP_UID} --gid {APP_UID} --home-dir /nonexistent "
                    f"--no-create-home --shell /usr/sbin/nologin {APP_USER}",
            "the app's unprivileged user", log)
    wheels = rootfs / "tmp/wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    # `pip wheel` (not download): some packages (odfpy) ship only an sdist. Host and guest are the
    # same Debian Python 3.11, so wheels built here install there.
    pip = [str(Path(sys.executable).parent / "pip"), "wheel", "-q", "-w", str(wheels),
           "-r", str(RECIPE_DIR / "guest-requirements.txt")]
    constraints = PROJECT_ROOT / "constraints.txt"
    if constraints.exists():
        pip += ["-c", str(constraints)]
    _run(pip, "download the app's Python packages", log)
    shutil.copy(RECIPE_DIR / "guest-requirements.txt", rootfs / "tmp/guest-requirements.txt")
    _chroot(
        rootfs,
        "python3 -m venv /opt/tenant-app/venv && "
        "/opt/tenant-app/venv/bin/pip install -q --no-index --find-links /tmp/wheels "
        "-r /tmp/guest-requirements.txt && rm -rf /tmp/wheels /tmp/guest-requirements.txt "
        "&& /opt/tenant-app/venv/bin/python -m compileall -q /opt/tenant-app/venv >/dev/null || true",
        "install the app's Python packages", log,
    )
    if not (rootfs / "opt/tenant-app/venv/bin/uvicorn").exists():
        raise ImageBuildError("golden image: the app's Python packages did not install in the guest")
    (base / "done").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return rootfs


def _install_app(rootfs: Path, log: Log) -> None:
    target = rootfs / "opt/tenant-app/src/tenant_app"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(TENANT_APP_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.db"))
    # Byte-compile now (under TCG, compiling at first import would cost the guest seconds); import the
    # app once, so a missing guest package fails this build rather than the template's boot; and
    # migrate an empty database here: a new county copies it instead of migrating under TCG.
    _chroot(
        rootfs,
        "/opt/tenant-app/venv/bin/python -m compileall -q /opt/tenant-app/src && "
        "PYTHONPATH=/opt/tenant-app/src /opt/tenant-app/venv/bin/python -c 'import tenant_app.app' && "
        "rm -f /opt/tenant-app/empty.db && "
        "TENANT_APP_SETTINGS_FILE= TENANT_APP_DATABASE_URL=sqlite:////opt/tenant-app/empty.db "
        "PYTHONPATH=/opt/tenant-app/src /opt/tenant-app/venv/bin/python -m tenant_app migrate && "
        "test -s /opt/tenant-app/empty.db",
        "compile, import and migrate the app", log)


def _boot_files(rootfs: Path) -> tuple[Path, Path]:
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    initrds = sorted((rootfs / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise ImageBuildError(f"golden image: no kernel or initrd under {rootfs / 'boot'}")
    return kernels[-1], initrds[-1]


def image_dir(cache_dir: Path, key: str) -> Path:
    return cache_dir / "images" / key


def _load(directory: Path) -> GoldenImage:
    manifest = json.loads((directory / "manifest.json").read_text())
    return GoldenImage(key=manifest["key"], disk=directory / "golden.qcow2", kernel=directory / "vmlinuz",
                       initrd=directory / "initrd.img")


def load(cache_dir: Path, key: str) -> GoldenImage | None:
    """A built golden image by key (a job pins the key it started with), or None if it is gone."""
    directory = image_dir(cache_dir, key)
    return _load(directory) if (directory / "manifest.json").exists() else None


def cached(cache_dir: Path) -> GoldenImage | None:
    """The current golden image if it is built, without building anything."""
    directory = image_dir(cache_dir, image_key())
    return _load(directory) if (directory / "manifest.json").exists() else None


def ensure(cache_dir: Path, log: Log = print) -> GoldenImage:
    """Build the golden image if its recipe or tenant_app changed; otherwise return the cached one."""
    key = image_key()
    directory = image_dir(cache_dir, key)
    if (directory / "manifest.json").exists():
        return _load(directory)
    with locks.exclusive(cache_dir / ".build.lock"):
        if (directory / "manifest.json").exists():  # another builder finished while we waited
            return _load(directory)
        started = time.monotonic()
        rootfs = _build_base(cache_dir, base_key(), log)
        _install_app(rootfs, log)
        tmp = directory.with_name(key + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        raw = tmp / "golden.raw"
        _run(["mkfs.ext4", "-q", "-F", "-L", "ccroot", "-d", str(rootfs), str(raw), IMAGE_SIZE],
             "make the root file system", log)
        _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(tmp / "golden.qcow2")],
             "convert to qcow2", log)
        raw.unlink()
        kernel, initrd = _boot_files(rootfs)
        shutil.copy(kernel, tmp / "vmlinuz")
        shutil.copy(initrd, tmp / "initrd.img")
        (tmp / "golden.qcow2").chmod(0o444)  # linked clones sit on it: never written again
        (tmp / "manifest.json").write_text(json.dumps(
            {"key": key, "base_key": base_key(), "built_s": round(time.monotonic() - started, 1),
             "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        if directory.exists():
            shutil.rmtree(directory)
        os.rename(tmp, directory)
        _remove_stale(cache_dir, keep=key)
        log(f"image: golden image {key} ready in {time.monotonic() - started:.0f} s")
        return _load(directory)


SITE_FILES = ("golden.qcow2", "vmlinuz", "initrd.img", "manifest.json")


def at_site(image: GoldenImage, site_images: Path) -> GoldenImage:
    """The golden image as present at a site: its files hard-linked (copied across file systems)
    into the site's own folder. Templates and VMs sit on this copy, so the cache may drop an image
    that a site still uses, and a site never reads another site's files."""
    target = site_images / image.key
    if not (target / "manifest.json").exists():
        partial = site_images / f".{image.key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in SITE_FILES:
            try:
                os.link(image.disk.parent / name, partial / name)
            except OSError:
                shutil.copy2(image.disk.parent / name, partial / name)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(partial, target)
    return _load(target)


def remove_unused_at_site(site_images: Path, keep: str, in_use: set[Path]) -> list[str]:
    """Drop a site's golden images that are not current and that no disk in `in_use` is backed by."""
    removed: list[str] = []
    if not site_images.exists():
        return removed
    for directory in sorted(site_images.iterdir()):
        if directory.name in (keep, f".{keep}.partial") or not directory.is_dir():
            continue
        if (directory / "golden.qcow2") in in_use:
            continue
        shutil.rmtree(directory)
        removed.append(directory.name)
    return removed


def _remove_stale(cache_dir: Path, keep: str) -> None:
    images = sorted((p for p in (cache_dir / "images").iterdir() if p.is_dir() and p.name != keep),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in images[KEEP_IMAGES - 1:]:
        shutil.rmtree(stale, ignore_errors=True)
    current_base = base_key()
    for stale_base in (cache_dir / "base").iterdir():
        if stale_base.name != current_base:
            shutil.rmtree(stale_base, ignore_errors=True)
