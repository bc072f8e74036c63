"""The fence ledger in the platform database (provisioning.fencing): one row per VM copy fenced at a
failed site, so a control plane started elsewhere from the database's offsite copy knows them.

Revision ID: 0009_fencing
Revises: 0008_backup_tiers
Create Date: 2026-12-04 21:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_fencing"
down_revision: str | None = "0008_backup_tiers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fenced_copies",
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("vm", sa.String(length=63), nullable=False),
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("how", sa.Enum("destroyed", "marked", name="fencehow", native_enum=False,
                                 create_constraint=False, length=32), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("job", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("site", "vm", name=op.f("pk_fenced_copies")),
    )


def downgrade() -> None:
    op.drop_table("fenced_copies")
