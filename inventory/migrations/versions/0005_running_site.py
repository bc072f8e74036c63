"""Where a county runs apart from its declared home (tenants.running_site_id), set by a failover.

Revision ID: 0005_running_site
Revises: 0004_workers
Create Date: 2026-12-04 14:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_running_site"
down_revision: str | None = "0004_workers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("running_site_id", sa.Integer(), nullable=True))
        batch.create_index("ix_tenants_running_site_id", ["running_site_id"])
        batch.create_foreign_key("fk_tenants_running_site_id_sites", "sites", ["running_site_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_constraint("fk_tenants_running_site_id_sites", type_="foreignkey")
        batch.drop_index("ix_tenants_running_site_id")
        batch.drop_column("running_site_id")
