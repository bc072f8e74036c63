"""Plain data for one county VM, read from the inventory, and the pure functions over it.

Job steps re-read this at every step (a resumed job may run in a new process), then act on it
through the edges. Nothing here touches libvirt, disks or the network.
"""

from __future__ import annotations

import hashlib
import os
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from provisioning import seed
from provisioning.images import GoldenImage
from provisioning.sites import SitePaths
from provisioning.spec import Disk, DiskFormat, DomainType, Forward, GuestForward, UserNetwork, VMSpec

SSH_GUEST_PORT = 22
APP_GUEST_PORT = 8080
SEED_TARGET = "vdb"
DATA_TARGET = "vdc"
GUEST_DATA_DIR = "/srv/tenant-data"
# The replica target's port (backup/replicaserver.py: `rclone serve sftp` of the secondary site),
# which every replicated county's guestfwd connects to. Next to the backup REST servers'
# 23000-23009 and below Linux's ephemeral range; read here because the VM's XML names it.
# controlplane.settings declares the same variable with its bounds and refuses a bad value, naming
# it, before any command or the service runs; a value that is not a port is not used here meanwhile.
DEFAULT_REPLICA_PORT = 23010


def _replica_port(text: str | None) -> int:
    port = int(text) if text and text.strip().isdigit() else DEFAULT_REPLICA_PORT
    return port if 1 <= port <= 65535 else DEFAULT_REPLICA_PORT


REPLICA_PORT = _replica_port(os.environ.get("COUNTYCLOUD_REPLICA_PORT"))
# Where the gateway's connections come from as the guest sees them: QEMU user networking hands a
# hostfwd connection to the guest from its host alias, 10.0.2.2 by default (netdev_arg sets no
# `net=`/`host=`). The app believes X-Forwarded-For/-Proto only from this address, and HAProxy sets
# both, so the log-in throttle counts the real client and a client cannot claim another address.
GUEST_VIEW_OF_GATEWAY = "10.0.2.2"


@dataclass(frozen=True)
class VmPlan:
    """What provisioning needs to know of one VM and its tenant."""

    name: str
    uuid: str
    tenant: str
    county_name: str
    site: str
    vcpus: int
    memory_mib: int
    data_disk_mib: int
    ssh_port: int
    app_port: int
    app_secret: str
    settings: dict[str, str]
    # The host port the county's database stream goes to (its guestfwd's chardev): set only for a
    # county of the `replicated` protection tier (backup/replication.py).
    replica_port: int | None = None


@dataclass(frozen=True)
class VmPaths:
    directory: Path
    # Files that live for seconds (a clone's copy of the template state): in memory, never written
    # back to disk. None: beside the VM's disks.
    scratch: Path | None = None
    # The county's data disk when it is not the VM's own (a restored copy attached elsewhere).
    data_disk_path: Path | None = None

    @property
    def system_disk(self) -> Path:
        return self.directory / "system.qcow2"

    @property
    def seed_disk(self) -> Path:
        return self.directory / "seed.img"

    @property
    def data_disk(self) -> Path:
        return self.data_disk_path or self.directory / "data.img"

    @property
    def agent_socket(self) -> Path:
        return self.directory / "agent.sock"

    @property
    def serial_log(self) -> Path:
        return self.directory / "console.log"

    @property
    def clone_state(self) -> Path:
        """The county's copy of the template state file; exists only between clone and restore.

        On tmpfs: 13 counties at once wrote 2.7 GB of copies that the kernel then wrote back to disk
        while the clones restored, only for each copy to be deleted a second later."""
        if self.scratch is None:
            return self.directory / "clone.sav"
        return self.scratch / f"{self.directory.name}.sav"

    @property
    def clone_state_files(self) -> tuple[Path, Path]:
        """The copy and its partial form (savefile.write_clone's `.tmp`), as a crash may leave either."""
        return self.clone_state, self.clone_state.with_name(self.clone_state.name + ".tmp")

    @property
    def host_key(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"


def vm_paths(site: SitePaths, vm_name: str, *, data_disk: Path | None = None) -> VmPaths:
    return VmPaths(site.disks / "vms" / vm_name, scratch=site.scratch, data_disk_path=data_disk)


def forwards(plan: VmPlan) -> tuple[Forward, ...]:
    return (Forward(host_port=plan.ssh_port, guest_port=SSH_GUEST_PORT),
            Forward(host_port=plan.app_port, guest_port=APP_GUEST_PORT))


def guestfwd(plan: VmPlan) -> GuestForward | None:
    return None if plan.replica_port is None else GuestForward(host_port=plan.replica_port)


def machine_id(plan: VmPlan) -> str:
    """systemd's machine-id: 32 lower-case hex digits, unique per VM (its UUID without dashes)."""
    return uuidlib.UUID(plan.uuid).hex


def app_env(plan: VmPlan) -> dict[str, str]:
    """The tenant app's settings file inside the guest (KEY=VALUE), from the inventory."""
    env = {
        "TENANT_APP_COUNTY_ID": plan.tenant,
        "TENANT_APP_COUNTY_NAME": plan.county_name,
        "TENANT_APP_SECRET": plan.app_secret,
        "TENANT_APP_DATABASE_URL": f"sqlite:///{GUEST_DATA_DIR}/tenant.db",
        "TENANT_APP_HOST": "0.0.0.0",  # inside the guest; the host side of the forward is 127.0.0.1
        "TENANT_APP_PORT": str(APP_GUEST_PORT),
        "TENANT_APP_TRUSTED_PROXIES": GUEST_VIEW_OF_GATEWAY,
    }
    env.update({f"TENANT_APP_{key.upper()}": value for key, value in sorted(plan.settings.items())})
    return env


def settings_digest(plan: VmPlan) -> str:
    """Changes when the guest's declared settings change (the configure step converges them)."""
    return hashlib.sha256(seed.render_env(app_env(plan)).encode()).hexdigest()[:16]


# A booted VM's maximums: room to grow live (a boot, unlike a restore, pays nothing for them).
COLD_MAX_VCPUS = 4
COLD_MAX_MEMORY_MIB = 4096


def cold_spec(plan: VmPlan, paths: VmPaths, image: GoldenImage, domain_type: DomainType) -> VMSpec:
    """A VM that boots from its own linked clone of the golden image, with every disk attached."""
    return VMSpec(
        name=plan.name, uuid=plan.uuid, vcpus=plan.vcpus, max_vcpus=max(COLD_MAX_VCPUS, plan.vcpus),
        memory_mib=plan.memory_mib, max_memory_mib=max(COLD_MAX_MEMORY_MIB, plan.memory_mib),
        domain_type=domain_type, kernel=image.kernel, initrd=image.initrd, cmdline=image.cmdline,
        disks=(
            Disk(path=paths.system_disk, target="vda", fmt=DiskFormat.QCOW2),
            *hotplug_disks(paths),
        ),
        network=UserNetwork(forwards=forwards(plan), guestfwd=guestfwd(plan)),
        agent_socket=paths.agent_socket, serial_log=paths.serial_log,
    )


def hotplug_disks(paths: VmPaths) -> tuple[Disk, ...]:
    return (
        Disk(path=paths.seed_disk, target=SEED_TARGET, fmt=DiskFormat.RAW, readonly=True, serial="ccseed"),
        Disk(path=paths.data_disk, target=DATA_TARGET, fmt=DiskFormat.RAW, serial="ccdata"),
    )
