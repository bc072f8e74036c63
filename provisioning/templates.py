"""Prebooted templates: a guest booted once from the golden image, saved, and cloned per county.

A template is per site and per golden image: its system disk (a linked clone of the golden image,
frozen read-only at save time) and its state file (libvirt's save image of the running guest, the
app imported and waiting for its settings). A county VM is a fresh overlay on that frozen disk plus
a copy of the state file whose header XML names the county's VM, restored in about a second and a
half instead of a TCG boot of 40-70 s.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from provisioning import disks, guest, locks, savefile
from provisioning.domain_xml import chardev_arg, guestfwd_option, render_domain_xml
from provisioning.errors import ProvisioningError
from provisioning.guest import agent_exec
from provisioning.hypervisor import Hypervisor
from provisioning.images import GoldenImage
from provisioning.sites import SitePaths
from provisioning.spec import (
    Disk,
    DiskFormat,
    DomainType,
    Forward,
    GuestForward,
    UserNetwork,
    VMSpec,
    new_uuid,
)

# One template per memory size, saved at exactly that size. Measured (bench, docs/benchmarks.md): a
# template saved with a 4 GiB balloon ceiling and 1 GiB in use restored in 10.5 s to 2.8 GB of QEMU
# RSS; saved at 1 GiB it restored in 3.7 s to 0.5 GB. vCPUs are cheap to leave room for: every clone
# starts with one and is given its size's count live, up to TEMPLATE_MAX_VCPUS.
TEMPLATE_MAX_VCPUS = 4
# A freed page is zeroed at once, so the save (which skips zero pages) keeps only memory in use.
# Clones run the template's kernel, so they inherit it; cold boots do not need it.
TEMPLATE_KERNEL_ARGS = "init_on_free=1"
# Bumped whenever how a template is booted or saved changes, so templates made the old way are
# rebuilt beside the old ones (which clones may sit on) and the old ones go once unused.
# 2: init_on_free and the page cache dropped before the save; 3: a 64 MiB translation cache;
# 4: udevd stopped before the save.
TEMPLATE_RECIPE = 4
TEMPLATE_VCPUS = 1
DEFAULT_MEMORY_MIB = 1024
SSH_GUEST_PORT = 22
APP_GUEST_PORT = 8080
# Generous: a template boots once per image and site, untimed, and on a 2-core machine that others
# load to 10 and more a TCG boot of the app took over 300 s.
BOOT_TIMEOUT_S = 900.0
LAUNCHER_WAITING = "/run/countycloud/launcher-waiting"  # written by the guest's launcher.py
Log = Callable[[str], None]


class TemplateError(ProvisioningError):
    """A template is missing, stale or unusable; the message names it and the reason."""


@dataclass(frozen=True)
class Template:
    site: str
    image_key: str
    directory: Path
    max_vcpus: int
    max_memory_mib: int
    vcpus: int
    memory_mib: int
    built_s: float
    recipe: int = 1  # manifests from before TEMPLATE_RECIPE have none

    @property
    def system_disk(self) -> Path:
        return self.directory / "system.qcow2"

    @property
    def state_file(self) -> Path:
        return self.directory / "state.sav"

    @property
    def domain_name(self) -> str:
        return template_domain_name(self.image_key, self.memory_mib, self.recipe)


def template_domain_name(image_key: str, memory_mib: int, recipe: int = TEMPLATE_RECIPE) -> str:
    return f"cc-template-{image_key}-{memory_mib}m-r{recipe}"


def templates_root(site: SitePaths) -> Path:
    return site.disks / "templates"


def template_dir(site: SitePaths, image_key: str, memory_mib: int) -> Path:
    return templates_root(site) / f"{image_key}-{memory_mib}m-r{TEMPLATE_RECIPE}"


def _manifest(directory: Path) -> Path:
    return directory / "manifest.json"


def load(site: SitePaths, image_key: str, memory_mib: int) -> Template | None:
    """The site's template for this golden image and memory size, if it was built completely."""
    manifest = _manifest(template_dir(site, image_key, memory_mib))
    if not manifest.exists():
        return None
    return Template(**{**json.loads(manifest.read_text()), "directory": manifest.parent})


def check_usable(template: Template) -> None:
    """Refuse a template whose state file is damaged or was made from another golden image."""
    header = savefile.read_header(template.state_file)  # raises SaveFileError naming the file
    if template.image_key not in header.xml:
        raise TemplateError(
            f"{template.state_file}: saved from another golden image "
            f"(its XML does not name {template.image_key})"
        )
    if not template.system_disk.exists():
        raise TemplateError(f"{template.system_disk}: the template's frozen system disk is missing")


def list_templates(site: SitePaths) -> list[Template]:
    root = templates_root(site)
    if not root.exists():
        return []
    return [Template(**{**json.loads(_manifest(entry).read_text()), "directory": entry})
            for entry in sorted(root.iterdir()) if _manifest(entry).exists()]


def free_ports(count: int) -> list[int]:
    """Distinct free ports: all probes stay bound until every port is chosen (one at a time, the
    kernel may hand the same port out twice)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def template_spec(image: GoldenImage, directory: Path, domain_type: DomainType, memory_mib: int) -> VMSpec:
    ssh_port, app_port = free_ports(2)
    return VMSpec(
        name=template_domain_name(image.key, memory_mib), uuid=new_uuid(),
        vcpus=TEMPLATE_VCPUS, max_vcpus=TEMPLATE_MAX_VCPUS,
        memory_mib=memory_mib, max_memory_mib=memory_mib,
        domain_type=domain_type, kernel=image.kernel, initrd=image.initrd,
        cmdline=f"{image.cmdline} {TEMPLATE_KERNEL_ARGS}",
        disks=(Disk(path=directory / "system.qcow2", target="vda", fmt=DiskFormat.QCOW2),),
        # Ports are only placeholders: every clone's state file gets its own.
        network=UserNetwork(forwards=(Forward(host_port=ssh_port, guest_port=SSH_GUEST_PORT),
                                      Forward(host_port=app_port, guest_port=APP_GUEST_PORT))),
        agent_socket=directory / "agent.sock", serial_log=directory / "console.log",
    )


def build(hv: Hypervisor, site: SitePaths, image: GoldenImage, domain_type: DomainType,
          memory_mib: int = DEFAULT_MEMORY_MIB, log: Log = print) -> Template:
    """Boot the golden image once, wait until its app waits for settings, save it. Idempotent."""
    directory = template_dir(site, image.key, memory_mib)
    existing = load(site, image.key, memory_mib)
    if existing is not None:
        return existing
    with locks.exclusive(directory.parent / f".{directory.name}.lock"):
        existing = load(site, image.key, memory_mib)
        if existing is not None:
            return existing
        started = time.monotonic()
        name = template_domain_name(image.key, memory_mib)
        hv.undefine(name)  # a half-built template from a crash
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        disks.overlay(directory / "system.qcow2", image.disk)
        spec = template_spec(image, directory, domain_type, memory_mib)
        hv.define(render_domain_xml(spec))
        hv.start(name)
        log(f"template {site.name}/{directory.name}: booting the golden image once")
        try:
            hv.wait_for_agent(name, BOOT_TIMEOUT_S)
            deadline = time.monotonic() + BOOT_TIMEOUT_S
            # Read through the agent's file API, not `test -e` through guest-exec: a process started in
            # the guest every half second (and its log lines in the journal) took most of a TCG guest's
            # CPU from the launcher it waits for, on a loaded host minutes of it.
            while guest.read_file(hv, name, LAUNCHER_WAITING, limit=64) is None:
                if time.monotonic() > deadline:
                    raise TemplateError(f"template {name}: the app never reached its waiting state")
                time.sleep(1.0)
            # Only memory in use goes into the state file, so only that comes back as each clone's RSS:
            # the page cache is dropped and (init_on_free) every freed page is zero, which the save skips.
            agent_exec(hv, name, ["/bin/sh", "-c", "sync && echo 3 > /proc/sys/vm/drop_caches"])
            # No udev in a clone: a clone's seed and data disks are hot-plugged, and udevd's workers and
            # systemd's device handling for them ran beside the app's start, each a process translated
            # afresh under TCG. The launcher finds the disks by their ext4 labels itself, and
            # provisioning onlines hot-added vCPUs through the agent, so nothing needs udev after boot.
            agent_exec(hv, name, ["/bin/systemctl", "stop", "systemd-udevd-control.socket",
                                  "systemd-udevd-kernel.socket", "systemd-udevd.service"])
            hv.save(name, directory / "state.sav")
        except BaseException:
            hv.undefine(name)
            raise
        hv.undefine(name)
        (directory / "system.qcow2").chmod(0o444)  # frozen: every clone's overlay reads it
        (directory / "agent.sock").unlink(missing_ok=True)
        template = Template(site=site.name, image_key=image.key, directory=directory,
                            max_vcpus=TEMPLATE_MAX_VCPUS, max_memory_mib=memory_mib,
                            vcpus=TEMPLATE_VCPUS, memory_mib=memory_mib,
                            built_s=round(time.monotonic() - started, 1), recipe=TEMPLATE_RECIPE)
        record = {k: v for k, v in asdict(template).items() if k != "directory"}
        _manifest(directory).write_text(json.dumps(record, indent=2))
        log(f"template {site.name}/{directory.name}: saved after {template.built_s:.0f} s")
        return template


def write_clone_state(template: Template, *, name: str, uuid: str, system_disk: Path,
                      forwards: tuple[Forward, ...], agent_socket: Path, serial_log: Path,
                      destination: Path, guestfwd: GuestForward | None = None) -> None:
    """A copy of the template's state file that restores as the county's VM (with the replica
    guestfwd when given: templates are saved without one)."""
    header = savefile.read_header(template.state_file)
    xml = savefile.rewrite_domain_xml(
        header.xml, name=name, uuid=uuid, disk_paths={"vda": system_disk}, forwards=forwards,
        agent_socket=agent_socket, serial_log=serial_log,
        guestfwd=None if guestfwd is None else (guestfwd_option(), chardev_arg(guestfwd)),
    )
    # The copy lives only until it is restored, so it is not fsynced (a crash means writing it again).
    savefile.write_clone(template.state_file, destination, xml, durable=False)


def dependents(template: Template, site: SitePaths) -> list[str]:
    """County VMs at the site whose system disk is a linked clone of this template's frozen disk."""
    frozen = template.system_disk
    vms = site.disks / "vms"
    if not vms.exists():
        return []
    return sorted(vm.name for vm in vms.iterdir() if disks.backing_of(vm / "system.qcow2") == frozen)


def backing_files(site: SitePaths) -> set[Path]:
    """Every file some disk at the site is a linked clone of (templates' and VMs' system disks)."""
    candidates = [template.system_disk for template in list_templates(site)]
    vms = site.disks / "vms"
    if vms.exists():
        candidates += [vm / "system.qcow2" for vm in vms.iterdir()]
    return {backing for backing in map(disks.backing_of, candidates) if backing is not None}


def remove(hv: Hypervisor | None, site: SitePaths, image_key: str) -> list[Template]:
    """Remove a site's templates of one golden image (every memory size); returns those removed.

    Refused while county VMs still sit on a template's frozen disk: removing it would destroy their
    system disks.
    """
    chosen = [template for template in list_templates(site) if template.image_key == image_key]
    for template in chosen:
        users = dependents(template, site)
        if users:
            raise TemplateError(
                f"template {site.name}/{template.directory.name} is the base of {len(users)} VM(s) "
                f"({', '.join(users)}); retire or move them first"
            )
    for template in chosen:
        if hv is not None:
            hv.undefine(template.domain_name)
        shutil.rmtree(template.directory)
    return chosen


def remove_stale(hv: Hypervisor | None, site: SitePaths, current_key: str) -> list[str]:
    """Templates of golden images that are no longer current, or made by an older recipe, and that no
    VM sits on, are removed."""
    removed = []
    for template in list_templates(site):
        stale = template.image_key != current_key or template.recipe != TEMPLATE_RECIPE
        if stale and not dependents(template, site):
            if hv is not None:
                hv.undefine(template.domain_name)
            shutil.rmtree(template.directory)
            removed.append(template.directory.name)
    return removed
