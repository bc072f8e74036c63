"""Seed and data disks, built with the real mkfs.ext4 and read back with debugfs / dumpe2fs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from provisioning.seed import (
    DATA_LABEL,
    SEED_LABEL,
    DataDiskResult,
    SeedError,
    build_seed_image,
    make_data_disk,
    probe,
    render_env,
)

SBIN = "/usr/sbin:/sbin"
pytestmark = pytest.mark.skipif(
    shutil.which("debugfs", path=SBIN) is None or shutil.which("mkfs.ext4", path=SBIN) is None,
    reason="needs e2fsprogs",
)

SETTINGS = {
    "TENANT_APP_COUNTY_ID": "keelung",
    "TENANT_APP_COUNTY_NAME": "基隆市",
    "TENANT_APP_SECRET": "s3cr3t-9f8e7d6c5b4a",
    "TENANT_APP_DATABASE_URL": "sqlite:////data/tenant.db",
    "TENANT_APP_HOSTNAME": "keelung-app",
}
KEYS = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample countycloud@host"]


def run(tool: str, *args: str) -> str:
    path = shutil.which(tool, path=SBIN)
    assert path, tool
    return subprocess.run([path, *args], check=True, capture_output=True, text=True).stdout


def debugfs(image: Path, request: str) -> str:
    return run("debugfs", "-R", request, str(image))


def label(image: Path) -> str:
    header = run("dumpe2fs", "-h", str(image))
    name = "Filesystem volume name:"
    return next(line[len(name):].strip() for line in header.splitlines() if line.startswith(name))


def test_render_env_is_sorted_key_value_lines() -> None:
    assert render_env({"B": "2", "A": "x y"}) == "A=x y\nB=2\n"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("TENANT_APP_SECRET", "abc\nEVIL=1", "newline"),
        ("TENANT_APP_SECRET", "abc\r", "newline"),
        ("TENANT_APP_SECRET", 'a"b', "quote"),
        ("TENANT_APP_SECRET", "a\\b", "backslash"),
        ("TENANT_APP_SECRET", " abc", "whitespace"),
        ("tenant_app_secret", "abc", "setting name"),
        ("TENANT-APP", "abc", "setting name"),
    ],
)
def test_render_env_refuses(key: str, value: str, message: str) -> None:
    with pytest.raises(SeedError, match=message):
        render_env({key: value})


def test_seed_image_holds_the_settings(tmp_path: Path) -> None:
    image = tmp_path / "seed.img"
    build_seed_image(image, settings=SETTINGS, hostname="keelung-app", authorized_keys=KEYS)
    env = debugfs(image, "cat /tenant-app.env")
    assert dict(line.split("=", 1) for line in env.splitlines()) == SETTINGS
    assert debugfs(image, "cat /hostname") == "keelung-app\n"
    assert debugfs(image, "cat /authorized_keys") == KEYS[0] + "\n"
    assert label(image) == SEED_LABEL
    assert "Mode:  0600" in debugfs(image, "stat /tenant-app.env")
    assert image.stat().st_mode & 0o777 == 0o600
    assert image.stat().st_size == 4 * 1024 * 1024
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.img"]  # no temporary left behind


def test_seed_rebuild_replaces_the_settings(tmp_path: Path) -> None:
    image = tmp_path / "seed.img"
    build_seed_image(image, settings=SETTINGS, hostname="keelung-app", authorized_keys=KEYS)
    build_seed_image(image, settings={**SETTINGS, "TENANT_APP_SECRET": "rotated"},
                     hostname="keelung-app", authorized_keys=KEYS)
    assert "TENANT_APP_SECRET=rotated" in debugfs(image, "cat /tenant-app.env")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"settings": {"TENANT_APP_SECRET": "a\nb"}}, "newline"),
        ({"hostname": "Keelung_App"}, "hostname"),
        ({"authorized_keys": ["ssh-ed25519 AAA\nssh-rsa BBB"]}, "one non-empty line"),
        ({"authorized_keys": [""]}, "one non-empty line"),
    ],
)
def test_seed_refuses_bad_input_and_writes_nothing(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"settings": SETTINGS, "hostname": "keelung-app", "authorized_keys": KEYS}
    with pytest.raises(SeedError, match=message):
        build_seed_image(tmp_path / "seed.img", **{**args, **kwargs})  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_data_disk_is_sparse_ext4_labelled_ccdata(tmp_path: Path) -> None:
    disk = tmp_path / "data.img"
    assert make_data_disk(disk, 64) is DataDiskResult.CREATED
    st = disk.stat()
    assert st.st_size == 64 * 1024 * 1024
    assert st.st_blocks * 512 < st.st_size // 4  # sparse: most of it never written
    assert st.st_mode & 0o777 == 0o600
    assert probe(disk)["TYPE"] == "ext4"
    assert label(disk) == DATA_LABEL


def test_data_disk_is_never_reformatted(tmp_path: Path) -> None:
    disk = tmp_path / "data.img"
    make_data_disk(disk, 64)
    marker = tmp_path / "marker.txt"
    marker.write_text("county ledger\n")
    run("debugfs", "-w", "-R", f"write {marker} /ledger", str(disk))
    assert make_data_disk(disk, 64) is DataDiskResult.KEPT
    assert debugfs(disk, "cat /ledger") == "county ledger\n"


def test_data_disk_refuses_a_foreign_file(tmp_path: Path) -> None:
    disk = tmp_path / "data.img"
    disk.write_bytes(b"not a file system, maybe somebody's data" * 1000)
    before = disk.read_bytes()
    with pytest.raises(SeedError, match="refusing to format"):
        make_data_disk(disk, 64)
    assert disk.read_bytes() == before


def test_data_disk_refuses_an_ext4_with_another_label(tmp_path: Path) -> None:
    seed = tmp_path / "seed.img"
    build_seed_image(seed, settings=SETTINGS, hostname="keelung-app", authorized_keys=KEYS)
    with pytest.raises(SeedError, match="not a ccdata ext4 disk"):
        make_data_disk(seed, 64)


def test_data_disk_recovers_from_a_crash_mid_creation(tmp_path: Path) -> None:
    (tmp_path / "data.img.tmp").write_bytes(b"\0" * 4096)  # left by a run killed before the rename
    assert make_data_disk(tmp_path / "data.img", 16) is DataDiskResult.CREATED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.img"]


def test_data_disk_size_is_validated(tmp_path: Path) -> None:
    with pytest.raises(SeedError, match="at least 8 MiB"):
        make_data_disk(tmp_path / "data.img", 1)


def test_seed_image_carries_identity_files_byte_for_byte(tmp_path: Path) -> None:
    image = tmp_path / "seed.img"
    key = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----\n"
    random_seed = bytes(range(256)) * 2
    build_seed_image(image, settings=SETTINGS, hostname="keelung-app", authorized_keys=KEYS,
                     identity={"machine-id": b"0123456789abcdef0123456789abcdef\n",
                               "random-seed": random_seed, "ssh_host_ed25519_key": key})
    dumped = tmp_path / "random-seed.out"
    run("debugfs", "-R", f"dump /random-seed {dumped}", str(image))
    assert dumped.read_bytes() == random_seed
    assert debugfs(image, "cat /ssh_host_ed25519_key") == key.decode()
    assert "Mode:  0600" in debugfs(image, "stat /ssh_host_ed25519_key")


@pytest.mark.parametrize("name", ["../etc/passwd", "hostname", "tenant-app.env", "a/b", ""])
def test_seed_refuses_identity_file_names_that_escape_or_clash(tmp_path: Path, name: str) -> None:
    with pytest.raises(SeedError, match="identity file name"):
        build_seed_image(tmp_path / "seed.img", settings=SETTINGS, hostname="keelung-app",
                         authorized_keys=KEYS, identity={name: b"x"})
