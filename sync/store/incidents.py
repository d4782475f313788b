"""Canonical incidents and the shadows of their linked records.

Writes are Core statements (conditional updates) so that concurrent workers are decided by
the database, not by whoever read first."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, bindparam, event
from sqlalchemy import select as sa_select  # Core: takes any columns (sqlmodel's is typed)
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select, update

from sync.store.db import _fresh, insert_for, prepared, utcnow
from sync.store.packed import incident_columns
from sync.store.tables import (
    CommentLink,
    IncidentRow,
    Link,
    Observation,
    Parked,
    Shadow,
    TargetBackoff,
)


class StaleIncident(Exception):
    """The incident changed in the database since this row was read; re-read and redo."""


def state_of(session: Session) -> ColumnElement[Any]:
    """The incident's canonical state: its column (indexed, ``ix_incident_state``), which every
    write keeps equal to ``data["state"]`` (migration 0012; the data is packed on SQLite)."""
    return col(IncidentRow.state)  # type: ignore[return-value]  # (a Column is one)


@event.listens_for(IncidentRow, "before_insert")
@event.listens_for(IncidentRow, "before_update")
def _columns_in_step(mapper: Any, connection: Any, row: IncidentRow) -> None:
    """An incident written through the ORM (``row.data = ...``) keeps its columns in step too
    (Core writes pass :func:`incident_columns` themselves)."""
    for key, value in incident_columns(row.data).items():
        if getattr(row, key) != value:
            setattr(row, key, value)


def create_incident(
    session: Session, data: Mapping[str, Any], *, incident_id: str | None = None
) -> IncidentRow:
    """Store a new canonical incident (JSON-ready dict); the id is a new uuid4 hex unless given."""
    now = utcnow()
    columns = incident_columns(data)
    row = IncidentRow(
        id=incident_id or uuid.uuid4().hex, data=dict(data), state=columns["state"],
        parent=columns["parent"], created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row


def get_incident(session: Session, incident_id: str) -> IncidentRow | None:
    return _fresh(session, IncidentRow, incident_id)


def find_incident(session: Session, ident: str) -> IncidentRow | None:
    """An incident by canonical id, or by the key of any linked record (INC0010001, OPS-12)."""
    row = get_incident(session, ident)
    if row is None:
        link = session.exec(select(Link).where(col(Link.remote_key) == ident)).first()
        if link is not None:
            row = get_incident(session, link.incident_id)
    return row


def save_incident(session: Session, row: IncidentRow, data: Mapping[str, Any]) -> IncidentRow:
    """Replace the incident's data and bump its version.

    Optimistic: raises :class:`StaleIncident` when someone saved it since ``row`` was read
    (its version no longer matches), instead of silently losing their change.
    """
    new_data = dict(data)
    now = replace_incident_data(session, row.id, row.version, new_data)
    set_committed_value(row, "data", new_data)
    set_committed_value(row, "version", row.version + 1)
    set_committed_value(row, "updated_at", now)
    return row


def replace_incident_data(
    session: Session, incident_id: str, version: int, data: Mapping[str, Any]
) -> dt.datetime:
    """:func:`save_incident` by id and the version that was read (no row object needed): the
    new data, version + 1; :class:`StaleIncident` if it is no longer at ``version``. Returns
    the ``updated_at`` it stamped."""
    now = utcnow()
    c = IncidentRow.__table__.c  # type: ignore[attr-defined]
    statement = prepared(
        session,
        "incident.replace",
        lambda d: (
            update(IncidentRow.__table__)  # type: ignore[attr-defined]
            .where((c.id == bindparam("k_id")) & (c.version == bindparam("k_version")))
            .values(version=c.version + 1)
        ),
    )
    result = session.connection().execute(
        statement,
        {"k_id": incident_id, "k_version": version, "data": dict(data), "updated_at": now,
         **incident_columns(data)},
    )  # fmt: skip
    if result.rowcount != 1:
        raise StaleIncident(f"incident {incident_id} changed since version {version}")
    return now


@dataclass
class IncidentState:
    """What a reconcile reads of one incident (:func:`incident_state`)."""

    version: int
    data: dict[str, Any]
    created_at: dt.datetime  # when the store first had it (first seen)
    links: list[Link]  # oldest first
    observations: dict[int, Observation | None]  # by link id: the record's newest observation
    shadows: dict[int, Shadow | None]  # by link id
    parked: set[str]  # targets ("system:instance") with an open parked item
    backoffs: dict[str, dt.datetime]  # target -> when it may be tried again
    comments: list[tuple[str, str, str, str]]  # (canonical id, system, instance, remote id)


_LINK_COLUMNS = ("id", "incident_id", "system", "instance", "object_type", "remote_id",
                 "remote_key", "url", "created_at")  # fmt: skip


_OBSERVATION_COLUMNS = ("version", "fields", "source", "observed_at", "remote_updated_at")


def _state_statements(dialect: str) -> tuple[Any, ...]:
    incident = IncidentRow.__table__  # type: ignore[attr-defined]
    link = Link.__table__  # type: ignore[attr-defined]
    obs = Observation.__table__  # type: ignore[attr-defined]
    shadow = Shadow.__table__  # type: ignore[attr-defined]
    parked = Parked.__table__  # type: ignore[attr-defined]
    backoff = TargetBackoff.__table__  # type: ignore[attr-defined]
    comment = CommentLink.__table__  # type: ignore[attr-defined]
    wanted: Any = bindparam("incident_id")
    records = (
        sa_select(
            *(link.c[n] for n in _LINK_COLUMNS),
            obs.c.system.label("o_system"),
            *(obs.c[n].label(f"o_{n}") for n in _OBSERVATION_COLUMNS),
            shadow.c.link_id.label("s_link_id"),
            shadow.c.fields.label("s_fields"),
            shadow.c.version.label("s_version"),
            shadow.c.updated_at.label("s_updated_at"),
        )
        .select_from(
            link.outerjoin(
                obs,
                (obs.c.system == link.c.system)
                & (obs.c.instance == link.c.instance)
                & (obs.c.object_type == link.c.object_type)
                & (obs.c.remote_id == link.c.remote_id),
            ).outerjoin(shadow, shadow.c.link_id == link.c.id)
        )
        .where(link.c.incident_id == wanted)
        .order_by(link.c.id)
    )
    return (
        select(incident.c.version, incident.c.data, incident.c.created_at).where(
            incident.c.id == wanted
        ),
        records,
        select(parked.c.target).where(
            (parked.c.incident_id == wanted) & parked.c.resolved_at.is_(None)
        ),
        select(backoff.c.target, backoff.c.next_attempt_at).where(backoff.c.incident_id == wanted),
        select(comment.c.canonical_id, comment.c.system, comment.c.instance, comment.c.remote_id)
        .where(comment.c.incident_id == wanted)
        .order_by(comment.c.id),
    )


def incident_state(session: Session, incident_id: str) -> IncidentState | None:
    """The incident, its links with each record's newest observation and shadow, its open
    parked targets, backoffs and synced comments: five prebuilt statements (this runs for every
    reconcile, before its first write; one query per link and per table cost ~2x more)."""
    row_q, records_q, parked_q, backoff_q, comments_q = prepared(
        session, "incident.state", _state_statements
    )
    connection = session.connection()
    wanted = {"incident_id": incident_id}
    row = connection.execute(row_q, wanted).one_or_none()
    if row is None:
        return None
    links: list[Link] = []
    observations: dict[int, Observation | None] = {}
    shadows: dict[int, Shadow | None] = {}
    for r in connection.execute(records_q, wanted).mappings():
        # model_construct: the values come from the database, and validating them again cost
        # ~40 us an object on every reconcile (Link(**...) does).
        link = Link.model_construct(**{n: r[n] for n in _LINK_COLUMNS})
        links.append(link)
        observations[r["id"]] = (
            None
            if r["o_system"] is None
            else Observation.model_construct(
                system=r["system"], instance=r["instance"], object_type=r["object_type"],
                remote_id=r["remote_id"], **{n: r[f"o_{n}"] for n in _OBSERVATION_COLUMNS},
            )
        )  # fmt: skip
        shadows[r["id"]] = (
            None
            if r["s_link_id"] is None
            else Shadow.model_construct(
                link_id=r["id"], fields=r["s_fields"], version=r["s_version"],
                updated_at=r["s_updated_at"],
            )
        )  # fmt: skip
    return IncidentState(
        version=row.version,
        data=dict(row.data),
        created_at=row.created_at,
        links=links,
        observations=observations,
        shadows=shadows,
        parked={t for (t,) in connection.execute(parked_q, wanted)},
        backoffs={t: at for t, at in connection.execute(backoff_q, wanted)},
        comments=[(a, b, c, d) for a, b, c, d in connection.execute(comments_q, wanted)],
    )


def get_shadow(session: Session, link_id: int) -> Shadow | None:
    """The link's shadow as stored now (one prepared SELECT: this is read in the write
    transaction before every write, where the ORM's identity map only costs time)."""
    table = Shadow.__table__  # type: ignore[attr-defined]
    query = prepared(
        session,
        "shadow.get",
        lambda d: sa_select(table.c.fields, table.c.version, table.c.updated_at).where(
            table.c.link_id == bindparam("link_id")
        ),
    )
    row = session.connection().execute(query, {"link_id": link_id}).first()
    if row is None:
        return None
    fields, version, updated_at = row
    return Shadow(link_id=link_id, fields=fields, version=version, updated_at=updated_at)


def set_shadow(
    session: Session, link_id: int, fields: Mapping[str, Any], version: Sequence[int]
) -> Shadow:
    """Replace the shadow of a link (all fields: merge first if you wrote only some)."""
    shadow = Shadow(
        link_id=link_id, fields=dict(fields), version=list(version), updated_at=utcnow()
    )
    table = Shadow.__table__  # type: ignore[attr-defined]

    def build(dialect: str) -> Any:
        insert = insert_for(dialect, table)
        return insert.on_conflict_do_update(
            index_elements=[table.c.link_id],
            set_={k: insert.excluded[k] for k in ("fields", "version", "updated_at")},
        )

    session.connection().execute(
        prepared(session, "shadow.upsert", build),
        {"link_id": link_id, "fields": shadow.fields, "version": shadow.version,
         "updated_at": shadow.updated_at},
    )  # fmt: skip
    return shadow
