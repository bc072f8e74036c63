"""savefile.py against a state file written by the real libvirt (`virsh save` of a booted guest).

Opt-in: COUNTYCLOUD_REAL_SAVEFILE=/path/to/guest.save. Reads only the source; writes the clone to
pytest's tmp_path (needs free space about the size of the state file). Boots nothing.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from provisioning.savefile import HEADER_SIZE, MAGIC, read_header, write_clone

REAL = os.environ.get("COUNTYCLOUD_REAL_SAVEFILE")
pytestmark = pytest.mark.skipif(not REAL, reason="set COUNTYCLOUD_REAL_SAVEFILE to a libvirt state file")


def _stream_hash(path: Path, offset: int) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        f.seek(offset)
        while chunk := f.read(8 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def test_real_state_file_header_and_clone(tmp_path: Path) -> None:
    src = Path(REAL or "")
    h = read_header(src)
    assert (h.magic, h.version, h.compressed) == (MAGIC, 2, 0)
    root = ET.fromstring(h.xml)
    assert root.tag == "domain" and root.findtext("name")
    assert h.cookie.startswith(b"<cookie>") or h.cookie == b""
    # libvirt left at least its 64 KiB of slack after the XML and cookie
    assert h.data_len >= len(h.xml.encode()) + 1 + len(h.cookie) + 1

    new_xml = h.xml.replace(f"<name>{root.findtext('name')}</name>", "<name>clone-under-test</name>")
    dst = tmp_path / "clone.save"
    write_clone(src, dst, new_xml)
    c = read_header(dst)
    assert ET.fromstring(c.xml).findtext("name") == "clone-under-test"
    assert c.cookie == h.cookie and c.was_running == h.was_running
    assert _stream_hash(dst, HEADER_SIZE + c.data_len) == _stream_hash(src, HEADER_SIZE + h.data_len)
