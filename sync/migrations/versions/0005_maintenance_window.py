"""Planned changes shown as scheduled maintenance on the status page.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "maintenance_window",
        sa.Column("change_key", sa.String(), nullable=False),
        sa.Column("change_number", sa.String(), nullable=False),
        sa.Column("page_system", sa.String(), nullable=False),
        sa.Column("page_instance", sa.String(), nullable=False),
        sa.Column("page_id", sa.String(), nullable=False),
        sa.Column(
            "fields", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("ended", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("change_key", name=op.f("pk_maintenance_window")),
    )


def downgrade() -> None:
    op.drop_table("maintenance_window")
