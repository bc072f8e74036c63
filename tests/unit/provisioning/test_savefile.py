"""libvirt save-image header: synthetic state files built the way libvirt writes them."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from provisioning import savefile
from provisioning.domain_xml import render_domain_xml
from provisioning.savefile import (
    HEADER_SIZE,
    MAGIC,
    PARTIAL_MAGIC,
    XML_PADDING,
    SaveFileError,
    XmlRewriteError,
    read_header,
    rewrite_domain_xml,
    write_clone,
)
from provisioning.spec import Disk, DiskFormat, Forward, UserNetwork
from tests.unit.provisioning.specs import keelung_spec

TEMPLATE = keelung_spec(
    name="tmpl-g1",
    uuid="0b6f3c1e-6d7a-4c35-9a1e-7f1f0e2d9c11",
    disks=(Disk(Path("/var/lib/countycloud/templates/g1/frozen-overlay.qcow2"), "vda", DiskFormat.QCOW2),),
    network=UserNetwork((Forward(40000, 22), Forward(40001, 8080))),
    agent_socket=Path("/run/countycloud/tmpl-g1.agent"),
    serial_log=Path("/var/log/countycloud/tmpl-g1.serial.log"),
)
SAVED_XML = render_domain_xml(TEMPLATE)
COOKIE = b"<cookie>\n  <cpu mode='custom' match='exact' check='full'><model>qemu64</model></cpu>\n</cookie>\n"
STREAM = b"QEVM\x00\x00\x00\x03" + random.Random(7).randbytes(3 * 1024 * 1024 + 123)


def make_save(
    path: Path,
    *,
    xml: str = SAVED_XML,
    cookie: bytes | None = COOKIE,
    stream: bytes = STREAM,
    magic: bytes = MAGIC,
    version: int = 2,
    compressed: int = 0,
    data_len: int | None = None,
    cookie_offset: int | None = None,
    fmt: str = "<",
) -> Path:
    """A state file laid out as libvirt's virQEMUSaveDataWrite does it (64 KiB slack after the data)."""
    xml_part = xml.encode() + b"\0"
    cookie_part = cookie + b"\0" if cookie is not None else b""
    used = len(xml_part) + len(cookie_part)
    data_len = used + XML_PADDING if data_len is None else data_len
    if cookie_offset is None:
        cookie_offset = len(xml_part) if cookie is not None else 0
    header = struct.pack(f"{fmt}16s5I56s", magic, version, data_len, 1, compressed, cookie_offset, bytes(56))
    region = (xml_part + cookie_part + bytes(max(0, data_len - used)))[:data_len]
    path.write_bytes(header + region + stream)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stream_of(path: Path) -> bytes:
    return path.read_bytes()[read_header(path).stream_offset:]


def test_header_is_92_bytes() -> None:
    assert HEADER_SIZE == 92


def test_read_header_round_trip(tmp_path: Path) -> None:
    path = make_save(tmp_path / "t.save")
    h = read_header(path)
    assert (h.magic, h.version, h.was_running, h.compressed) == (MAGIC, 2, True, 0)
    assert h.xml == SAVED_XML
    assert h.cookie == COOKIE
    assert h.cookie_offset == len(SAVED_XML.encode()) + 1
    assert h.data_len == len(SAVED_XML.encode()) + 1 + len(COOKIE) + 1 + XML_PADDING
    assert path.read_bytes()[h.stream_offset:] == STREAM


def test_read_header_without_cookie(tmp_path: Path) -> None:
    h = read_header(make_save(tmp_path / "t.save", cookie=None))
    assert (h.cookie_offset, h.cookie, h.xml) == (0, b"", SAVED_XML)


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"magic": PARTIAL_MAGIC}, "incomplete save"),
        ({"magic": b"QEVM\0\0\0\3QEVM\0\0\0\3"}, "not a libvirt QEMU save image"),
        ({"version": 1}, "version 1 is not supported"),
        ({"version": 3}, "version 3 is not supported"),
        ({"fmt": ">"}, "version 33554432 is not supported"),  # a big-endian host's file
        ({"compressed": 1}, r"compressed save image \(gzip\)"),
        ({"compressed": 5}, r"compressed save image \(zstd\)"),
        ({"compressed": 42}, "unknown format 42"),
        ({"data_len": 0}, "data_len is 0"),
        ({"cookie_offset": 10**7}, "cookieOffset .* beyond data_len"),
        ({"stream": b""}, "migration stream missing"),
        ({"stream": b"\0" * 100}, "migration stream starts with"),
        ({"xml": "<domain><name>x</domain>"}, "not parseable"),
    ],
)
def test_read_header_refuses(tmp_path: Path, kwargs: dict[str, object], reason: str) -> None:
    path = make_save(tmp_path / "bad.save", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(SaveFileError, match=reason) as err:
        read_header(path)
    assert str(path) in str(err.value)  # the message names the file


@pytest.mark.parametrize("keep", [0, 40, HEADER_SIZE - 1])
def test_read_header_refuses_truncated_header(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "short.save"
    path.write_bytes(make_save(tmp_path / "full.save").read_bytes()[:keep])
    with pytest.raises(SaveFileError, match="shorter than the 92-byte header"):
        read_header(path)


def test_read_header_refuses_truncated_data_region(tmp_path: Path) -> None:
    full = make_save(tmp_path / "full.save").read_bytes()
    path = tmp_path / "short.save"
    path.write_bytes(full[: HEADER_SIZE + 1000])
    with pytest.raises(SaveFileError, match="data region has 1000 of the"):
        read_header(path)


def test_read_header_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SaveFileError, match="cannot read"):
        read_header(tmp_path / "nope.save")


def test_write_clone_keeps_data_len_stream_and_cookie(tmp_path: Path) -> None:
    src = make_save(tmp_path / "tmpl.save")
    new_xml = SAVED_XML.replace("tmpl-g1", "keelung-app-with-a-longer-name")
    dst = tmp_path / "keelung.save"
    write_clone(src, dst, new_xml)
    old, new = read_header(src), read_header(dst)
    assert new.xml == new_xml
    assert new.data_len == old.data_len  # fits in libvirt's slack: the region keeps its size
    assert new.cookie == COOKIE
    assert new.cookie_offset == len(new_xml.encode()) + 1
    assert new.was_running is True
    assert sha(stream_of(dst)) == sha(STREAM)
    assert not (tmp_path / "keelung.save.tmp").exists()


def test_write_clone_grows_data_len_when_xml_does_not_fit(tmp_path: Path) -> None:
    src = make_save(tmp_path / "tmpl.save", data_len=len(SAVED_XML.encode()) + 1 + len(COOKIE) + 1)
    bigger = SAVED_XML.replace("</devices>", "<!-- pad -->" + " " * 5000 + "</devices>")
    dst = tmp_path / "keelung.save"
    write_clone(src, dst, bigger)
    h = read_header(dst)
    used = len(bigger.encode()) + 1 + len(COOKIE) + 1
    assert h.data_len == used + XML_PADDING  # libvirt's 64 KiB slack, no page alignment
    assert h.xml == bigger and h.cookie == COOKIE
    assert sha(stream_of(dst)) == sha(STREAM)
    assert dst.stat().st_size == HEADER_SIZE + h.data_len + len(STREAM)


def test_write_clone_without_cookie(tmp_path: Path) -> None:
    src = make_save(tmp_path / "tmpl.save", cookie=None)
    write_clone(src, tmp_path / "c.save", SAVED_XML)
    h = read_header(tmp_path / "c.save")
    assert (h.cookie_offset, h.cookie) == (0, b"")


def test_write_clone_refuses_bad_source_and_leaves_nothing(tmp_path: Path) -> None:
    src = make_save(tmp_path / "tmpl.save", magic=PARTIAL_MAGIC)
    with pytest.raises(SaveFileError, match="incomplete save"):
        write_clone(src, tmp_path / "c.save", SAVED_XML)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmpl.save"]


def test_write_clone_refuses_unparseable_xml_and_keeps_old_dst(tmp_path: Path) -> None:
    src = make_save(tmp_path / "tmpl.save")
    dst = tmp_path / "c.save"
    write_clone(src, dst, SAVED_XML)
    before = dst.read_bytes()
    with pytest.raises(SaveFileError, match="not parseable"):
        write_clone(src, dst, "<domain>")
    assert dst.read_bytes() == before
    assert not (tmp_path / "c.save.tmp").exists()


def test_write_clone_overwrites_a_stale_tmp_from_a_crash(tmp_path: Path) -> None:
    src = make_save(tmp_path / "tmpl.save")
    (tmp_path / "c.save.tmp").write_bytes(b"garbage from a killed run" * 1000)
    write_clone(src, tmp_path / "c.save", SAVED_XML)
    assert sha(stream_of(tmp_path / "c.save")) == sha(STREAM)
    assert not (tmp_path / "c.save.tmp").exists()


def test_write_clone_falls_back_when_copy_file_range_fails_midway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.copy_file_range
    calls = []

    def flaky(src: int, dst: int, count: int, offset_src: int | None = None) -> int:
        calls.append(count)
        if len(calls) > 1:
            raise OSError(errno.EXDEV, "cross-device")
        return real(src, dst, min(count, 1000), offset_src)

    monkeypatch.setattr(savefile, "_COPY_CHUNK", 1000)
    monkeypatch.setattr(os, "copy_file_range", flaky)
    write_clone(make_save(tmp_path / "tmpl.save"), tmp_path / "c.save", SAVED_XML)
    assert len(calls) == 2
    assert sha(stream_of(tmp_path / "c.save")) == sha(STREAM)


# --- rewrite_domain_xml -------------------------------------------------------------------------------

CLONE_ARGS = {
    "name": "keelung-app",
    "uuid": "c7a5fdbd-cdaf-4455-926a-d65c16db1809",
    "disk_paths": {"vda": Path("/var/lib/countycloud/vms/keelung-app/system.qcow2")},
    "forwards": (Forward(22001, 22), Forward(28001, 8080)),
    "agent_socket": Path("/run/countycloud/keelung-app.agent"),
    "serial_log": Path("/var/log/countycloud/keelung-app.serial.log"),
}


def test_rewrite_changes_exactly_the_identity_fields() -> None:
    out = rewrite_domain_xml(SAVED_XML, **CLONE_ARGS)  # type: ignore[arg-type]
    # The expected XML is the same template rendered with the clone's values: everything else
    # (devices, sizes, features, the rest of the netdev options) must be byte-for-byte the same tree.
    expected = render_domain_xml(
        TEMPLATE.with_overrides(
            name=CLONE_ARGS["name"],
            uuid=CLONE_ARGS["uuid"],
            disks=(Disk(CLONE_ARGS["disk_paths"]["vda"], "vda", DiskFormat.QCOW2),),  # type: ignore[index]
            network=UserNetwork(CLONE_ARGS["forwards"]),  # type: ignore[arg-type]
            agent_socket=CLONE_ARGS["agent_socket"],
            serial_log=CLONE_ARGS["serial_log"],
        )
    )
    assert ET.canonicalize(out, strip_text=True) == ET.canonicalize(expected, strip_text=True)
    assert "<qemu:commandline>" in out and "ns0:" not in out


def test_rewrite_with_none_leaves_agent_and_serial_alone() -> None:
    args = {**CLONE_ARGS, "agent_socket": None, "serial_log": None, "forwards": ()}
    root = ET.fromstring(rewrite_domain_xml(SAVED_XML, **args))  # type: ignore[arg-type]
    assert root.find("devices/channel/source").get("path") == str(TEMPLATE.agent_socket)  # type: ignore[union-attr]
    assert root.find("devices/console/source").get("path") == str(TEMPLATE.serial_log)  # type: ignore[union-attr]
    assert "hostfwd=tcp:127.0.0.1:40000-:22" in ET.tostring(root, encoding="unicode")


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"forwards": (Forward(22001, 22), Forward(28001, 8080), Forward(29001, 9000))},
            "no forward to guest",
        ),
        ({"forwards": (Forward(22001, 22),)}, "no new host port given .* guest port 8080"),
        ({"forwards": (Forward(22001, 22), Forward(22002, 22))}, "same guest port"),
        ({"disk_paths": {"vdb": Path("/x.qcow2")}}, "target vdb"),
    ],
)
def test_rewrite_refuses_what_does_not_match_the_saved_guest(change: dict[str, object], message: str) -> None:
    with pytest.raises(XmlRewriteError, match=message):
        rewrite_domain_xml(SAVED_XML, **{**CLONE_ARGS, **change})  # type: ignore[arg-type]


def test_rewrite_refuses_missing_agent_channel() -> None:
    no_agent = render_domain_xml(TEMPLATE.with_overrides(agent_socket=None))
    with pytest.raises(XmlRewriteError, match="guest agent channel"):
        rewrite_domain_xml(no_agent, **CLONE_ARGS)  # type: ignore[arg-type]


def test_rewrite_refuses_a_saved_forward_off_loopback() -> None:
    wild = SAVED_XML.replace("hostfwd=tcp:127.0.0.1:40000", "hostfwd=tcp:0.0.0.0:40000")
    with pytest.raises(XmlRewriteError, match=r"not bound to 127\.0\.0\.1"):
        rewrite_domain_xml(wild, **CLONE_ARGS)  # type: ignore[arg-type]


def test_rewrite_then_clone_end_to_end(tmp_path: Path) -> None:
    src = make_save(tmp_path / "tmpl.save")
    new_xml = rewrite_domain_xml(read_header(src).xml, **CLONE_ARGS)  # type: ignore[arg-type]
    write_clone(src, tmp_path / "keelung.save", new_xml)
    h = read_header(tmp_path / "keelung.save")
    root = ET.fromstring(h.xml)
    assert (root.findtext("name"), root.findtext("uuid")) == (CLONE_ARGS["name"], CLONE_ARGS["uuid"])
    assert sha(stream_of(tmp_path / "keelung.save")) == sha(STREAM)


def test_rewrite_changes_only_the_top_disk_source_not_its_backing_store() -> None:
    # A live domain's XML (what libvirt saves) lists the overlay's backing chain under the disk.
    backing = (
        "<backingStore type='file' index='1'><format type='qcow2'/>"
        "<source file='/var/lib/countycloud/templates/g1/frozen.qcow2'/><backingStore/></backingStore>"
    )
    target = "<target dev='vda' bus='virtio'/>"
    saved = SAVED_XML.replace(target, backing + target)
    root = ET.fromstring(rewrite_domain_xml(saved, **CLONE_ARGS))  # type: ignore[arg-type]
    disk = root.find("devices/disk")
    assert disk is not None
    assert disk.find("source").get("file") == str(CLONE_ARGS["disk_paths"]["vda"])  # type: ignore[index,union-attr]
    backing_source = disk.find("backingStore/source")
    assert backing_source is not None
    assert backing_source.get("file") == "/var/lib/countycloud/templates/g1/frozen.qcow2"


def test_disk_sources_names_the_frozen_disk_of_a_state_file(tmp_path: Path) -> None:
    h = read_header(make_save(tmp_path / "tmpl.save"))
    assert savefile.disk_sources(h.xml) == {
        "vda": "/var/lib/countycloud/templates/g1/frozen-overlay.qcow2"
    }


# --- the replicated tier's guestfwd, added to a template saved without one ---------------------------

def _clone_guestfwd() -> tuple[str, str]:
    from provisioning.domain_xml import chardev_arg, guestfwd_option
    from provisioning.spec import GuestForward

    return guestfwd_option(), chardev_arg(GuestForward(23010))


def test_rewrite_adds_the_guestfwd_as_a_cold_render_has_it() -> None:
    from provisioning.spec import GuestForward

    out = rewrite_domain_xml(SAVED_XML, **CLONE_ARGS, guestfwd=_clone_guestfwd())  # type: ignore[arg-type]
    expected = render_domain_xml(
        TEMPLATE.with_overrides(
            name=CLONE_ARGS["name"],
            uuid=CLONE_ARGS["uuid"],
            disks=(Disk(CLONE_ARGS["disk_paths"]["vda"], "vda", DiskFormat.QCOW2),),  # type: ignore[index]
            network=UserNetwork(CLONE_ARGS["forwards"], guestfwd=GuestForward(23010)),  # type: ignore[arg-type]
            agent_socket=CLONE_ARGS["agent_socket"],
            serial_log=CLONE_ARGS["serial_log"],
        )
    )
    assert ET.canonicalize(out, strip_text=True) == ET.canonicalize(expected, strip_text=True)


def test_rewrite_guestfwd_twice_is_the_same_as_once() -> None:
    once = rewrite_domain_xml(SAVED_XML, **CLONE_ARGS, guestfwd=_clone_guestfwd())  # type: ignore[arg-type]
    twice = rewrite_domain_xml(once, **CLONE_ARGS, guestfwd=_clone_guestfwd())  # type: ignore[arg-type]
    assert ET.canonicalize(twice, strip_text=True) == ET.canonicalize(once, strip_text=True)
    assert twice.count('value="-chardev"') == 1 and twice.count("guestfwd=") == 1


def test_rewrite_without_guestfwd_adds_none() -> None:
    out = rewrite_domain_xml(SAVED_XML, **CLONE_ARGS)  # type: ignore[arg-type]
    assert "guestfwd=" not in out and "-chardev" not in out
