"""The engine's tables: incidents, links, shadows, observations, the dirty queue and the rest.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _str(name: str, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=nullable)


def _text(name: str, nullable: bool = False) -> sa.Column[str]:
    return sa.Column(name, sa.Text(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "incident",
        _str("id"),
        sa.Column("data", _json(), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident")),
    )
    op.create_table(
        "link",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("incident_id"),
        _str("system"),
        _str("instance"),
        _str("object_type"),
        _str("remote_id"),
        _str("remote_key"),
        _str("url"),
        sa.Column("created_at", _time(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incident.id"],
            name=op.f("fk_link_incident_id_incident"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link")),
        sa.UniqueConstraint(
            "incident_id", "system", "instance", "object_type", name="uq_link_target"
        ),
        sa.UniqueConstraint(
            "system", "instance", "object_type", "remote_id", name="uq_link_remote"
        ),
    )
    op.create_index(op.f("ix_link_incident_id"), "link", ["incident_id"])
    op.create_table(
        "shadow",
        sa.Column("link_id", sa.Integer(), nullable=False),
        sa.Column("fields", _json(), nullable=False),
        sa.Column("version", _json(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_id"], ["link.id"], name=op.f("fk_shadow_link_id_link"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("link_id", name=op.f("pk_shadow")),
    )
    op.create_table(
        "observation",
        _str("system"),
        _str("instance"),
        _str("object_type"),
        _str("remote_id"),
        sa.Column("version", _json(), nullable=False),
        sa.Column("fields", _json(), nullable=False),
        _str("source"),
        sa.Column("observed_at", _time(), nullable=False),
        sa.Column("remote_updated_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint(
            "system", "instance", "object_type", "remote_id", name=op.f("pk_observation")
        ),
    )
    op.create_table(
        "dirty",
        _str("key"),
        sa.Column("due_at", _time(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        _str("claimed_by", nullable=True),
        sa.Column("claimed_until", _time(), nullable=True),
        sa.Column("first_marked_at", _time(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _text("last_error"),
        _text("reason"),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_dirty")),
    )
    op.create_index(op.f("ix_dirty_due_at"), "dirty", ["due_at"])
    op.create_table(
        "watermark",
        _str("system"),
        _str("instance"),
        _str("object_type"),
        sa.Column("value", _time(), nullable=True),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("system", "instance", "object_type", name=op.f("pk_watermark")),
    )
    op.create_table(
        "webhook_delivery",
        _str("system"),
        _str("delivery_id"),
        sa.Column("received_at", _time(), nullable=False),
        _str("status"),
        _text("reason"),
        _text("body", nullable=True),
        sa.Column("headers", _json(), nullable=False),
        sa.PrimaryKeyConstraint("system", "delivery_id", name=op.f("pk_webhook_delivery")),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", _time(), nullable=False),
        _str("incident_id", nullable=True),
        _str("system"),
        _str("instance"),
        _str("remote_id"),
        _str("action"),
        _str("field", nullable=True),
        sa.Column("before", _json(), nullable=True),
        sa.Column("after", _json(), nullable=True),
        _str("actor"),
        _text("reason"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    op.create_index(op.f("ix_audit_incident_id"), "audit", ["incident_id"])
    op.create_table(
        "parked",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("incident_id"),
        _str("target"),
        _text("error"),
        _text("remote_message"),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("parked_at", _time(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("resolved_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parked")),
    )
    op.create_index(op.f("ix_parked_incident_id"), "parked", ["incident_id"])
    op.create_index(
        "uq_parked_open",
        "parked",
        ["incident_id", "target"],
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
        sqlite_where=sa.text("resolved_at IS NULL"),
    )
    op.create_table(
        "target_backoff",
        _str("incident_id"),
        _str("target"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _time(), nullable=False),
        _text("last_error"),
        sa.PrimaryKeyConstraint("incident_id", "target", name=op.f("pk_target_backoff")),
    )
    op.create_table(
        "comment_link",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("incident_id"),
        _str("canonical_id"),
        _str("system"),
        _str("instance"),
        _str("remote_id"),
        _str("direction"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comment_link")),
        sa.UniqueConstraint("system", "instance", "remote_id", name="uq_comment_link_remote"),
    )
    op.create_index(op.f("ix_comment_link_incident_id"), "comment_link", ["incident_id"])
    op.create_table(
        "mapping_version",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("system"),
        _str("instance"),
        _str("digest"),
        _text("source"),
        _text("diff"),
        sa.Column("accepted_at", _time(), nullable=False),
        _str("accepted_by"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mapping_version")),
    )


def downgrade() -> None:
    for table in (
        "mapping_version",
        "comment_link",
        "target_backoff",
        "parked",
        "audit",
        "webhook_delivery",
        "watermark",
        "dirty",
        "observation",
        "shadow",
        "link",
        "incident",
    ):
        op.drop_table(table)  # their indexes go with them
