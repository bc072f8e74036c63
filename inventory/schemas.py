"""The inventory declaration (the YAML file) as strict pydantic models.

Strict on purpose: an unknown key is a typo, "16" is not a number of vCPUs, and a missing key is an
error, never a silent default for something that matters. Cross-references between sections
(a tenant's site, a VM's size...) are checked by `inventory.checks`, so every problem is reported
with its line, not just the first one pydantic meets.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, field_validator, model_validator

from inventory.enums import NetworkKind, ProtectionTier, SiteRole, VmRole

# Names become hostnames, libvirt domain names and file names: a lowercase DNS label.
NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
Name = Annotated[str, StringConstraints(strict=True, pattern=NAME_PATTERN)]
Text = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]
Count = Annotated[int, Strict(), Field(gt=0)]
Size = Annotated[int, Strict(), Field(ge=0)]
Ratio = Annotated[float, Strict(), Field(gt=0, le=64)]
SETTING_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
PLATFORM_SETTINGS = frozenset({"county_id", "secret", "database_url", "host", "port", "settings_file"})
SettingValue = Annotated[str, Strict()] | Annotated[bool, Strict()] | Annotated[int, Strict()] | Annotated[
    float, Strict()
]


class Declared(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostDecl(Declared):
    name: Name
    vcpus: Count
    memory_mb: Count
    disk_gb: Count
    cpu_allocation_ratio: Ratio = 4.0
    ram_allocation_ratio: Ratio = 1.5


class SiteDecl(Declared):
    name: Name
    role: SiteRole
    hosts: list[HostDecl] = []


class SizeDecl(Declared):
    name: Name
    vcpus: Count
    memory_mb: Count
    data_disk_mb: Size


class NetworkDecl(Declared):
    name: Name
    kind: NetworkKind
    # The host bridge (production); at most 15 bytes, the Linux interface name limit.
    bridge: Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9_.-]{1,15}$")] | None = None
    vlan: Annotated[int, Strict(), Field(ge=1, le=4094)] | None = None

    @model_validator(mode="after")
    def _bridge_matches_kind(self) -> Self:
        if self.kind is NetworkKind.BRIDGE and self.bridge is None:
            raise ValueError("a bridge network needs 'bridge: <interface name>'")
        if self.kind is NetworkKind.USER and (self.bridge is not None or self.vlan is not None):
            raise ValueError("a user-mode network takes no 'bridge' or 'vlan'; use kind: bridge for those")
        return self


class ImageDecl(Declared):
    name: Name
    description: Annotated[str, Strict()] = ""


class VmDecl(Declared):
    """`count` VMs of one role and size; they are named <tenant>-<role>-<n>, numbered per role."""

    role: VmRole
    size: Name
    count: Count = 1


class RetentionDecl(Declared):
    """restic's --keep-* counts for a tier's snapshots; a count left out is not a rule."""

    keep_last: Count | None = None
    keep_hourly: Count | None = None
    keep_daily: Count | None = None
    keep_monthly: Count | None = None

    @model_validator(mode="after")
    def _keeps_something(self) -> Self:
        if self.counts() == (None, None, None, None):
            # restic refuses `forget` without a policy, and keeping nothing is never meant.
            raise ValueError("a retention keeps something: give at least one of keep_last, keep_hourly, "
                             "keep_daily, keep_monthly (each at least 1)")
        return self

    def counts(self) -> tuple[int | None, int | None, int | None, int | None]:
        return (self.keep_last, self.keep_hourly, self.keep_daily, self.keep_monthly)


# The backup schedule starts each county's round within a 5 s tick of its place (backup.rounds), and
# a round takes seconds: a shorter interval would only queue rounds behind each other.
MIN_INTERVAL_S = 10
MAX_INTERVAL_S = 86400


class ProtectionTierDecl(Declared):
    """A protection tier's backup interval and its snapshots' retention."""

    name: ProtectionTier
    interval_s: Annotated[int, Strict(), Field(ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S)]
    retention: RetentionDecl


# A round a minute: the last hour at full resolution, then hourly for two days, daily for a month,
# monthly for a year (a county's fiscal year and its audit). The replicated tier keeps the same
# snapshots: between them its stream, not more snapshots, is what lowers its RPO.
_STANDARD_RETENTION = RetentionDecl(keep_last=60, keep_hourly=48, keep_daily=31, keep_monthly=12)
DEFAULT_TIERS: dict[ProtectionTier, ProtectionTierDecl] = {
    tier: ProtectionTierDecl(name=tier, interval_s=60, retention=_STANDARD_RETENTION)
    for tier in ProtectionTier
}


class TenantDecl(Declared):
    slug: Name
    name: Text
    site: Name
    network: Name
    image: Name
    protection: ProtectionTier = ProtectionTier.BACKUP
    settings: dict[Annotated[str, Strict()], SettingValue] = {}
    vms: Annotated[list[VmDecl], Field(min_length=1)]

    @field_validator("settings")
    @classmethod
    def _setting_names(cls, settings: dict[str, Any]) -> dict[str, Any]:
        # Settings become the app's environment (TENANT_APP_<NAME>): plain names only, and never the
        # keys the platform itself sets for the app (its identity, secret, database and listener).
        for name in settings:
            if not SETTING_NAME.fullmatch(name):
                raise ValueError(
                    f"setting name {name!r}: use lower-case letters, digits and _ (e.g. county_name)")
            if name in PLATFORM_SETTINGS:
                raise ValueError(f"setting {name!r} is set by the platform and cannot be declared")
        return settings

    @model_validator(mode="after")
    def _county_name_setting(self) -> Self:
        # The app shows the county's name; unless the file says otherwise, it is the tenant's name.
        if "county_name" not in self.settings:
            object.__setattr__(self, "settings", {"county_name": self.name, **self.settings})
        return self

    def vm_names(self) -> list[tuple[str, VmDecl]]:
        """Each declared VM's name with its declaration, in file order."""
        numbers: dict[VmRole, int] = {}
        named = []
        for vm in self.vms:
            for _ in range(vm.count):
                numbers[vm.role] = numbers.get(vm.role, 0) + 1
                named.append((f"{self.slug}-{vm.role}-{numbers[vm.role]}", vm))
        return named


class Declaration(Declared):
    """A whole inventory: what is not declared here is removed by `apply`."""

    sites: list[SiteDecl] = []
    size_templates: list[SizeDecl] = []
    networks: list[NetworkDecl] = []
    images: list[ImageDecl] = []
    # Optional: a tier left out has its defaults (DEFAULT_TIERS).
    protection_tiers: list[ProtectionTierDecl] = []
    tenants: list[TenantDecl] = []

    def tiers(self) -> dict[ProtectionTier, ProtectionTierDecl]:
        """Every tier's settings: as declared, or the defaults."""
        return {**DEFAULT_TIERS, **{tier.name: tier for tier in self.protection_tiers}}
