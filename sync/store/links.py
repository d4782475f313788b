"""Links between a canonical incident and its remote records, and between comments."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam
from sqlmodel import Session, col, select, update

from sync.store.db import CommentDirection, _check, dialect_insert, prepared, utcnow
from sync.store.tables import CommentLink, Link


class LinkConflict(Exception):
    """The remote record is linked to another incident, or the incident already has a record
    of that type on that instance. ``existing`` is the link that is in the way."""

    def __init__(self, existing: Link) -> None:
        super().__init__(
            f"{existing.system}:{existing.instance}/{existing.object_type}/{existing.remote_id}"
            f" is already linked to incident {existing.incident_id} (link {existing.id})"
        )
        self.existing = existing


def add_link(
    session: Session,
    *,
    incident_id: str,
    system: str,
    instance: str,
    object_type: str,
    remote_id: str,
    remote_key: str = "",
    url: str = "",
) -> Link:
    """Link a remote record to an incident.

    Adding the very same link again returns it (a re-run after a crash is harmless); any other
    clash raises :class:`LinkConflict`. Decided by the unique constraints, so two workers racing
    to link can't both win; the loser's transaction stays usable (ON CONFLICT DO NOTHING).
    """
    for _ in range(3):  # the row in the way may vanish between our insert and our look-up
        values: dict[str, Any] = {
            "incident_id": incident_id,
            "system": system,
            "instance": instance,
            "object_type": object_type,
            "remote_id": remote_id,
            "remote_key": remote_key,
            "url": url,
            "created_at": utcnow(),
        }
        inserted = session.exec(
            dialect_insert(session, Link)
            .values(**values)
            .on_conflict_do_nothing()
            .returning(col(Link.id))
        ).scalar_one_or_none()
        if inserted is not None:
            # The row as inserted (no read back: every column is one we gave, but the id).
            return Link(id=inserted, **values)
        existing = find_link(
            session, system=system, instance=instance, object_type=object_type, remote_id=remote_id
        )
        if existing is None:
            existing = session.exec(
                select(Link)
                .where(
                    col(Link.incident_id) == incident_id,
                    col(Link.system) == system,
                    col(Link.instance) == instance,
                    col(Link.object_type) == object_type,
                )
                .execution_options(populate_existing=True)
            ).one_or_none()
        if existing is None:
            continue
        if existing.incident_id == incident_id and existing.remote_id == remote_id:
            return existing
        raise LinkConflict(existing)
    raise RuntimeError("add_link: conflicting link kept appearing and disappearing")


def find_link(
    session: Session, *, system: str, instance: str, object_type: str, remote_id: str
) -> Link | None:
    """The link of a remote record, if it is linked."""
    return session.exec(
        select(Link)
        .where(
            col(Link.system) == system,
            col(Link.instance) == instance,
            col(Link.object_type) == object_type,
            col(Link.remote_id) == remote_id,
        )
        .execution_options(populate_existing=True)
    ).one_or_none()


def linked_incident(
    session: Session, *, system: str, instance: str, object_type: str, remote_id: str
) -> str | None:
    """The incident a remote record is linked to, if any (:func:`find_link`, the id only: the
    webhook path asks this for every delivery)."""
    c = Link.__table__.c  # type: ignore[attr-defined]
    query = prepared(
        session,
        "link.incident",
        lambda d: select(c.incident_id).where(
            (c.system == bindparam("k_system"))
            & (c.instance == bindparam("k_instance"))
            & (c.object_type == bindparam("k_object_type"))
            & (c.remote_id == bindparam("k_remote_id"))
        ),
    )
    found = (
        session.connection()
        .execute(
            query,
            {
                "k_system": system,
                "k_instance": instance,
                "k_object_type": object_type,
                "k_remote_id": remote_id,
            },
        )
        .scalar_one_or_none()
    )
    return str(found) if found is not None else None


def links_of(session: Session, incident_id: str) -> list[Link]:
    """All records linked to an incident, oldest link first."""
    return list(
        session.exec(
            select(Link)
            .where(col(Link.incident_id) == incident_id)
            .order_by(col(Link.id))
            .execution_options(populate_existing=True)
        )
    )


def link_comment(
    session: Session,
    *,
    incident_id: str,
    canonical_id: str,
    system: str,
    instance: str,
    remote_id: str,
    direction: CommentDirection,
) -> bool:
    """Record that a remote comment is synced; False if it already was (sync it only once)."""
    _check(direction, CommentDirection, "direction")
    inserted = session.exec(
        dialect_insert(session, CommentLink)
        .values(
            incident_id=incident_id,
            canonical_id=canonical_id,
            system=system,
            instance=instance,
            remote_id=remote_id,
            direction=direction,
        )
        .on_conflict_do_nothing()
        .returning(col(CommentLink.id))
    ).scalar_one_or_none()
    return inserted is not None


def find_comment_link(
    session: Session, *, system: str, instance: str, remote_id: str
) -> CommentLink | None:
    return session.exec(
        select(CommentLink)
        .where(
            col(CommentLink.system) == system,
            col(CommentLink.instance) == instance,
            col(CommentLink.remote_id) == remote_id,
        )
        .execution_options(populate_existing=True)
    ).one_or_none()


PENDING_COMMENT = "pending:"


def pending_comment_id(canonical_id: str) -> str:
    """The remote id a comment link holds while its comment is being posted (the intent)."""
    return f"{PENDING_COMMENT}{canonical_id}"


def confirm_comment(
    session: Session, *, system: str, instance: str, canonical_id: str, remote_id: str
) -> None:
    """The comment an intent row stood for is posted: the row gets its real remote id."""
    session.exec(
        update(CommentLink)
        .where(
            col(CommentLink.system) == system,
            col(CommentLink.instance) == instance,
            col(CommentLink.remote_id) == pending_comment_id(canonical_id),
        )
        .values(remote_id=remote_id)
        .execution_options(synchronize_session=False)
    )


def comment_links(session: Session, incident_id: str) -> list[CommentLink]:
    return list(
        session.exec(
            select(CommentLink)
            .where(col(CommentLink.incident_id) == incident_id)
            .order_by(col(CommentLink.id))
            .execution_options(populate_existing=True)
        )
    )
