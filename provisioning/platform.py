"""What provisioning needs from the outside, wired once by the control plane (controlplane.bootstrap).

Plain values and factories only: lower layers never read settings or the environment themselves.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from provisioning.hypervisor import Hypervisor
from provisioning.sites import SitePaths, site_paths
from provisioning.spec import DomainType, detect_domain_type


@dataclass(frozen=True)
class Platform:
    engine: Engine
    state_dir: Path
    cache_dir: Path
    domain_type: DomainType
    # How long a VM may take from start to its app answering (a TCG cold boot is 40-70 s alone).
    boot_timeout_s: float = 420.0
    # VMs on their way from restore (or boot) to serving at once; 0: no limit (see bringup.py).
    bringup_places: int = 0

    def site(self, name: str) -> SitePaths:
        return site_paths(self.state_dir, name)

    def hypervisor(self, site: str) -> Hypervisor:
        return Hypervisor(site, self.site(site).uri)

    @property
    def ssh_key(self) -> Path:
        """The platform's private key for guests (its .pub goes on every seed disk)."""
        return self.state_dir / "ssh" / "id_ed25519"

    @property
    def haproxy_dir(self) -> Path:
        return self.state_dir / "haproxy"

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "jobs"

    @property
    def locks_dir(self) -> Path:
        return self.state_dir / "locks"


def host_domain_type() -> DomainType:
    """KVM only where the CPU flags show vmx or svm; TCG (type qemu) otherwise."""
    with open("/proc/cpuinfo") as cpuinfo:
        return detect_domain_type(cpuinfo.read())


def ensure_ssh_key(path: Path) -> Path:
    """The platform's SSH key pair, made once (idempotent)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "countycloud", "-f", str(path)],
                       check=True, capture_output=True)
    return path


def ephemeral_ports(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> range:
    """The ports Linux hands to outgoing connections; a forward there can find its port taken."""
    first, last = (int(value) for value in path.read_text().split())
    return range(first, last + 1)


def check_port_range(first: int, last: int, what: str, ephemeral: range) -> None:
    if not 1024 <= first <= last <= 65535:
        raise ValueError(f"{what} {first}-{last}: not a range of unprivileged ports")
    if first <= ephemeral.stop - 1 and ephemeral.start <= last:
        raise ValueError(
            f"{what} {first}-{last} overlap Linux's ephemeral ports {ephemeral.start}-{ephemeral.stop - 1}: "
            "outgoing connections could take them; choose a range below or above")
