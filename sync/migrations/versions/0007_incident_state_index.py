"""An index on the incident's state (inside its JSON), for finding the open incidents.

The console's overview and the overdue-update count look for the open incidents; without an
index that reads every incident's JSON (70 ms for 10,000 on SQLite), with it the open ones only.
The expression must be written exactly as :func:`sync.store.incidents.state_of` queries it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXPRESSIONS = {
    "sqlite": "json_extract(data, '$.state')",
    "postgresql": "(data ->> 'state')",
}


def upgrade() -> None:
    expression = EXPRESSIONS[op.get_bind().dialect.name]
    op.execute(f"CREATE INDEX ix_incident_state ON incident ({expression})")


def downgrade() -> None:
    op.execute("DROP INDEX ix_incident_state")
