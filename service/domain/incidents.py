"""Incidents: find one by any of its names, what it looks like everywhere, its history, and
what customers may read about it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from config.settings import CommsSettings
from mapping.engine import applies
from mapping.model import Incident, Stamp
from mapping.registry import MappingSet
from service.domain.errors import Conflict, Invalid, NotFound
from service.domain.roles import Actor, Permission
from sync import cadence, pairing, store
from sync.queue import incident_key, mark_dirty, queue_depth
from sync.reconcile import Reconciler
from sync.store import utcnow

MAX_PUBLIC_MESSAGE = 25_000


def find(s: Session, *, ident: str) -> store.IncidentRow:
    """The incident named by its canonical id or any linked key (INC0010001, OPS-12)."""
    row = store.find_incident(s, ident.strip())
    if row is None:
        raise NotFound(
            f"no incident {ident} (give a canonical id or a linked key)", field="incident"
        )
    return row


def name_of(s: Session, incident_id: str) -> str:
    """How people know it: its linked keys (INC0010001, OPS-12), or the canonical id."""
    keys = [link.remote_key for link in store.links_of(s, incident_id) if link.remote_key]
    return ", ".join(keys) or incident_id


def _link(link: store.Link) -> dict[str, Any]:
    return {
        "system": link.system,
        "instance": link.instance,
        "object_type": link.object_type,
        "key": link.remote_key,
        "id": link.remote_id,
        "url": link.url,
    }


def detail(s: Session, *, ident: str, comms: CommsSettings | None = None) -> dict[str, Any]:
    row = find(s, ident=ident)
    out: dict[str, Any] = {
        "id": row.id,
        "incident": row.data,
        "links": [_link(link) for link in store.links_of(s, row.id)],
    }
    if comms is not None:
        incident = Incident.model_validate({**row.data, "id": row.id})
        due = cadence.next_update_due(incident, comms, row.created_at)
        out["next_update_due"] = due.isoformat() if due else None
        out["update_overdue"] = due is not None and due <= utcnow()
    return out


def history(s: Session, *, ident: str) -> dict[str, Any]:
    """Every remote write, conflict decision, park and replay of one incident, oldest first."""
    row = find(s, ident=ident)
    return {
        "id": row.id,
        "title": str(row.data.get("title", "")),
        "links": [_link(link) for link in store.links_of(s, row.id)],
        "entries": [entry.model_dump(mode="json") for entry in store.history(s, row.id)],
    }


def status(
    s: Session,
    *,
    mapping_problems: str = "",
    comms: CommsSettings | None = None,
    overdue: int | None = None,
    counted: bool = False,
) -> dict[str, Any]:
    """The queue, parked items, links per system, the poll watermarks and how many open
    incidents owe an update: ``overdue`` when ``counted`` is set or it is given (``None``
    with ``counted``: not counted yet), else counted here (every open incident read)."""
    links = s.exec(select(store.Link.system, func.count()).group_by(store.Link.system)).all()
    watermarks = s.exec(select(store.Watermark)).all()
    oldest = s.exec(
        select(func.min(func.coalesce(store.Dirty.first_marked_at, store.Dirty.due_at)))
    ).one()
    now = utcnow()
    return {
        "queue_depth": queue_depth(s),
        # The change waiting longest: when it was first marked (a string, as JSON has it).
        "oldest_queued_at": oldest.isoformat() if oldest else None,
        "poll_lag_seconds": {
            f"{w.system}/{w.instance}/{w.object_type}": round((now - w.updated_at).total_seconds())
            for w in watermarks
            if w.value is not None
        },
        "parked": len(store.open_parked(s)),
        "links": {system: n for system, n in links},
        "watermarks": {
            f"{w.system}/{w.instance}/{w.object_type}": w.value.isoformat() if w.value else None
            for w in watermarks
        },
        "mappings": mapping_problems or "ok",
        "updates_overdue": overdue
        if counted or overdue is not None
        else cadence.overdue(s, comms or CommsSettings()),
    }


OPEN_STATES = ("new", "investigating", "identified", "monitoring")


def _open_rows(s: Session) -> list[Any]:
    """(id, data, created_at, updated_at) of every open incident, the latest changed first."""
    state = store.state_of(s)  # indexed: reads the open incidents only
    return list(
        s.exec(
            select(
                store.IncidentRow.id,
                store.IncidentRow.data,
                store.IncidentRow.created_at,
                store.IncidentRow.updated_at,
            )
            .where(state.in_(OPEN_STATES))
            .order_by(col(store.IncidentRow.updated_at).desc(), col(store.IncidentRow.id))
        ).all()
    )


def overview(
    s: Session,
    *,
    mapping_problems: str = "",
    comms: CommsSettings | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """:func:`status` and a page of :func:`in_flight`, from one scan of the open incidents
    (finding them reads every incident's JSON: the console's overview does it once)."""
    rows = _open_rows(s)
    comms = comms or CommsSettings()
    overdue = cadence.count_overdue(((i, d, c) for i, d, c, _ in rows), comms)
    out = status(s, mapping_problems=mapping_problems, comms=comms, overdue=overdue)
    page = rows[offset : offset + limit]
    out["in_flight"] = {"total": len(rows), "incidents": _flight(s, page)}
    return out


def in_flight(s: Session, *, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """Open incidents, the most recently changed first, each with its links (a page of them)."""
    rows = _open_rows(s)
    return {"total": len(rows), "incidents": _flight(s, rows[offset : offset + limit])}


def _flight(s: Session, rows: Any) -> list[dict[str, Any]]:
    links: dict[str, list[dict[str, Any]]] = {row[0]: [] for row in rows}
    if rows:
        for link in s.exec(
            select(store.Link)
            .where(col(store.Link.incident_id).in_(list(links)))
            .order_by(col(store.Link.system), col(store.Link.id))
        ):
            links[link.incident_id].append(_link(link))
    return [
        {
            "id": incident_id,
            "title": str(data.get("title", "")),
            "severity": data.get("severity") or "",
            "state": data.get("state", ""),
            "team": data.get("team", ""),
            "public": bool(data.get("public")),
            "updated_at": updated.isoformat(),
            "links": links[incident_id],
        }
        for incident_id, data, _, updated in rows
    ]


PUBLISH_ATTEMPTS = 5


def set_public(
    db: Engine, *, ident: str, message: str, public: bool, actor: Actor,
    mappings: MappingSet | None = None, force: str = "",
) -> dict[str, Any]:  # fmt: skip
    """Comms approves what customers read: the public flag and the public message.

    An incident below what the status page shows (its mapping's ``when``: SEV1-SEV2 by
    default) is refused with the reason, unless ``force`` gives a reason to publish it anyway
    (audited).

    Its own transaction: when the sync saved the incident between our read and our write
    (optimistic versions), the approval is applied again to the newest version, so comms
    never sees the sync's work as an error. Still losing after a few tries: Conflict."""
    actor.require(Permission.PUBLISH)
    for _ in range(PUBLISH_ATTEMPTS):
        try:
            with store.session_scope(db) as s:
                return _set_public(
                    s, ident=ident, message=message, public=public, actor=actor,
                    mappings=mappings, force=force,
                )  # fmt: skip
        except store.StaleIncident:
            continue
    raise Conflict(
        f"{ident} kept changing while it was being published ({PUBLISH_ATTEMPTS} tries); try again",
        field="incident",
    )


def _set_public(
    s: Session, *, ident: str, message: str, public: bool, actor: Actor,
    mappings: MappingSet | None, force: str,
) -> dict[str, Any]:  # fmt: skip
    message = message.strip()
    if public and not message:
        raise Invalid("the public message is empty: say what customers will read", field="message")
    if len(message) > MAX_PUBLIC_MESSAGE:
        raise Invalid(
            f"the public message has {len(message)} characters; at most {MAX_PUBLIC_MESSAGE}",
            field="message",
        )
    row = find(s, ident=ident)
    current = Incident.model_validate({**row.data, "id": row.id})
    wanted = current.model_copy(update={"public": public, "public_message": message})
    forced = False
    if public and mappings is not None:
        pages = [m for m in mappings if not any(f.reads for f in m.fields) and m.when]
        below = [m for m in pages if not applies(m, wanted)]
        if below and not force.strip():
            rule = below[0].when.source if below[0].when else ""
            raise Invalid(
                f"{ident} is {current.severity.value if current.severity else 'without a severity'}"
                f", below what the status page shows ({rule}); give --force with a reason "
                "to publish it anyway",
                field="force",
            )
        forced = bool(below)
    now = utcnow()
    stamps = {**current.changed, "public_message": Stamp(at=now, system="comms")}
    updated = wanted.model_copy(
        update={
            "public_forced": forced or (public and current.public_forced),
            "public_message_stage": current.state.value,
            "changed": stamps,
        }
    )
    store.save_incident(s, row, updated.model_dump(mode="json"))
    reason = "public status approved" if public else "made private"
    if forced:
        reason = f"published below the status page's threshold: {force.strip()}"
    store.audit(
        s, action="update", incident_id=row.id, field="public_message",
        before=current.public_message, after=message, actor=actor.label, reason=reason,
    )  # fmt: skip
    mark_dirty(s, incident_key(row.id), reason="public message")
    return {"incident": row.id, "public": public, "forced": forced, "at": now.isoformat()}


def link(reconciler: Reconciler, *, first: str, second: str, actor: Actor) -> dict[str, Any]:
    """Link two existing records (INC0010001 and OPS-12) as one incident, by hand: neither
    gets a new counterpart, and the sync takes it from there."""
    actor.require(Permission.OPERATE)
    records = []
    for field, key in (("first", first), ("second", second)):
        if not key.strip():
            raise Invalid("name a record by its key (INC0010001, OPS-12)", field=field)
        try:
            records.append(pairing.find_record(reconciler, key.strip()))
        except LookupError as exc:
            raise NotFound(str(exc), field=field) from exc
    try:
        incident_id = pairing.link_records(
            reconciler, records[0], records[1], reason="linked by hand", actor=actor.label
        )
    except pairing.PairConflict as exc:
        raise Conflict(str(exc), field="second") from exc
    return {"incident": incident_id, "linked": [first, second]}
