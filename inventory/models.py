"""The inventory's tables (SQLAlchemy 2, typed). The database is the source of truth for every package.

Enums are stored as their string values in plain VARCHAR columns (non-native, no CHECK constraint) so
the schema is the same on SQLite and PostgreSQL and a new status needs no type migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, Enum, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from inventory.db import Base
from inventory.enums import (
    ChangeAction,
    Lifecycle,
    NetworkKind,
    ObjectKind,
    ProtectionTier,
    SiteRole,
    SiteStatus,
    VmRole,
)

NAME_LENGTH = 63  # a DNS label: names end up in hostnames and libvirt domain names


def utcnow() -> datetime:
    return datetime.now(UTC)


def enum_column(enum: type[StrEnum]) -> Enum:
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=32,  # room for later values without a migration
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Site(Timestamped, Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    role: Mapped[SiteRole] = mapped_column(enum_column(SiteRole))
    status: Mapped[SiteStatus] = mapped_column(enum_column(SiteStatus), default=SiteStatus.UNKNOWN)

    hosts: Mapped[list[Host]] = relationship(back_populates="site", order_by="Host.name")

    def __repr__(self) -> str:
        return f"Site({self.name!r}, {self.role}, {self.status})"


class Host(Timestamped, Base):
    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_gb: Mapped[int] = mapped_column(Integer)
    # Overcommit ratios as OpenStack's defaults go: guests rarely use all their vCPUs at once, but
    # memory overcommit is kept small because a host that swaps slows every county on it.
    cpu_allocation_ratio: Mapped[float] = mapped_column(Float, default=4.0)
    ram_allocation_ratio: Mapped[float] = mapped_column(Float, default=1.5)

    site: Mapped[Site] = relationship(back_populates="hosts")
    vms: Mapped[list[Vm]] = relationship(back_populates="host", order_by="Vm.name")

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.vcpus} vCPU, {self.memory_mb} MB, {self.disk_gb} GB)"


class SizeTemplate(Timestamped, Base):
    __tablename__ = "size_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    data_disk_mb: Mapped[int] = mapped_column(Integer)

    def __repr__(self) -> str:
        return f"SizeTemplate({self.name!r}, {self.vcpus} vCPU, {self.memory_mb} MB)"


class Network(Timestamped, Base):
    __tablename__ = "networks"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    kind: Mapped[NetworkKind] = mapped_column(enum_column(NetworkKind))
    bridge: Mapped[str | None] = mapped_column(String(15))  # Linux interface names are at most 15 bytes
    vlan: Mapped[int | None] = mapped_column(Integer)

    def __repr__(self) -> str:
        return f"Network({self.name!r}, {self.kind})"


class Image(Timestamped, Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")

    def __repr__(self) -> str:
        return f"Image({self.name!r})"


class Tenant(Timestamped, Base):
    """A county: its VMs, its home site, and the stable address (gateway port) users reach it by."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[Lifecycle] = mapped_column(enum_column(Lifecycle), default=Lifecycle.PLANNED)
    home_site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    # Where the county runs now when that is not its declared home (after a failover); None: at home.
    # Kept apart from the declaration, so a failover edits no YAML and `inventory apply` still works.
    running_site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id"), index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)
    gateway_port: Mapped[int | None] = mapped_column(Integer, unique=True)
    # The application's declared settings (e.g. county_name), handed to the guest on its seed disk.
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Generated once when the tenant is first added; never shown in plans or the change log.
    app_secret: Mapped[str] = mapped_column(String(128))
    # How its database is protected: the tier's interval and retention are in protection_tiers.
    protection: Mapped[ProtectionTier] = mapped_column(
        enum_column(ProtectionTier), default=ProtectionTier.BACKUP, server_default=ProtectionTier.BACKUP.value
    )

    home_site: Mapped[Site] = relationship(foreign_keys=[home_site_id])
    running_site: Mapped[Site | None] = relationship(foreign_keys=[running_site_id])
    network: Mapped[Network] = relationship()
    image: Mapped[Image] = relationship()
    vms: Mapped[list[Vm]] = relationship(back_populates="tenant", order_by="Vm.name")

    @property
    def current_site(self) -> Site:
        """Where the county runs: its home, or the site it was failed over to."""
        return self.running_site or self.home_site

    def __repr__(self) -> str:
        return f"Tenant({self.slug!r}, {self.status})"


class ProtectionTierRow(Timestamped, Base):
    """A protection tier's backup interval and retention (restic --keep-*; NULL: not a rule)."""

    __tablename__ = "protection_tiers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[ProtectionTier] = mapped_column(enum_column(ProtectionTier), unique=True)
    interval_s: Mapped[int] = mapped_column(Integer)
    keep_last: Mapped[int | None] = mapped_column(Integer)
    keep_hourly: Mapped[int | None] = mapped_column(Integer)
    keep_daily: Mapped[int | None] = mapped_column(Integer)
    keep_monthly: Mapped[int | None] = mapped_column(Integer)

    def __repr__(self) -> str:
        return f"ProtectionTierRow({self.name!r}, every {self.interval_s} s)"


class Vm(Timestamped, Base):
    __tablename__ = "vms"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    role: Mapped[VmRole] = mapped_column(enum_column(VmRole))
    # The declared size. vcpus / memory_mb / data_disk_mb below are what the VM actually has: they
    # follow the template when the VM is built and after a resize job, not when the YAML changes.
    size_id: Mapped[int] = mapped_column(ForeignKey("size_templates.id"), index=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    data_disk_mb: Mapped[int] = mapped_column(Integer)
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"), index=True)
    status: Mapped[Lifecycle] = mapped_column(enum_column(Lifecycle), default=Lifecycle.PLANNED)
    uuid: Mapped[str | None] = mapped_column(String(36), unique=True)
    mac: Mapped[str | None] = mapped_column(String(17), unique=True)
    # Host ports on 127.0.0.1 forwarded to the guest's SSH and application ports.
    ssh_port: Mapped[int | None] = mapped_column(Integer, unique=True)
    app_port: Mapped[int | None] = mapped_column(Integer, unique=True)

    tenant: Mapped[Tenant] = relationship(back_populates="vms")
    size: Mapped[SizeTemplate] = relationship()
    host: Mapped[Host | None] = relationship(back_populates="vms")

    @property
    def needs_resize(self) -> bool:
        """True when the declared size differs from what the VM has (a resize job is due)."""
        return (self.vcpus, self.memory_mb) != (self.size.vcpus, self.size.memory_mb)

    def __repr__(self) -> str:
        return f"Vm({self.name!r}, {self.role}, {self.status})"


class ChangeLogEntry(Base):
    """One journaled change to an inventory object (NetBox's ObjectChange): who, when, what, before/after."""

    __tablename__ = "change_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    object_kind: Mapped[ObjectKind] = mapped_column(enum_column(ObjectKind))
    object_name: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    action: Mapped[ChangeAction] = mapped_column(enum_column(ChangeAction))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    note: Mapped[str] = mapped_column(Text, default="")

    def __repr__(self) -> str:
        return f"ChangeLogEntry({self.actor!r} {self.action} {self.object_kind} {self.object_name!r})"
