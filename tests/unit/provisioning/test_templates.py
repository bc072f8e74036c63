"""provisioning.templates: templates laid out in a tmp site folder (manifest, synthetic state file,
real qcow2 disks): load, list, check_usable, dependents, remove, remove_stale, and build's bookkeeping
with a fake hypervisor."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from provisioning import disks, templates
from provisioning.domain_xml import render_domain_xml
from provisioning.hypervisor import AgentTimeout, Hypervisor, HypervisorError
from provisioning.images import GoldenImage
from provisioning.savefile import HEADER, MAGIC, SaveFileError, read_header
from provisioning.sites import SitePaths, site_paths
from provisioning.spec import DomainType, Forward
from provisioning.templates import Template, TemplateError

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")

KEY = "0123456789abcdef"
OLD_KEY = "fedcba9876543210"


def write_state_file(path: Path, xml: str, *, version: int = 2) -> Path:
    """A state file laid out the way libvirt writes it: header, XML + NUL padded, then QEMU's stream."""
    region = xml.encode() + b"\0"
    region += bytes(4096 - len(region) % 4096)
    header = HEADER.pack(MAGIC, version, len(region), 1, 0, 0, bytes(56))
    path.write_bytes(header + region + b"QEVM\x00\x00\x00\x03" + bytes(1024))
    return path


def _qcow2(path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1M"], check=True)
    return path


def _image(tmp_path: Path, key: str = KEY) -> GoldenImage:
    folder = tmp_path / "cache" / "images" / key
    folder.mkdir(parents=True, exist_ok=True)
    disk = folder / "golden.qcow2"
    if not disk.exists():
        _qcow2(disk)
    return GoldenImage(key=key, disk=disk, kernel=folder / "vmlinuz", initrd=folder / "initrd.img")


def lay_out(site: SitePaths, image: GoldenImage, memory_mib: int = 1024, *, xml_key: str | None = None,
            manifest: bool = True) -> Template:
    """A built template as templates.build leaves it: frozen overlay, state file, manifest."""
    directory = templates.template_dir(site, image.key, memory_mib)
    directory.mkdir(parents=True)
    disks.overlay(directory / "system.qcow2", image.disk)
    spec = templates.template_spec(image, directory, DomainType.QEMU, memory_mib)
    xml = render_domain_xml(spec)
    if xml_key is not None:
        xml = xml.replace(image.key, xml_key)
    write_state_file(directory / "state.sav", xml)
    template = Template(site=site.name, image_key=image.key, directory=directory,
                        max_vcpus=templates.TEMPLATE_MAX_VCPUS, max_memory_mib=memory_mib,
                        vcpus=templates.TEMPLATE_VCPUS, memory_mib=memory_mib, built_s=12.5,
                        recipe=templates.TEMPLATE_RECIPE)
    if manifest:
        record = {k: v for k, v in template.__dict__.items() if k != "directory"}
        (directory / "manifest.json").write_text(json.dumps(record))
    return template


def clone_vm(site: SitePaths, name: str, backing: Path) -> Path:
    folder = site.disks / "vms" / name
    folder.mkdir(parents=True)
    disks.overlay(folder / "system.qcow2", backing)
    return folder


@pytest.fixture
def site(tmp_path: Path) -> SitePaths:
    return site_paths(tmp_path / "state", "primary")


class RecordingHypervisor(Hypervisor):
    """Records undefine calls; any other libvirt use is a test failure."""

    def __init__(self) -> None:
        self.site = "primary"
        self.uri = "fake://"
        self.undefined: list[str] = []

    def close(self) -> None:
        pass

    def undefine(self, name: str) -> None:
        self.undefined.append(name)


# --- load / list -----------------------------------------------------------------------------------

def test_load_reads_the_manifest_of_a_built_template(site: SitePaths, tmp_path: Path) -> None:
    built = lay_out(site, _image(tmp_path), 2048)
    loaded = templates.load(site, KEY, 2048)
    assert loaded == built
    assert loaded is not None
    assert loaded.directory.name == f"{KEY}-2048m-r4"
    assert loaded.domain_name == f"cc-template-{KEY}-2048m-r4"
    assert loaded.state_file.exists() and loaded.system_disk.exists()


def test_load_of_another_size_another_image_or_a_half_built_one_is_none(
    site: SitePaths, tmp_path: Path
) -> None:
    lay_out(site, _image(tmp_path), 1024)
    lay_out(site, _image(tmp_path), 2048, manifest=False)  # a build that crashed before its manifest
    assert templates.load(site, KEY, 4096) is None
    assert templates.load(site, OLD_KEY, 1024) is None
    assert templates.load(site, KEY, 2048) is None


def test_list_templates_only_complete_ones_sorted(site: SitePaths, tmp_path: Path) -> None:
    assert templates.list_templates(site) == []  # no templates folder at all
    lay_out(site, _image(tmp_path), 2048)
    lay_out(site, _image(tmp_path), 1024)
    lay_out(site, _image(tmp_path, OLD_KEY), 1024)
    lay_out(site, _image(tmp_path, OLD_KEY), 4096, manifest=False)
    (templates.templates_root(site) / ".0123456789abcdef-1024m.lock").write_text("")  # a lock file
    listed = [(t.image_key, t.memory_mib) for t in templates.list_templates(site)]
    assert listed == [(KEY, 1024), (KEY, 2048), (OLD_KEY, 1024)]


# --- check_usable ----------------------------------------------------------------------------------

def test_a_complete_template_is_usable(site: SitePaths, tmp_path: Path) -> None:
    templates.check_usable(lay_out(site, _image(tmp_path)))


def test_state_file_of_another_golden_image_is_refused_naming_the_file(
    site: SitePaths, tmp_path: Path
) -> None:
    template = lay_out(site, _image(tmp_path), xml_key=OLD_KEY)
    with pytest.raises(TemplateError) as failure:
        templates.check_usable(template)
    assert str(failure.value) == (f"{template.state_file}: saved from another golden image "
                                  f"(its XML does not name {KEY})")


def test_truncated_state_file_is_refused_naming_the_file(site: SitePaths, tmp_path: Path) -> None:
    template = lay_out(site, _image(tmp_path))
    data = template.state_file.read_bytes()
    template.state_file.write_bytes(data[:200])
    with pytest.raises(SaveFileError) as failure:
        templates.check_usable(template)
    assert str(failure.value).startswith(f"{template.state_file}: truncated")


def test_state_file_of_another_libvirt_format_version_is_refused(site: SitePaths, tmp_path: Path) -> None:
    template = lay_out(site, _image(tmp_path))
    data = bytearray(template.state_file.read_bytes())
    data[16:20] = struct.pack("<I", 3)
    template.state_file.write_bytes(bytes(data))
    with pytest.raises(SaveFileError, match="version 3 is not supported"):
        templates.check_usable(template)


def test_missing_state_file_or_frozen_disk_is_refused(site: SitePaths, tmp_path: Path) -> None:
    template = lay_out(site, _image(tmp_path))
    template.system_disk.unlink()
    with pytest.raises(TemplateError, match="frozen system disk is missing"):
        templates.check_usable(template)
    template.state_file.unlink()
    with pytest.raises(SaveFileError, match="cannot read"):
        templates.check_usable(template)


# --- dependents / remove / remove_stale -------------------------------------------------------------

def test_dependents_are_the_vms_cloned_from_this_templates_frozen_disk(
    site: SitePaths, tmp_path: Path
) -> None:
    image = _image(tmp_path)
    small = lay_out(site, image, 1024)
    large = lay_out(site, image, 2048)
    assert templates.dependents(small, site) == []  # no vms folder yet
    clone_vm(site, "taichung-accounting-1", small.system_disk)
    clone_vm(site, "keelung-accounting-1", small.system_disk)
    clone_vm(site, "penghu-accounting-1", large.system_disk)
    clone_vm(site, "yunlin-accounting-1", image.disk)  # a cold boot: on the golden image itself
    (site.disks / "vms" / "kinmen-accounting-1").mkdir()  # retired: system disk removed
    assert templates.dependents(small, site) == ["keelung-accounting-1", "taichung-accounting-1"]
    assert templates.dependents(large, site) == ["penghu-accounting-1"]


def test_remove_takes_every_size_of_one_image_and_nothing_else(site: SitePaths, tmp_path: Path) -> None:
    image = _image(tmp_path)
    lay_out(site, image, 1024)
    lay_out(site, image, 2048)
    lay_out(site, _image(tmp_path, OLD_KEY), 1024)
    hv = RecordingHypervisor()
    removed = templates.remove(hv, site, KEY)
    assert sorted(t.memory_mib for t in removed) == [1024, 2048]
    assert sorted(hv.undefined) == [f"cc-template-{KEY}-1024m-r4", f"cc-template-{KEY}-2048m-r4"]
    assert [t.image_key for t in templates.list_templates(site)] == [OLD_KEY]
    assert not templates.template_dir(site, KEY, 1024).exists()
    assert templates.remove(None, site, KEY) == []  # nothing left: nothing removed, no error


def test_remove_is_refused_while_a_vm_sits_on_any_size_and_removes_nothing(
    site: SitePaths, tmp_path: Path
) -> None:
    image = _image(tmp_path)
    lay_out(site, image, 1024)
    large = lay_out(site, image, 2048)
    clone_vm(site, "keelung-accounting-1", large.system_disk)
    hv = RecordingHypervisor()
    with pytest.raises(TemplateError) as failure:
        templates.remove(hv, site, KEY)
    assert str(failure.value) == (
        f"template primary/{KEY}-2048m-r4 is the base of 1 VM(s) (keelung-accounting-1); "
        "retire or move them first")
    assert hv.undefined == []
    assert len(templates.list_templates(site)) == 2  # the 1024m one was not removed either


def test_remove_stale_keeps_current_and_those_vms_sit_on(site: SitePaths, tmp_path: Path) -> None:
    current = _image(tmp_path)
    old = _image(tmp_path, OLD_KEY)
    lay_out(site, current, 1024)
    old_small = lay_out(site, old, 1024)
    lay_out(site, old, 2048)
    clone_vm(site, "keelung-accounting-1", old_small.system_disk)
    hv = RecordingHypervisor()
    assert templates.remove_stale(hv, site, KEY) == [f"{OLD_KEY}-2048m-r4"]
    assert hv.undefined == [f"cc-template-{OLD_KEY}-2048m-r4"]
    left = [(t.image_key, t.memory_mib) for t in templates.list_templates(site)]
    assert left == [(KEY, 1024), (OLD_KEY, 1024)]
    assert templates.remove_stale(None, site, KEY) == []  # idempotent


def test_a_template_made_by_an_older_recipe_is_stale_and_rebuilt_beside_it(site: SitePaths,
                                                                          tmp_path: Path) -> None:
    image = _image(tmp_path)
    old = lay_out(site, image, 1024)
    old_dir = old.directory.rename(old.directory.with_name(f"{KEY}-1024m"))  # recipe 1's name
    manifest = json.loads((old_dir / "manifest.json").read_text())
    del manifest["recipe"]  # recipe 1 wrote none
    (old_dir / "manifest.json").write_text(json.dumps(manifest))
    assert templates.load(site, KEY, 1024) is None  # the current recipe's template is not built yet
    assert [t.recipe for t in templates.list_templates(site)] == [1]
    assert templates.remove_stale(None, site, KEY) == [f"{KEY}-1024m"]
    assert not old_dir.exists()


# --- build's bookkeeping, with a fake hypervisor ---------------------------------------------------

class BootingHypervisor(RecordingHypervisor):
    """Pretends to boot the template: the agent answers, `save` writes a state file of the defined XML."""

    def __init__(self, fail_agent: bool = False, absent_reads: int = 0) -> None:
        super().__init__()
        self.fail_agent = fail_agent
        self.absent_reads = absent_reads
        self.opened: list[str] = []
        self.defined: list[str] = []
        self.started: list[str] = []
        self.saved: list[tuple[str, Path]] = []
        self.commands: list[list[str]] = []

    def define(self, xml: str) -> None:
        self.defined.append(xml)

    def start(self, name: str) -> None:
        self.started.append(name)

    def wait_for_agent(self, name: str, timeout_s: float) -> float:
        if self.fail_agent:
            raise AgentTimeout(f"site primary: guest agent of {name} silent for {timeout_s:.0f} s")
        return 0.1

    def agent(self, name: str, command: str, arguments: dict[str, Any] | None = None,
              timeout_s: int = 10) -> Any:
        if command == "guest-exec":
            assert arguments is not None
            self.commands.append([arguments["path"], *arguments["arg"]])
            return {"pid": 1}
        if command == "guest-file-open":
            assert arguments is not None
            self.opened.append(arguments["path"])
            if len(self.opened) <= self.absent_reads:  # the launcher is not waiting yet
                raise HypervisorError(f"guest-file-open {arguments['path']}: No such file or directory")
            return 7
        if command == "guest-file-read":
            return {"count": 4, "buf-b64": "MzE0Cg==", "eof": True}
        if command == "guest-file-close":
            return {}
        return {"exited": True, "exitcode": 0}

    def save(self, name: str, path: Path) -> None:
        self.saved.append((name, path))
        write_state_file(path, self.defined[-1])


def test_build_boots_once_saves_freezes_and_records(site: SitePaths, tmp_path: Path) -> None:
    image = _image(tmp_path)
    hv = BootingHypervisor(absent_reads=1)
    lines: list[str] = []
    template = templates.build(hv, site, image, DomainType.QEMU, 2048, log=lines.append)
    name = f"cc-template-{KEY}-2048m-r4"
    assert hv.started == [name]
    assert hv.undefined == [name, name]  # a leftover from a crash first, then the booted template
    assert hv.saved == [(name, template.state_file)]
    # It waited for the launcher by reading its marker (no process in the guest), until it appeared.
    assert hv.opened == ["/run/countycloud/launcher-waiting"] * 2
    assert len(hv.commands) == 2
    # Saved with only memory in use (page cache dropped) and without udev (clones hot-plug disks).
    assert hv.commands[-2] == ["/bin/sh", "-c", "sync && echo 3 > /proc/sys/vm/drop_caches"]
    assert hv.commands[-1][:2] == ["/bin/systemctl", "stop"] and "systemd-udevd.service" in hv.commands[-1]
    assert "init_on_free=1" in hv.defined[0]
    assert (template.memory_mib, template.max_memory_mib, template.vcpus) == (2048, 2048, 1)
    assert template.system_disk.stat().st_mode & 0o777 == 0o444
    assert disks.backing_of(template.system_disk) == image.disk
    assert templates.load(site, KEY, 2048) == template
    templates.check_usable(template)
    assert any("saved after" in line for line in lines)

    again = BootingHypervisor()
    assert templates.build(again, site, image, DomainType.QEMU, 2048, log=lines.append) == template
    assert again.started == [] and again.undefined == []  # built already: libvirt untouched


def test_a_failed_build_undefines_its_domain_and_leaves_no_manifest(site: SitePaths, tmp_path: Path) -> None:
    image = _image(tmp_path)
    hv = BootingHypervisor(fail_agent=True)
    with pytest.raises(AgentTimeout, match="silent"):
        templates.build(hv, site, image, DomainType.QEMU, 1024, log=lambda _line: None)
    assert hv.undefined == [f"cc-template-{KEY}-1024m-r4"] * 2
    assert templates.load(site, KEY, 1024) is None
    assert templates.list_templates(site) == []
    # A rerun starts over cleanly and finishes.
    template = templates.build(BootingHypervisor(), site, image, DomainType.QEMU, 1024,
                               log=lambda _line: None)
    assert templates.load(site, KEY, 1024) == template


# --- a clone's state file --------------------------------------------------------------------------

def test_clone_state_names_the_county_vm_and_keeps_the_stream(site: SitePaths, tmp_path: Path) -> None:
    template = lay_out(site, _image(tmp_path))
    folder = site.disks / "vms" / "keelung-accounting-1"
    folder.mkdir(parents=True)
    vm_uuid = "c7a5fdbd-cdaf-4455-926a-d65c16db1809"
    templates.write_clone_state(
        template, name="keelung-accounting-1", uuid=vm_uuid, system_disk=folder / "system.qcow2",
        forwards=(Forward(42001, 22), Forward(42002, 8080)), agent_socket=folder / "agent.sock",
        serial_log=folder / "console.log", destination=folder / "clone.sav",
    )
    header = read_header(folder / "clone.sav")
    domain = ET.fromstring(header.xml)
    assert domain.findtext("name") == "keelung-accounting-1"
    assert domain.findtext("uuid") == vm_uuid
    assert template.domain_name not in header.xml
    assert str(template.system_disk) not in header.xml  # the clone writes to its own overlay
    sources = [disk.find("source") for disk in domain.iter("disk")]
    assert [source.get("file") for source in sources if source is not None] == [str(folder / "system.qcow2")]
    assert "hostfwd=tcp:127.0.0.1:42001-:22" in header.xml
    assert "hostfwd=tcp:127.0.0.1:42002-:8080" in header.xml
    original = template.state_file.read_bytes()
    clone = (folder / "clone.sav").read_bytes()
    assert clone[header.stream_offset:] == original[read_header(template.state_file).stream_offset:]
    assert template.state_file.read_bytes() == original  # the template itself is untouched
