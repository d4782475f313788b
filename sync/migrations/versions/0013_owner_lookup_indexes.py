"""Indexes for finding the incident a record belongs to without being one.

Every record the engine meets that is not linked yet (each record of a backfill, each
webhook of an unknown record) is looked up as a change request, a postmortem review or problem,
and an action item's source (``Tracker.owner_of``): without these indexes each look read the
whole ``action_item`` and ``postmortem`` tables, so it grew with every postmortem ever kept.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    ("action_item", "change_request_id"),
    ("action_item", "source_id"),
    ("postmortem", "jira_id"),
    ("postmortem", "problem_id"),
)


def upgrade() -> None:
    for table, column in INDEXES:
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, column in reversed(INDEXES):
        op.drop_index(f"ix_{table}_{column}", table_name=table)
