"""Postmortem follow-through: idempotent action items, their life (done, withdrawn, re-opened),
revocable overrides given at a severity, and the optional problem record.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _str(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=False, server_default="")


def _text(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=False, server_default="")


def _time(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade() -> None:
    with op.batch_alter_table("action_item") as batch:
        batch.add_column(_str("idem_key"))
        batch.add_column(_str("status"))
        batch.add_column(_text("status_reason"))
        batch.add_column(_str("status_by"))
        batch.add_column(_time("status_at"))
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(_str("synced_title"))
    op.execute("UPDATE action_item SET idem_key = key, status = 'open'")
    op.execute("UPDATE action_item SET synced_title = title WHERE change_request_id <> ''")
    with op.batch_alter_table("action_item") as batch:
        batch.create_unique_constraint("uq_action_item_idem", ["incident_id", "idem_key"])
    with op.batch_alter_table("gate_event") as batch:
        batch.add_column(_str("severity"))
        batch.add_column(_time("revoked_at"))
        batch.add_column(_str("revoked_by"))
        batch.add_column(_text("revoke_reason"))
    with op.batch_alter_table("postmortem") as batch:
        batch.add_column(_str("problem_id"))
        batch.add_column(_str("problem_number"))


def downgrade() -> None:
    with op.batch_alter_table("postmortem") as batch:
        batch.drop_column("problem_number")
        batch.drop_column("problem_id")
    with op.batch_alter_table("gate_event") as batch:
        for name in ("revoke_reason", "revoked_by", "revoked_at", "severity"):
            batch.drop_column(name)
    with op.batch_alter_table("action_item") as batch:
        batch.drop_constraint("uq_action_item_idem", type_="unique")
        for name in (
            "synced_title", "attempt", "status_at", "status_by", "status_reason", "status",
            "idem_key",
        ):  # fmt: skip
            batch.drop_column(name)
