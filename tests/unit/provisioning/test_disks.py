"""provisioning.disks: linked clones and their backing file, with the real qemu-img on tiny files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioning import disks

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is not installed")


def _qcow2(path: Path, size: str = "1M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def _info(path: Path) -> dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True,
                         text=True).stdout
    info = json.loads(out)
    assert isinstance(info, dict)
    return info


def _same_content(a: Path, b: Path) -> bool:
    result = subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], capture_output=True, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def test_overlay_is_a_qcow2_linked_clone_of_its_backing(tmp_path: Path) -> None:
    golden = _qcow2(tmp_path / "golden.qcow2")
    clone = tmp_path / "vm" / "system.qcow2"
    clone.parent.mkdir()
    disks.overlay(clone, golden)
    info = _info(clone)
    assert info["format"] == "qcow2"
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == 1024 * 1024  # the clone's size follows its backing
    assert disks.backing_of(clone) == golden


def test_overlay_replaces_what_was_there(tmp_path: Path) -> None:
    old_base = _qcow2(tmp_path / "old.qcow2")
    new_base = _qcow2(tmp_path / "new.qcow2", "2M")
    clone = tmp_path / "system.qcow2"
    disks.overlay(clone, old_base)
    subprocess.run(["qemu-io", "-c", "write -P 0xab 0 64k", str(clone)], check=True, capture_output=True)
    assert _same_content(clone, old_base) is False  # the old clone has data of its own
    disks.overlay(clone, new_base)
    assert disks.backing_of(clone) == new_base
    assert _info(clone)["virtual-size"] == 2 * 1024 * 1024
    # A fresh overlay holds no data of its own: nothing written to the old clone survives.
    assert _same_content(clone, new_base) is True


def test_overlay_works_on_a_read_only_frozen_disk(tmp_path: Path) -> None:
    frozen = _qcow2(tmp_path / "frozen.qcow2")
    frozen.chmod(0o444)
    clone = tmp_path / "clone.qcow2"
    disks.overlay(clone, frozen)
    assert disks.backing_of(clone) == frozen
    assert frozen.stat().st_mode & 0o777 == 0o444  # the frozen disk is left as it was


def test_overlay_on_a_missing_backing_fails_and_leaves_no_clone(tmp_path: Path) -> None:
    clone = tmp_path / "system.qcow2"
    clone.write_bytes(b"stale")
    with pytest.raises(subprocess.CalledProcessError) as failure:
        disks.overlay(clone, tmp_path / "gone.qcow2")
    assert "gone.qcow2" in failure.value.stderr
    assert not clone.exists()  # the stale disk was removed, never reused


def test_backing_of_a_chain_is_the_immediate_parent(tmp_path: Path) -> None:
    golden = _qcow2(tmp_path / "golden.qcow2")
    frozen = tmp_path / "frozen.qcow2"
    disks.overlay(frozen, golden)
    clone = tmp_path / "clone.qcow2"
    disks.overlay(clone, frozen)
    assert disks.backing_of(clone) == frozen
    assert disks.backing_of(frozen) == golden


def test_standalone_missing_and_non_image_files_have_no_backing(tmp_path: Path) -> None:
    assert disks.backing_of(_qcow2(tmp_path / "standalone.qcow2")) is None
    assert disks.backing_of(tmp_path / "missing.qcow2") is None
    raw = tmp_path / "data.img"
    raw.write_bytes(bytes(4096))
    assert disks.backing_of(raw) is None
    directory = tmp_path / "folder"
    directory.mkdir()
    assert disks.backing_of(directory) is None  # qemu-img fails: no backing, no exception
