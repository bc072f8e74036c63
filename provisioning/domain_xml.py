"""Render a VMSpec to libvirt domain XML (plain data in, text out; no libvirt calls here).

The template only prints; every decision (which features, which network form, the loopback check)
is made in `_context` so it can be read and tested in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from provisioning.errors import ProvisioningError
from provisioning.spec import (
    GUESTFWD_ADDRESS,
    GUESTFWD_CHARDEV,
    GUESTFWD_PORT,
    LOOPBACK,
    BridgeNetwork,
    Disk,
    DomainType,
    Forward,
    GuestForward,
    UserNetwork,
    VMSpec,
)

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

# The user-mode NIC goes through <qemu:commandline> because libvirt 9.0 rejects the passt backend and
# its own <interface type='user'> cannot bind hostfwd to an address. The explicit PCI slot keeps it
# clear of the slots libvirt hands out to its own devices (DESIGN.md facts table).
NETDEV_ID = "n0"
NIC_DEVICE = f"virtio-net-pci,netdev={NETDEV_ID},bus=pci.0,addr=0x10"

_TEMPLATE_DIR = Path(__file__).parent / "templates"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATE_DIR),
    undefined=jinja2.StrictUndefined,  # a missing context key is a bug, never an empty attribute
    autoescape=True,  # HTML escaping is valid XML escaping: & < > ' " all become entities
    keep_trailing_newline=True,
)


class RenderError(ProvisioningError, ValueError):
    """A spec the renderer refuses to turn into XML (a network-rule violation)."""


def hostfwd(forward: Forward) -> str:
    """One `hostfwd=` option, refusing any host address but loopback (the hard network rule)."""
    if forward.host_address != LOOPBACK:
        raise RenderError(
            f"forward {forward.host_port}->{forward.guest_port} binds {forward.host_address!r}; "
            f"only {LOOPBACK} is allowed on the host side"
        )
    return f"hostfwd=tcp:{forward.host_address}:{forward.host_port}-:{forward.guest_port}"


def netdev_arg(network: UserNetwork) -> str:
    """The `-netdev user,...` value: restrict=on so the guest can reach neither the host nor beyond."""
    parts = ["user", f"id={NETDEV_ID}", "restrict=on", *(hostfwd(f) for f in network.forwards)]
    if network.guestfwd is not None:
        parts.append(guestfwd_option())
    return ",".join(parts)


def guestfwd_option() -> str:
    """The netdev's `guestfwd=` to the chardev. The `-cmd:` form crashes QEMU under libvirt's
    seccomp sandbox (spawn=deny) on the first connection; a chardev socket does not spawn."""
    return f"guestfwd=tcp:{GUESTFWD_ADDRESS}:{GUESTFWD_PORT}-chardev:{GUESTFWD_CHARDEV}"


def chardev_arg(forward: GuestForward) -> str:
    """The `-chardev socket,...` the guestfwd writes to: a client of the host's loopback listener
    that reconnects every second (the target may start after the VM, or restart under it)."""
    if forward.host_address != LOOPBACK:
        raise RenderError(f"guestfwd chardev to {forward.host_address!r}; only {LOOPBACK} is allowed")
    return f"socket,id={GUESTFWD_CHARDEV},host={LOOPBACK},port={forward.host_port},reconnect=1"


def _disk_context(disk: Disk) -> dict[str, Any]:
    return {
        "path": str(disk.path),
        "target": disk.target,
        "fmt": disk.fmt.value,
        "readonly": disk.readonly,
        "serial": disk.serial,
    }


def _context(spec: VMSpec) -> dict[str, Any]:
    qemu_args: list[str] = []
    bridge: BridgeNetwork | None = None
    if isinstance(spec.network, UserNetwork):
        # The chardev comes first: the netdev's guestfwd names it.
        chardev = [] if spec.network.guestfwd is None else ["-chardev", chardev_arg(spec.network.guestfwd)]
        qemu_args = [*chardev, "-netdev", netdev_arg(spec.network), "-device", NIC_DEVICE]
    else:
        bridge = spec.network
    tcg = spec.domain_type is DomainType.QEMU
    return {
        "domain_type": spec.domain_type.value,
        "qemu_ns": QEMU_NS,
        "qemu_args": qemu_args,
        "bridge": bridge,
        "name": spec.name,
        "uuid": spec.uuid,
        "vcpus": spec.vcpus,
        "max_vcpus": spec.max_vcpus,
        "memory_mib": spec.memory_mib,
        "max_memory_mib": spec.max_memory_mib,
        "kernel": str(spec.kernel),
        "initrd": str(spec.initrd),
        "cmdline": spec.cmdline,
        # The translation-block cache only exists under TCG; libvirt refuses <tcg> on KVM domains.
        "tb_cache_mib": spec.tb_cache_mib if tcg else None,
        # KVM guests see the host CPU (features, speed); TCG keeps QEMU's default emulated model.
        "host_passthrough": not tcg,
        "disks": [_disk_context(d) for d in spec.disks],
        "agent_socket": None if spec.agent_socket is None else str(spec.agent_socket),
        "serial_log": None if spec.serial_log is None else str(spec.serial_log),
    }


def render_domain_xml(spec: VMSpec) -> str:
    """libvirt domain XML for `spec`, ready for defineXML / createXML."""
    return _ENV.get_template("domain.xml.j2").render(_context(spec))


def render_disk_xml(disk: Disk) -> str:
    """One <disk> element for attachDeviceFlags (hot-plug): the same shape as in the domain XML."""
    return _ENV.get_template("disk.xml.j2").render(disk=_disk_context(disk))
