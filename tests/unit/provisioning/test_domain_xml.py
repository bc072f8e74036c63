"""Spec -> domain XML: golden files, the network rule, and what libvirt's test driver makes of it."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import jinja2
import libvirt
import pytest

from provisioning import domain_xml
from provisioning.domain_xml import QEMU_NS, RenderError, render_disk_xml, render_domain_xml
from provisioning.spec import BridgeNetwork, Disk, DiskFormat, DomainType, Forward, UserNetwork, VMSpec
from tests.unit.provisioning.specs import BRIDGE, keelung_spec

GOLDEN = Path(__file__).parent / "golden"

VARIANTS: dict[str, VMSpec] = {
    "user_qemu": keelung_spec(),
    "user_kvm": keelung_spec(domain_type=DomainType.KVM),
    "bridge_qemu": keelung_spec(network=BRIDGE),
    # no VLAN, no agent, no serial log: the optional parts left out
    "bridge_kvm_novlan": keelung_spec(
        domain_type=DomainType.KVM,
        network=BridgeNetwork("br0", None, "52:54:00:4b:45:02"),
        agent_socket=None,
        serial_log=None,
    ),
}


def normalized(xml: str) -> str:
    """Canonical XML (C14N 2.0) without indentation, so only real differences fail a comparison."""
    return ET.canonicalize(xml, strip_text=True)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_render_matches_golden_file(variant: str) -> None:
    rendered = render_domain_xml(VARIANTS[variant])
    golden = GOLDEN / f"{variant}.xml"
    if os.environ.get("UPDATE_GOLDEN") == "1":  # regenerate after a deliberate change, then review the diff
        golden.write_text(rendered)
    assert normalized(rendered) == normalized(golden.read_text())


def _args(root: ET.Element) -> list[str]:
    return [a.attrib["value"] for a in root.iter(f"{{{QEMU_NS}}}arg")]


def test_user_network_is_restricted_and_forwards_bind_loopback_only() -> None:
    root = ET.fromstring(render_domain_xml(keelung_spec()))
    args = _args(root)
    netdev = args[args.index("-netdev") + 1].split(",")
    assert netdev[:3] == ["user", "id=n0", "restrict=on"]
    assert [o for o in netdev if o.startswith("hostfwd=")] == [
        "hostfwd=tcp:127.0.0.1:22001-:22",
        "hostfwd=tcp:127.0.0.1:28001-:8080",
    ]
    assert args[args.index("-device") + 1] == "virtio-net-pci,netdev=n0,bus=pci.0,addr=0x10"
    assert root.find("devices/interface") is None  # the NIC exists only on the QEMU command line


def test_user_network_without_forwards_is_still_restricted() -> None:
    root = ET.fromstring(render_domain_xml(keelung_spec(network=UserNetwork(()))))
    assert "user,id=n0,restrict=on" in _args(root)


class _WildcardForward(Forward):
    """What a careless future change could produce: a forward on every interface."""

    @property
    def host_address(self) -> str:
        return "0.0.0.0"


def test_renderer_refuses_a_forward_not_bound_to_loopback() -> None:
    spec = keelung_spec(network=UserNetwork((_WildcardForward(2222, 22),)))
    with pytest.raises(RenderError, match=r"only 127\.0\.0\.1"):
        render_domain_xml(spec)


def test_bridge_variant_has_no_qemu_namespace_or_commandline() -> None:
    xml = render_domain_xml(keelung_spec(network=BRIDGE))
    root = ET.fromstring(xml)
    assert QEMU_NS not in xml
    iface = root.find("devices/interface[@type='bridge']")
    assert iface is not None
    assert iface.find("source").attrib["bridge"] == "br-keelung"  # type: ignore[union-attr]
    assert iface.find("vlan/tag").attrib["id"] == "112"  # type: ignore[union-attr]
    assert iface.find("mac").attrib["address"] == "52:54:00:4b:45:01"  # type: ignore[union-attr]


def test_tb_cache_only_under_tcg() -> None:
    qemu = ET.fromstring(render_domain_xml(keelung_spec(tb_cache_mib=64)))
    kvm = ET.fromstring(render_domain_xml(keelung_spec(domain_type=DomainType.KVM)))
    assert qemu.findtext("features/tcg/tb-cache") == "64"
    assert kvm.find("features/tcg") is None
    assert kvm.find("cpu").attrib["mode"] == "host-passthrough"  # type: ignore[union-attr]


def test_values_are_xml_escaped() -> None:
    cmdline = "root=/dev/vda rw x='a&b' <y>"
    root = ET.fromstring(render_domain_xml(keelung_spec(cmdline=cmdline)))
    assert root.findtext("os/cmdline") == cmdline


def test_template_uses_strict_undefined() -> None:
    with pytest.raises(jinja2.UndefinedError):
        domain_xml._ENV.get_template("domain.xml.j2").render({})


# --- libvirt's test:///default driver ---------------------------------------------------------------
# What it accepts (libvirt 9.0): type='qemu' and 'kvm', direct-kernel paths that do not exist,
# <tcg><tb-cache>, the bridge interface. What it does NOT keep: <qemu:commandline> and the qemu
# namespace are silently dropped (no driver-specific namespace is registered), so the user-mode NIC
# is checked by the XML tests above, not here. It has no attachDeviceFlags either, so the hot-plug
# disk XML is checked against the same disk inside the domain XML instead.

@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    c = libvirt.open("test:///default")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(params=sorted(VARIANTS))
def defined(
    conn: libvirt.virConnect, request: pytest.FixtureRequest
) -> Iterator[tuple[VMSpec, libvirt.virDomain]]:
    spec = VARIANTS[request.param]
    dom = conn.defineXML(render_domain_xml(spec))
    try:
        yield spec, dom
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()


def _find(parent: ET.Element, path: str) -> ET.Element:
    found = parent.find(path)
    assert found is not None, f"no {path} in {ET.tostring(parent, encoding='unicode')}"
    return found


def test_libvirt_reads_back_size_and_disks(defined: tuple[VMSpec, libvirt.virDomain]) -> None:
    spec, dom = defined
    root = ET.fromstring(dom.XMLDesc(0))
    assert root.attrib["type"] == spec.domain_type.value
    assert dom.UUIDString() == spec.uuid
    assert dom.vcpusFlags(libvirt.VIR_DOMAIN_VCPU_MAXIMUM | libvirt.VIR_DOMAIN_AFFECT_CONFIG) == 4
    assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG) == 1
    assert dom.maxMemory() == 4096 * 1024  # libvirt counts KiB
    assert root.findtext("currentMemory") == str(1024 * 1024)
    disks = {_find(d, "target").attrib["dev"]: d for d in root.iterfind("devices/disk")}
    assert sorted(disks) == ["vda", "vdb", "vdc"]
    for disk in spec.disks:
        got = disks[disk.target]
        assert _find(got, "source").attrib["file"] == str(disk.path)
        assert _find(got, "driver").attrib["type"] == disk.fmt.value
        assert (got.find("readonly") is not None) == disk.readonly
        assert got.findtext("serial") == disk.serial
    assert root.findtext("os/kernel") == str(spec.kernel)
    assert root.findtext("os/cmdline") == spec.cmdline
    assert root.findtext("on_crash") == "destroy"
    assert root.find("devices/graphics") is None
    assert root.find("devices/input[@bus='usb']") is None
    assert _find(root, "devices/memballoon").attrib["model"] == "virtio"
    assert root.findtext("devices/rng/backend") == "/dev/urandom"


def test_libvirt_keeps_tb_cache_agent_channel_and_serial_log(conn: libvirt.virConnect) -> None:
    spec = VARIANTS["user_qemu"]
    dom = conn.defineXML(render_domain_xml(spec))
    try:
        root = ET.fromstring(dom.XMLDesc(0))
    finally:
        dom.undefine()
    tb = _find(root, "features/tcg/tb-cache")
    assert (tb.attrib["unit"], tb.text) == ("KiB", str(spec.tb_cache_mib * 1024))
    # Freed guest memory goes back to the host (and stays out of a template's state file).
    assert _find(root, "devices/memballoon").attrib["freePageReporting"] == "on"
    channel = _find(root, "devices/channel[@type='unix']")
    assert _find(channel, "source").attrib["path"] == str(spec.agent_socket)
    assert _find(channel, "target").attrib["name"] == "org.qemu.guest_agent.0"
    assert _find(root, "devices/serial[@type='file']/source").attrib["path"] == str(spec.serial_log)


def test_libvirt_test_driver_drops_the_qemu_commandline(conn: libvirt.virConnect) -> None:
    # Documents the limit stated above: if a future libvirt keeps it, this test tells us to check more.
    dom = conn.defineXML(render_domain_xml(VARIANTS["user_qemu"]))
    try:
        assert QEMU_NS not in dom.XMLDesc(0)
    finally:
        dom.undefine()


def test_libvirt_bridge_interface_round_trips(conn: libvirt.virConnect) -> None:
    dom = conn.defineXML(render_domain_xml(VARIANTS["bridge_qemu"]))
    try:
        iface = _find(ET.fromstring(dom.XMLDesc(0)), "devices/interface[@type='bridge']")
    finally:
        dom.undefine()
    assert _find(iface, "source").attrib["bridge"] == "br-keelung"
    assert _find(iface, "vlan/tag").attrib["id"] == "112"
    assert _find(iface, "mac").attrib["address"] == "52:54:00:4b:45:01"
    assert _find(iface, "model").attrib["type"] == "virtio"


def test_live_resize_up_to_the_maximums(conn: libvirt.virConnect) -> None:
    # The test driver runs a fake guest: enough to show the XML leaves room to grow live.
    dom = conn.defineXML(render_domain_xml(VARIANTS["user_qemu"]))
    try:
        dom.create()
        dom.setVcpusFlags(4, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        dom.setMemoryFlags(4096 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 4
        assert dom.info()[2] == 4096 * 1024
        with pytest.raises(libvirt.libvirtError):
            dom.setVcpusFlags(5, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        with pytest.raises(libvirt.libvirtError):
            dom.setMemoryFlags(4097 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()


def test_disk_xml_for_hotplug_matches_the_disk_in_the_domain(spec: VMSpec) -> None:
    seed = spec.disk("vdb")
    alone = ET.fromstring(render_disk_xml(seed))
    in_domain = next(
        d for d in ET.fromstring(render_domain_xml(spec)).iterfind("devices/disk")
        if _find(d, "target").attrib["dev"] == "vdb"
    )
    assert ET.canonicalize(ET.tostring(alone), strip_text=True) == ET.canonicalize(
        ET.tostring(in_domain), strip_text=True
    )
    assert alone.find("readonly") is not None and alone.findtext("serial") == "ccseed"


def test_disk_xml_escapes_the_path() -> None:
    disk = Disk(Path("/srv/a'b&c.img"), "vdd", DiskFormat.RAW)
    assert _find(ET.fromstring(render_disk_xml(disk)), "source").attrib["file"] == "/srv/a'b&c.img"



def test_guestfwd_chardev_comes_before_the_netdev_and_connects_to_loopback() -> None:
    from provisioning.domain_xml import chardev_arg, guestfwd_option, netdev_arg
    from provisioning.spec import GUESTFWD_CHARDEV, GuestForward, UserNetwork

    network = UserNetwork((Forward(22001, 22),), guestfwd=GuestForward(23010))
    xml = render_domain_xml(keelung_spec(network=network))
    args = [a.get("value") for a in ET.fromstring(xml).iter(f"{{{QEMU_NS}}}arg")]
    assert args.index("-chardev") < args.index("-netdev")
    assert args[args.index("-chardev") + 1] == chardev_arg(GuestForward(23010))
    assert chardev_arg(GuestForward(23010)) == (
        f"socket,id={GUESTFWD_CHARDEV},host=127.0.0.1,port=23010,reconnect=1")
    assert netdev_arg(network).endswith("," + guestfwd_option())
    assert "restrict=on" in netdev_arg(network)
    assert guestfwd_option().endswith(f"-chardev:{GUESTFWD_CHARDEV}") and "-cmd:" not in guestfwd_option()


def test_no_guestfwd_no_chardev() -> None:
    xml = render_domain_xml(keelung_spec())
    assert "-chardev" not in xml and "guestfwd" not in xml
