"""Wiring, done once: settings -> database engine -> the Platform the lower packages act through,
and the job builders so any process can run or resume any job. Also the machine's idempotent
set-up (SSH key, both site daemons, the golden image, a prebooted template per site)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from sqlalchemy import Engine

from backup import restports
from controlplane import jobs
from controlplane.settings import Settings, load
from inventory.db import make_engine, migrate, session_scope
from inventory.enums import SiteRole
from inventory.jobs import JobKind
from inventory.queries import list_sites, list_vms
from provisioning import images, sites, steps, templates
from provisioning.platform import (
    Platform,
    check_port_range,
    ensure_ssh_key,
    ephemeral_ports,
    host_domain_type,
)
from provisioning.steps import ProvisioningError

Log = Callable[[str], None]


@cache
def settings() -> Settings:
    return load()


@cache
def engine() -> Engine:
    url = settings().database_url
    migrate(url)
    return make_engine(url)


@cache
def platform() -> Platform:
    current = settings()
    return Platform(engine=engine(), state_dir=current.state_dir, cache_dir=current.cache_dir,
                    domain_type=host_domain_type(), bringup_places=current.bringup_places)


def register_job_builders() -> None:
    """Every job kind the platform runs, rebuilt from its recorded args with the wired Platform."""
    jobs.register_builder(JobKind.PROVISION, steps.provision_steps)
    jobs.register_builder(JobKind.RESIZE, steps.resize_steps)
    jobs.register_builder(JobKind.RETIRE, steps.retire_steps)
    jobs.register_builder(JobKind.CONFIGURE, steps.configure_steps)
    from backup import steps as backup_steps  # only processes that run jobs pay for its imports

    for kind, build in backup_steps.builders().items():
        jobs.register_builder(kind, build)
    from dr import failover  # failover, DR test, failback

    for kind, build in failover.builders().items():
        jobs.register_builder(kind, build)
    jobs.set_default_context(platform())


# Sites every machine runs; the inventory may declare them too (its names must match).
DEFAULT_SITES = ("primary", "secondary")


def site_names() -> list[str]:
    with session_scope(engine()) as session:
        declared = [site.name for site in list_sites(session)]
    return declared or list(DEFAULT_SITES)


def template_sizes() -> list[int]:
    """The memory sizes county VMs are declared with: one prebooted template each."""
    with session_scope(engine()) as session:
        sizes = {vm.memory_mb for vm in list_vms(session)}
    return sorted(sizes) or [templates.DEFAULT_MEMORY_MIB]


def check_port_ranges() -> None:
    current, ephemeral = settings(), ephemeral_ports()
    try:
        check_port_range(current.guest_port_first, current.guest_port_last, "guest ports", ephemeral)
        check_port_range(current.gateway_port_first, current.gateway_port_last, "gateway ports", ephemeral)
        check_port_range(current.replica_port, current.replica_port, "replica port", ephemeral)
    except ValueError as error:
        raise ProvisioningError(f"settings: {error} (COUNTYCLOUD_*_PORT*)") from None
    check_backup_ports(declared_site_places())


def declared_site_places() -> list[restports.SitePlace]:
    """The inventory's sites (name, role), or this machine's default pair when none is declared."""
    with session_scope(engine()) as session:
        declared = [restports.SitePlace(site.name, site.role) for site in list_sites(session)]
    return declared or [restports.SitePlace(name, SiteRole(name)) for name in DEFAULT_SITES]


def backup_port_problems(places: list[restports.SitePlace], ephemeral: range | None = None) -> list[str]:
    """What is wrong with the sites' backup REST ports under the settings (empty: nothing)."""
    current = settings()
    ports = restports.rest_ports(places, current.backup_rest_port, current.backup_rest_ports)
    reserved = [restports.Reserved(current.guest_port_first, current.guest_port_last, "guest ports"),
                restports.Reserved(current.gateway_port_first, current.gateway_port_last, "gateway ports"),
                restports.Reserved(current.replica_port, current.replica_port, "replica port"),
                restports.Reserved(current.service_port, current.service_port, "service port")]
    return restports.problems(ports, declared=current.backup_rest_ports.keys(),
                              sites={place.name for place in places}, reserved=reserved,
                              ephemeral=ephemeral if ephemeral is not None else ephemeral_ports())


def check_backup_ports(places: list[restports.SitePlace]) -> None:
    """Refuse (before anything is started) sites whose REST servers could not all listen at once."""
    found = backup_port_problems(places)
    if found:
        raise ProvisioningError("settings: " + "; ".join(found)
                                + " (COUNTYCLOUD_BACKUP_REST_PORT, COUNTYCLOUD_BACKUP_REST_PORTS)")


def setup(log: Log = print, *, with_templates: bool = True) -> images.GoldenImage:
    """Make this machine ready (idempotent: a second run only checks)."""
    check_port_ranges()
    current = platform()
    ensure_ssh_key(current.ssh_key)
    for name in site_names():
        sites.start(current.site(name))
        log(f"site {name}: up ({current.site(name).uri})")
    image = images.ensure(current.cache_dir, log=log)
    log(f"golden image {image.key}: ready")
    for name in site_names():
        site = current.site(name)
        site_image = images.at_site(image, site.images)
        with current.hypervisor(name) as hv:
            if with_templates:
                for memory_mib in template_sizes():
                    templates.build(hv, site, site_image, current.domain_type, memory_mib, log=log)
            removed = templates.remove_stale(hv, site, image.key)
        removed += images.remove_unused_at_site(site.images, image.key, templates.backing_files(site))
        log(f"site {name}: golden image {image.key} present"
            + (", templates ready" if with_templates else "")
            + (f" (removed stale: {', '.join(removed)})" if removed else ""))
    return image
