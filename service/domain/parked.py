"""Parked work: (incident, target) pairs a remote refused for good, until an admin replays them."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from service.domain.errors import Invalid, NotFound
from service.domain.incidents import name_of
from service.domain.roles import Actor, Permission
from sync import store
from sync.queue import incident_key, mark_dirty


def list_open(s: Session) -> list[dict[str, Any]]:
    return [
        {**p.model_dump(mode="json"), "incident": name_of(s, p.incident_id)}
        for p in store.open_parked(s)
    ]


def replay(
    s: Session, *, parked_id: int | None = None, every: bool = False, actor: Actor
) -> list[int]:
    """Queue parked items again; the next reconcile works from the newest state. Returns the
    ids replayed."""
    actor.require(Permission.OPERATE)
    if (parked_id is None) == (not every):
        raise Invalid("give one parked id, or ask for all of them", field="parked_id")
    if every:
        items = store.open_parked(s)
    else:
        item = store.get_parked(s, parked_id or 0)
        if item is None or item.resolved_at is not None:
            raise NotFound(f"no open parked item {parked_id}", field="parked_id")
        items = [item]
    for item in items:
        store.resolve_parked(s, item.id or 0)
        store.audit(
            s, action="replay", incident_id=item.incident_id,
            system=item.target.split(":")[0], actor=actor.label,
            reason=f"replayed from the newest state: {item.error}",
        )  # fmt: skip
        mark_dirty(s, incident_key(item.incident_id), reason="replay")
    return [item.id or 0 for item in items]
