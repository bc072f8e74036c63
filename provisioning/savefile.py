"""libvirt's QEMU save-image format (what `virsh save` writes): read its header, clone it with new XML.

Why this exists: a county VM is a restore of a prebooted template's state file, but libvirt refuses a
restore whose XML changes the domain's name or UUID ("Target domain uuid ... does not match source").
So we write the state file's header ourselves. Nothing of the project is imported: plain data in,
files and text out.

The format, as libvirt's src/qemu/qemu_saveimage.[ch] writes and reads it (host byte order, so
little-endian on x86; libvirt byte-swaps a header whose version looks too large, we refuse it):

    offset  size  field
         0    16  magic         "LibvirtQemudSave" ("LibvirtQemudPart" while the save is still running)
        16     4  version       2 (the only version we accept)
        20     4  data_len      bytes of the data region that follows the header
        24     4  was_running   1 = resume the guest after restore
        28     4  compressed    0 = raw; gzip/bzip2/xz/lzop/zstd are other numbers (called `format` later)
        32     4  cookieOffset  offset of the cookie inside the data region, 0 = no cookie
        36    56  unused[14]    zeros
        92        data region   domain XML + NUL, then the cookie (<cookie>...</cookie>) + NUL, then
                                zero padding up to data_len. libvirt pads by 64 KiB on save so that the
                                XML can grow in place; it does not page-align anything.
  92+data_len     QEMU's migration stream ("QEVM" ...), read by QEMU from the fd where libvirt left it.

The header is 92 bytes: 16 + 5*4 + 14*4 (older libvirt had no cookieOffset and unused[15]: same size).
"""

from __future__ import annotations

import errno
import os
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Protocol

from provisioning.errors import ProvisioningError

MAGIC = b"LibvirtQemudSave"
PARTIAL_MAGIC = b"LibvirtQemudPart"  # libvirt writes this first and the real magic only when done
SUPPORTED_VERSION = 2
HEADER = struct.Struct("<16s5I56s")
HEADER_SIZE = HEADER.size  # 92
# libvirt's own slack when it first writes the data region (virQEMUSaveDataWrite).
XML_PADDING = 64 * 1024
# QEMU_VM_FILE_MAGIC: every uncompressed migration stream starts with it.
QEMU_STREAM_MAGIC = b"QEVM"
# Large copies move through the kernel (copy_file_range) in chunks this big.
_COPY_CHUNK = 64 * 1024 * 1024
_FALLBACK_CHUNK = 8 * 1024 * 1024
_LOOPBACK = "127.0.0.1"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

# ElementTree would otherwise write the qemu namespace back as "ns0:", which libvirt does not mind
# but which makes the saved XML harder to read next to the original.
ET.register_namespace("qemu", QEMU_NS)


class SaveFormat(IntEnum):
    """The `compressed` field: libvirt's virQEMUSaveFormat numbers (on-disk ABI, never reused)."""

    RAW = 0
    GZIP = 1
    BZIP2 = 2
    XZ = 3
    LZOP = 4
    ZSTD = 5


class SaveFileError(ProvisioningError):
    """A state file we will not use; the message names the file and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class SaveHeader:
    magic: bytes
    version: int
    data_len: int
    was_running: bool
    compressed: int
    cookie_offset: int
    xml: str  # the domain XML (libvirt: virQEMUSaveData.xml), without its NUL and padding
    cookie: bytes  # the cookie text without its NUL and padding; b"" when the file has none

    @property
    def stream_offset(self) -> int:
        """Where QEMU's migration stream starts in the file."""
        return HEADER_SIZE + self.data_len


def _cstring(region: bytes) -> bytes:
    """The bytes before the first NUL (libvirt stores C strings, padded with zeros)."""
    end = region.find(b"\0")
    return region if end < 0 else region[:end]


def _format_name(value: int) -> str:
    try:
        return SaveFormat(value).name.lower()
    except ValueError:
        return f"unknown format {value}"


def _check_header(path: Path, magic: bytes, version: int, data_len: int, compressed: int,
                  cookie_offset: int) -> None:
    if magic == PARTIAL_MAGIC:
        raise SaveFileError(path, "incomplete save: libvirt never finished writing it (partial magic)")
    if magic != MAGIC:
        raise SaveFileError(path, f"not a libvirt QEMU save image (magic {magic!r})")
    if version != SUPPORTED_VERSION:
        raise SaveFileError(path, f"save image version {version} is not supported (only {SUPPORTED_VERSION})")
    if compressed != SaveFormat.RAW:
        raise SaveFileError(
            path, f"compressed save image ({_format_name(compressed)}) is not supported, only raw"
        )
    if data_len == 0:
        raise SaveFileError(path, "invalid header: data_len is 0")
    if cookie_offset > data_len:
        raise SaveFileError(path, f"invalid header: cookieOffset {cookie_offset} beyond data_len {data_len}")


def read_header(path: Path) -> SaveHeader:
    """Parse and check the header and data region of a state file; the stream itself is not read."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(HEADER_SIZE)
            if len(raw) < HEADER_SIZE:
                raise SaveFileError(
                    path, f"truncated: {len(raw)} bytes, shorter than the {HEADER_SIZE}-byte header"
                )
            magic, version, data_len, was_running, compressed, cookie_offset, _unused = HEADER.unpack(raw)
            _check_header(path, magic, version, data_len, compressed, cookie_offset)
            region = f.read(data_len)
            if len(region) < data_len:
                raise SaveFileError(
                    path, f"truncated: data region has {len(region)} of the {data_len} declared bytes"
                )
            stream_head = f.read(len(QEMU_STREAM_MAGIC))
    except OSError as exc:
        raise SaveFileError(path, f"cannot read: {exc.strerror or exc}") from exc
    if stream_head != QEMU_STREAM_MAGIC:
        what = "missing" if not stream_head else f"starts with {stream_head!r}, not {QEMU_STREAM_MAGIC!r}"
        raise SaveFileError(path, f"truncated or corrupt: QEMU migration stream {what}")

    xml_region = region[:cookie_offset] if cookie_offset else region
    cookie = _cstring(region[cookie_offset:]) if cookie_offset else b""
    xml_bytes = _cstring(xml_region)
    try:
        xml = xml_bytes.decode("utf-8")
        ET.fromstring(xml)
    except (UnicodeDecodeError, ET.ParseError) as exc:
        raise SaveFileError(path, f"domain XML in the header is not parseable: {exc}") from exc
    return SaveHeader(
        magic=magic,
        version=version,
        data_len=data_len,
        was_running=bool(was_running),
        compressed=compressed,
        cookie_offset=cookie_offset,
        xml=xml,
        cookie=cookie,
    )


def _data_region(xml: str, cookie: bytes, min_len: int) -> tuple[bytes, int]:
    """(region, cookie_offset) with libvirt's layout: XML NUL, cookie NUL, zeros up to data_len.

    The original data_len is kept when the new content fits (as `virsh save-image-define` does);
    otherwise it grows by libvirt's 64 KiB slack, which only moves where the stream starts.
    """
    xml_part = xml.encode("utf-8") + b"\0"
    cookie_part = cookie + b"\0" if cookie else b""
    used = len(xml_part) + len(cookie_part)
    data_len = min_len if used <= min_len else used + XML_PADDING
    cookie_offset = len(xml_part) if cookie else 0
    return xml_part + cookie_part + bytes(data_len - used), cookie_offset


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    """Copy `length` bytes from src[offset:] to dst's current position, in the kernel where possible."""
    copied = 0
    try:
        while copied < length:
            n = os.copy_file_range(src, dst, min(_COPY_CHUNK, length - copied), offset + copied)
            if n == 0:
                break
            copied += n
    except OSError as exc:
        # Cross-device copies and old kernels/file systems: fall back to a plain buffered copy.
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    while copied < length:
        chunk = os.pread(src, min(_FALLBACK_CHUNK, length - copied), offset + copied)
        if not chunk:
            break  # the source shrank under us; write_clone's size check reports it
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view):]
        copied += len(chunk)


def write_clone(src: Path, dst: Path, new_xml: str, *, durable: bool = True) -> None:
    """Write dst = src's state with `new_xml` in its header; src's migration stream copied unchanged.

    Atomic: written to `dst.tmp`, marked complete, fsynced, checked, then renamed over dst. A crash
    leaves at most a `.tmp` file, which the next run overwrites. `durable=False` skips the fsyncs for
    a file that lives only until it is restored (a crash before then just writes it again).
    """
    src, dst = Path(src), Path(dst)
    header = read_header(src)
    try:
        ET.fromstring(new_xml)
    except ET.ParseError as exc:
        raise SaveFileError(dst, f"new domain XML is not parseable: {exc}") from exc
    region, cookie_offset = _data_region(new_xml, header.cookie, header.data_len)
    stream_len = src.stat().st_size - header.stream_offset
    tmp = dst.with_name(dst.name + ".tmp")

    def pack(magic: bytes) -> bytes:
        return HEADER.pack(magic, SUPPORTED_VERSION, len(region), int(header.was_running),
                           SaveFormat.RAW, cookie_offset, bytes(56))

    try:
        with src.open("rb") as fsrc, tmp.open("wb") as fdst:
            # Like libvirt: the partial magic until everything else is on disk.
            fdst.write(pack(PARTIAL_MAGIC))
            fdst.write(region)
            fdst.flush()
            _copy_range(fsrc.fileno(), fdst.fileno(), header.stream_offset, stream_len)
            if durable:
                os.fsync(fdst.fileno())
            fdst.seek(0)
            fdst.write(pack(MAGIC))
            fdst.flush()
            if durable:
                os.fsync(fdst.fileno())
        written = tmp.stat().st_size
        expected = HEADER_SIZE + len(region) + stream_len
        if written != expected:
            raise SaveFileError(dst, f"short copy: wrote {written} of {expected} bytes")
        read_header(tmp)
        os.replace(tmp, dst)
        if not durable:
            return
        dir_fd = os.open(dst.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- the domain XML inside a state file -------------------------------------------------------------

class PortForward(Protocol):
    """Structurally provisioning.spec.Forward; declared here so this module imports nothing."""

    @property
    def host_port(self) -> int: ...

    @property
    def guest_port(self) -> int: ...


_HOSTFWD_RE = re.compile(r"^hostfwd=tcp:(?P<addr>[^:]*):(?P<host>\d+)-(?P<gaddr>[^:]*):(?P<guest>\d+)$")
_AGENT_CHANNEL = "org.qemu.guest_agent.0"


class XmlRewriteError(ValueError):
    """The saved XML lacks something the rewrite was asked to change (it would not name the clone)."""


def _rewrite_netdev(value: str, forwards: Mapping[int, int]) -> str:
    """Replace the host port of each hostfwd; the set of guest ports must stay the same."""
    options = value.split(",")
    seen: set[int] = set()
    for i, option in enumerate(options):
        m = _HOSTFWD_RE.match(option)
        if m is None:
            continue
        if m["addr"] != _LOOPBACK:
            raise XmlRewriteError(f"saved hostfwd {option!r} is not bound to {_LOOPBACK}")
        guest = int(m["guest"])
        if guest not in forwards:
            raise XmlRewriteError(f"no new host port given for the saved forward to guest port {guest}")
        seen.add(guest)
        options[i] = f"hostfwd=tcp:{_LOOPBACK}:{forwards[guest]}-{m['gaddr']}:{guest}"
    missing = set(forwards) - seen
    if missing:
        raise XmlRewriteError(f"the saved guest has no forward to guest port(s) {sorted(missing)}")
    return ",".join(options)


def _one(root: ET.Element, path: str, what: str) -> ET.Element:
    found = root.findall(path)
    if len(found) != 1:
        raise XmlRewriteError(f"expected exactly one {what} in the saved XML, found {len(found)}")
    return found[0]


def rewrite_domain_xml(
    xml: str,
    *,
    name: str,
    uuid: str,
    disk_paths: Mapping[str, Path | str],
    forwards: tuple[PortForward, ...],
    agent_socket: Path | str | None,
    serial_log: Path | str | None,
    guestfwd: tuple[str, str] | None = None,
) -> str:
    """The saved domain XML renamed for one county VM; every other element is left as it was.

    Restore requires the device set to match the saved guest exactly, so this only changes values:
    name, uuid, the source file of the named disks, the host ports of the hostfwd rules, the agent
    socket path and the serial log path (serial and its console mirror). None = leave that one alone.

    `guestfwd` = (the netdev's `guestfwd=` option, the `-chardev` value it names) is the one thing
    added: QEMU keeps neither a chardev nor the user network's options in a saved state, so a
    template saved without the guestfwd restores with it (checked on a real clone, docs/backup.md).
    """
    root = ET.fromstring(xml)
    _one(root, "name", "<name>").text = name
    _one(root, "uuid", "<uuid>").text = uuid

    for target, new_path in disk_paths.items():
        disks = [d for d in root.iterfind("devices/disk")
                 if (t := d.find("target")) is not None and t.get("dev") == target]
        if len(disks) != 1:
            raise XmlRewriteError(f"expected exactly one disk with target {target}, found {len(disks)}")
        _one(disks[0], "source", f"<source> of disk {target}").set("file", str(new_path))

    if forwards:
        wanted = {f.guest_port: f.host_port for f in forwards}
        if len(wanted) != len(forwards):
            raise XmlRewriteError("two forwards to the same guest port")
        args = [a for a in root.iterfind(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")
                if a.get("value", "").startswith("user,")]
        if len(args) != 1:
            raise XmlRewriteError(f"expected one user-mode -netdev argument, found {len(args)}")
        args[0].set("value", _rewrite_netdev(args[0].get("value", ""), wanted))

    if guestfwd is not None:
        _add_guestfwd(root, *guestfwd)

    if agent_socket is not None:
        channels = [c for c in root.iterfind("devices/channel[@type='unix']")
                    if (t := c.find("target")) is not None and t.get("name") == _AGENT_CHANNEL]
        if len(channels) != 1:
            raise XmlRewriteError(f"expected one guest agent channel, found {len(channels)}")
        _one(channels[0], "source", "<source> of the agent channel").set("path", str(agent_socket))

    if serial_log is not None:
        serial = _one(root, "devices/serial[@type='file']", "file serial port")
        source = _one(serial, "source", "<source> of the serial port")
        old = source.get("path")
        source.set("path", str(serial_log))
        # libvirt mirrors serial0 as <console> with the same source: keep the two consistent.
        for console in root.iterfind("devices/console[@type='file']"):
            csource = console.find("source")
            if csource is not None and csource.get("path") == old:
                csource.set("path", str(serial_log))

    return ET.tostring(root, encoding="unicode")


def _add_guestfwd(root: ET.Element, option: str, chardev: str) -> None:
    """The guestfwd option on the user-mode netdev and its chardev just before it (idempotent)."""
    commandline = _one(root, f"{{{QEMU_NS}}}commandline", "<qemu:commandline>")
    args = list(commandline)
    netdevs = [i for i, a in enumerate(args) if a.get("value", "").startswith("user,")]
    if len(netdevs) != 1 or netdevs[0] == 0:
        raise XmlRewriteError(f"expected one user-mode -netdev argument, found {len(netdevs)}")
    netdev = args[netdevs[0]]
    options = [o for o in netdev.get("value", "").split(",") if not o.startswith("guestfwd=")]
    netdev.set("value", ",".join([*options, option]))
    chardev_id = chardev.split(",id=", 1)[1].split(",", 1)[0] if ",id=" in chardev else None
    for i, arg in enumerate(args[:-1]):
        if arg.get("value") == "-chardev" and f",id={chardev_id}," in f"{args[i + 1].get('value', '')},":
            args[i + 1].set("value", chardev)
            return
    position = netdevs[0] - 1  # before "-netdev"
    for offset, value in enumerate(("-chardev", chardev)):
        element = ET.Element(f"{{{QEMU_NS}}}arg", {"value": value})
        commandline.insert(position + offset, element)


def disk_sources(xml: str) -> dict[str, str]:
    """{target: source file} of the file-backed disks in a domain XML.

    For checking that a state file belongs to the expected frozen disk (a template saved from another
    golden image must be refused, not restored over the wrong disk).
    """
    sources: dict[str, str] = {}
    for disk in ET.fromstring(xml).iterfind("devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is not None and source is not None and "file" in source.attrib:
            sources[target.get("dev", "")] = source.attrib["file"]
    return sources
