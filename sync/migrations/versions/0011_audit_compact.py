"""The audit log's ids and repetitive strings compact on SQLite.

Two audit rows are written per edit (the change, then each write that carries it out). On
SQLite (``sync.store.packed``):

- ``incident_id`` and ``remote_id``: a 32-digit lower-case hex id (our incident ids, ServiceNow
  sys_ids) as its 16 bytes, in the row and in ``ix_audit_incident_id`` (other ids as text);
- ``system``, ``instance``, ``action``, ``field``, ``actor``, ``reason``: the strings that
  repeat on every row as their position in the codebook below (1 byte; others as text).

The columns become ``BLOB`` (no affinity: SQLite keeps an integer, a blob or a text as given).
PostgreSQL keeps its text columns: nothing changes there. Written without the app's code, as a
migration must be: the codebook is ``sync.store.packed.CODEBOOK`` as this revision shipped it
(append-only there; a later addition codes its rows in its own migration).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000

CODEBOOK = (
    "itsm-sync", "default", "servicenow", "jira", "statuspage", "update", "create",
    "transition", "comment", "conflict", "park", "replay", "override", "skip",
    "brought in line with the incident", "about to create its record", "postmortem required",
    "postmortem problem record", "title", "description", "severity", "state", "assignee",
    "team", "services", "customer_impact", "public", "public_message", "labels", "started_at",
    "resolved_at", "closed_at", "resolution", "comments", "parent", "postmortem",
    "resolution.code", "resolution.notes", "change_request", "summary", "short_description",
    "status", "priority", "impact", "urgency", "components", "assigned_to", "assignment_group",
    "close_code", "close_notes", "work_notes", "priority.name", "status.name",
    "resolution.name", "assignee.accountId", "business_service", "parent_incident",
    "opened_at", "resolutiondate", "customfield_10012", "impact_override", "gate", "problem",
    "action_item",
)  # fmt: skip
CODES = {value: code for code, value in enumerate(CODEBOOK)}

IDS = ("incident_id", "remote_id")
CODED = ("system", "instance", "action", "field", "actor", "reason")
NULLABLE = ("incident_id", "field")
HEX_ID = re.compile(r"[0-9a-f]{32}")


def _rewrite(convert_id: Callable[[object], object], convert: Callable[[object], object]) -> None:
    """Every audit row's ids and coded strings through the converters, a batch at a time."""
    bind = op.get_bind()
    columns = (*IDS, *CODED)
    last = 0
    while True:
        rows = bind.execute(
            sa.text(
                f"SELECT id, {', '.join(columns)} FROM audit WHERE id > :last ORDER BY id LIMIT :n"
            ),
            {"last": last, "n": BATCH},
        ).all()
        if not rows:
            return
        bind.execute(
            sa.text(f"UPDATE audit SET {', '.join(f'{c} = :{c}' for c in columns)} WHERE id = :id"),
            [
                {"id": row[0]}
                | {c: convert_id(v) for c, v in zip(IDS, row[1:3], strict=True)}
                | {c: convert(v) for c, v in zip(CODED, row[3:], strict=True)}
                for row in rows
            ],
        )
        last = rows[-1][0]


def _was_text(value: object) -> object:
    """What the upgrade's table copy made a BLOB (``CAST(x AS BLOB)``): text again."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _packed_id(value: object) -> object:
    value = _was_text(value)
    return bytes.fromhex(value) if isinstance(value, str) and HEX_ID.fullmatch(value) else value


def _coded(value: object) -> object:
    value = _was_text(value)
    return CODES.get(value, value) if isinstance(value, str) else value


def _text_id(value: object) -> object:
    return value.hex() if isinstance(value, bytes) else value


def _decoded(value: object) -> object:
    return CODEBOOK[value] if isinstance(value, int) else value


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("audit") as batch:  # first: a TEXT column would make 3 into '3'
        for column in (*IDS, *CODED):
            batch.alter_column(
                column,
                existing_type=sa.Text() if column == "reason" else sa.String(),
                type_=sa.LargeBinary(),
                existing_nullable=column in NULLABLE,
            )
    _rewrite(_packed_id, _coded)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _rewrite(_text_id, _decoded)
    with op.batch_alter_table("audit") as batch:
        for column in (*IDS, *CODED):
            batch.alter_column(
                column,
                existing_type=sa.LargeBinary(),
                type_=sa.Text() if column == "reason" else sa.String(),
                existing_nullable=column in NULLABLE,
            )
