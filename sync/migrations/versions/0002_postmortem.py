"""The postmortem tracker's tables: postmortems, action items, gate events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _str(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "postmortem",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("incident_id"),
        _str("jira_key"),
        _str("jira_id"),
        _time("created_at"),
        _time("completed_at", nullable=True),
        _str("completed_by"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_postmortem")),
    )
    op.create_index(op.f("ix_postmortem_incident_id"), "postmortem", ["incident_id"], unique=True)
    op.create_table(
        "action_item",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("key"),
        _str("incident_id"),
        _str("title"),
        sa.Column("description", sa.Text(), nullable=False),
        _str("owner"),
        sa.Column("due_date", sa.Date(), nullable=True),
        _str("source"),
        _str("source_id"),
        _str("source_url"),
        _str("change_request_id"),
        _str("change_request_number"),
        _str("change_request_state"),
        _str("change_request_close_code"),
        sa.Column("blocked", sa.Text(), nullable=False),
        _str("synced_owner"),
        sa.Column("synced_due", sa.Date(), nullable=True),
        _time("reminded_at", nullable=True),
        _time("created_at"),
        _time("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_action_item")),
        sa.UniqueConstraint("key", name="uq_action_item_key"),
    )
    op.create_index(op.f("ix_action_item_incident_id"), "action_item", ["incident_id"])
    op.create_table(
        "gate_event",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("incident_id"),
        _str("kind"),
        sa.Column("reason", sa.Text(), nullable=False),
        _str("actor"),
        _time("at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_event")),
    )
    op.create_index(op.f("ix_gate_event_incident_id"), "gate_event", ["incident_id"])


def downgrade() -> None:
    for table in ("gate_event", "action_item", "postmortem"):
        op.drop_table(table)
