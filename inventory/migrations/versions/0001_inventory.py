"""Inventory tables: sites, hosts, size templates, networks, images, tenants, VMs and the change log.

Revision ID: 0001_inventory
Revises: (none)
Create Date: 2026-11-28 01:11:20.187770
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_inventory"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "change_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column(
            "object_kind",
            sa.Enum(
                "site",
                "host",
                "size_template",
                "network",
                "image",
                "tenant",
                "vm",
                name="objectkind",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("object_name", sa.String(length=63), nullable=False),
        sa.Column(
            "action",
            sa.Enum("add", "change", "remove", name="changeaction", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_log")),
    )
    with op.batch_alter_table("change_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_change_log_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_change_log_object_name"), ["object_name"], unique=False)

    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("name", name=op.f("uq_images_name")),
    )
    op.create_table(
        "networks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("user", "bridge", name="networkkind", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("bridge", sa.String(length=15), nullable=True),
        sa.Column("vlan", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_networks")),
        sa.UniqueConstraint("name", name=op.f("uq_networks_name")),
    )
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column(
            "role",
            sa.Enum("primary", "secondary", name="siterole", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum("up", "down", "unknown", name="sitestatus", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
        sa.UniqueConstraint("name", name=op.f("uq_sites_name")),
    )
    op.create_table(
        "size_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("data_disk_mb", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_size_templates")),
        sa.UniqueConstraint("name", name=op.f("uq_size_templates_name")),
    )
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("disk_gb", sa.Integer(), nullable=False),
        sa.Column("cpu_allocation_ratio", sa.Float(), nullable=False),
        sa.Column("ram_allocation_ratio", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name=op.f("fk_hosts_site_id_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hosts")),
        sa.UniqueConstraint("name", name=op.f("uq_hosts_name")),
    )
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hosts_site_id"), ["site_id"], unique=False)

    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "planned",
                "provisioning",
                "active",
                "failed",
                "retiring",
                "retired",
                name="lifecycle",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("home_site_id", sa.Integer(), nullable=False),
        sa.Column("network_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("gateway_port", sa.Integer(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("app_secret", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["home_site_id"], ["sites.id"], name=op.f("fk_tenants_home_site_id_sites")),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name=op.f("fk_tenants_image_id_images")),
        sa.ForeignKeyConstraint(["network_id"], ["networks.id"], name=op.f("fk_tenants_network_id_networks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("gateway_port", name=op.f("uq_tenants_gateway_port")),
        sa.UniqueConstraint("slug", name=op.f("uq_tenants_slug")),
    )
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tenants_home_site_id"), ["home_site_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tenants_image_id"), ["image_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tenants_network_id"), ["network_id"], unique=False)

    op.create_table(
        "vms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column(
            "role",
            sa.Enum("accounting", "finance", "database", name="vmrole", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("size_id", sa.Integer(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("data_disk_mb", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "planned",
                "provisioning",
                "active",
                "failed",
                "retiring",
                "retired",
                name="lifecycle",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("uuid", sa.String(length=36), nullable=True),
        sa.Column("mac", sa.String(length=17), nullable=True),
        sa.Column("ssh_port", sa.Integer(), nullable=True),
        sa.Column("app_port", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name=op.f("fk_vms_host_id_hosts")),
        sa.ForeignKeyConstraint(
            ["size_id"], ["size_templates.id"], name=op.f("fk_vms_size_id_size_templates")
        ),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_vms_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vms")),
        sa.UniqueConstraint("app_port", name=op.f("uq_vms_app_port")),
        sa.UniqueConstraint("mac", name=op.f("uq_vms_mac")),
        sa.UniqueConstraint("name", name=op.f("uq_vms_name")),
        sa.UniqueConstraint("ssh_port", name=op.f("uq_vms_ssh_port")),
        sa.UniqueConstraint("uuid", name=op.f("uq_vms_uuid")),
    )
    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vms_host_id"), ["host_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_vms_size_id"), ["size_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_vms_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("vms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vms_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_vms_size_id"))
        batch_op.drop_index(batch_op.f("ix_vms_host_id"))

    op.drop_table("vms")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tenants_network_id"))
        batch_op.drop_index(batch_op.f("ix_tenants_image_id"))
        batch_op.drop_index(batch_op.f("ix_tenants_home_site_id"))

    op.drop_table("tenants")
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hosts_site_id"))

    op.drop_table("hosts")
    op.drop_table("size_templates")
    op.drop_table("sites")
    op.drop_table("networks")
    op.drop_table("images")
    with op.batch_alter_table("change_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_change_log_object_name"))
        batch_op.drop_index(batch_op.f("ix_change_log_at"))

    op.drop_table("change_log")
