"""Per-tenant disks: the first-boot settings (seed) image and the county's data disk.

Settings travel on a small read-only ext4 disk, never in the domain XML: the XML is readable by anyone
with libvirt access, copied into state files and logs, and the app secret must not be. Plain data in,
image files out; nothing of the project is imported.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path

from provisioning.errors import ProvisioningError

SEED_LABEL = "ccseed"  # the guest finds its seed by label: /dev/disk/by-label/ccseed
DATA_LABEL = "ccdata"
SEED_SIZE = "4M"
# Inode tables and journal zeroed here on the host, in milliseconds, rather than by the guest
# kernel's ext4lazyinit thread under TCG while the county's app is starting.
EAGER_INIT = ("-E", "lazy_itable_init=0,lazy_journal_init=0")
ENV_FILE = "tenant-app.env"
HOSTNAME_FILE = "hostname"
AUTHORIZED_KEYS_FILE = "authorized_keys"

_KEY_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOSTNAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# Control characters would break the one-setting-per-line format. Quotes and backslashes are refused
# because systemd's EnvironmentFile (and most .env readers) unquote and unescape them, so the app would
# see a different value from the one written here.
_BAD_VALUE_RE = re.compile(r"[\x00-\x1f\x7f\"'\\]")
_SBIN = ("/usr/sbin", "/sbin")


class SeedError(ProvisioningError):
    """Settings or a disk we refuse to write; the message names what and why."""


class DataDiskResult(StrEnum):
    CREATED = "created"
    KEPT = "kept"  # an existing ccdata disk: never reformatted, it holds the county's data


def _tool(name: str) -> str:
    """A tool from PATH or sbin (non-login shells and CI often lack /usr/sbin on PATH)."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
    if found is None:
        raise SeedError(f"{name} not found (install e2fsprogs / util-linux)")
    return found


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise SeedError(f"{' '.join(args)} failed (exit {exc.returncode}): {exc.stderr.strip()}") from exc


def render_env(settings: Mapping[str, str]) -> str:
    """KEY=VALUE lines, one per setting, in a stable (sorted) order so rebuilds are comparable."""
    lines = []
    for key in sorted(settings):
        value = settings[key]
        if not _KEY_RE.match(key):
            raise SeedError(f"setting name {key!r} must be upper-case letters, digits and '_'")
        if not isinstance(value, str):
            raise SeedError(f"setting {key} must be a string, got {type(value).__name__}")
        if _BAD_VALUE_RE.search(value):
            raise SeedError(f"setting {key} contains a newline, control character, quote or backslash")
        if value != value.strip():
            raise SeedError(f"setting {key} has leading or trailing whitespace (it would be stripped)")
        lines.append(f"{key}={value}\n")
    return "".join(lines)


def _check_hostname(hostname: str) -> None:
    if not _HOSTNAME_RE.match(hostname):
        raise SeedError(f"hostname {hostname!r} must be 1-63 of [a-z0-9-], not starting or ending with '-'")


def _render_keys(keys: Sequence[str]) -> str:
    for key in keys:
        if not key.strip() or "\n" in key or "\r" in key or "\0" in key:
            raise SeedError("each authorized key must be one non-empty line")
    return "".join(f"{k.strip()}\n" for k in keys)


def build_seed_image(
    image: Path,
    *,
    settings: Mapping[str, str],
    hostname: str,
    authorized_keys: Sequence[str],
    identity: Mapping[str, bytes] | None = None,
) -> None:
    """(Re)build the seed image: an ext4 file system labelled ccseed holding the tenant's settings.

    `identity` adds files at the image root, byte for byte and root-only (machine-id, random-seed,
    SSH host keys: what makes a clone of a shared template its own guest).
    The seed is derived data, so a rebuild simply replaces it (atomically: a reader never sees half).
    """
    env = render_env(settings)
    _check_hostname(hostname)
    keys = _render_keys(authorized_keys)
    extra = dict(identity or {})
    for name, content in extra.items():
        if not _FILE_NAME_RE.match(name) or name in (ENV_FILE, HOSTNAME_FILE, AUTHORIZED_KEYS_FILE):
            raise SeedError(f"identity file name {name!r} is not a plain, unreserved file name")
        if not isinstance(content, bytes):
            raise SeedError(f"identity file {name} must be bytes, got {type(content).__name__}")
    image = Path(image)
    tmp_image = image.with_name(image.name + ".tmp")
    with tempfile.TemporaryDirectory(prefix="ccseed-") as staging:
        root = Path(staging)
        # The env file holds the app secret: root-only inside the guest too (mkfs -d keeps modes).
        for name, text, mode in (
            (ENV_FILE, env, 0o600),
            (HOSTNAME_FILE, f"{hostname}\n", 0o644),
            (AUTHORIZED_KEYS_FILE, keys, 0o600),
        ):
            path = root / name
            path.write_text(text, encoding="utf-8")
            path.chmod(mode)
        for name, content in extra.items():
            path = root / name
            path.write_bytes(content)
            path.chmod(0o600)
        root.chmod(0o755)
        tmp_image.unlink(missing_ok=True)
        try:
            mkfs = _tool("mkfs.ext4")
            _run([mkfs, "-q", "-F", "-L", SEED_LABEL, *EAGER_INIT, "-d", str(root), str(tmp_image),
                  SEED_SIZE])
            tmp_image.chmod(0o600)  # the image holds the secret on the host as well
            os.replace(tmp_image, image)
        finally:
            tmp_image.unlink(missing_ok=True)


def probe(path: Path) -> dict[str, str]:
    """blkid's low-level probe of a file: {"TYPE": "ext4", "LABEL": ...}; {} when nothing is found."""
    try:
        out = subprocess.run(
            [_tool("blkid"), "-p", "-o", "export", str(path)], check=True, capture_output=True, text=True
        ).stdout
    except subprocess.CalledProcessError as exc:
        if exc.returncode == 2:  # blkid: no recognisable signature
            return {}
        raise SeedError(f"blkid {path} failed (exit {exc.returncode}): {exc.stderr.strip()}") from exc
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def make_data_disk(path: Path, size_mib: int) -> DataDiskResult:
    """A sparse raw file with an ext4 file system labelled ccdata; an existing one is kept as it is.

    Safe to rerun after a crash: the file system is made in `path.tmp` and renamed into place, so
    `path` either does not exist or is complete. Anything at `path` that is not our ccdata file
    system is refused, never formatted: it may be someone's data.
    """
    path = Path(path)
    if isinstance(size_mib, bool) or not isinstance(size_mib, int) or size_mib < 8:
        raise SeedError(f"data disk size must be an integer of at least 8 MiB, got {size_mib!r}")
    if path.exists():
        found = probe(path)
        if found.get("TYPE") == "ext4" and found.get("LABEL") == DATA_LABEL:
            return DataDiskResult.KEPT
        raise SeedError(
            f"{path} exists but is not a {DATA_LABEL} ext4 disk (found {found or 'no file system'}); "
            "refusing to format it"
        )
    tmp = path.with_name(path.name + ".tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.truncate(size_mib * 1024 * 1024)  # sparse: only what ext4 writes takes space
        _run([_tool("mkfs.ext4"), "-q", "-F", "-L", DATA_LABEL, *EAGER_INIT, str(tmp)])
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        try:
            # link, not rename: never replaces a disk that appeared meanwhile (it may hold data by now)
            os.link(tmp, path)
        except FileExistsError:
            return make_data_disk(path, size_mib)
    finally:
        tmp.unlink(missing_ok=True)
    return DataDiskResult.CREATED


def new_host_key(comment: str) -> tuple[bytes, bytes]:
    """An SSH ed25519 host key pair in OpenSSH's file formats (private, public), made in process."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + b" " + comment.encode() + b"\n"
