"""Planned changes become scheduled maintenance on the status page.

A ServiceNow change request of type normal or standard, with a planned window (``start_date``,
``end_date``) and an affected service the mappings know (its ``business_service``, read as the
incident mapping reads it, then the status page mapping's component for that service), shows
on the status page as scheduled maintenance: ``scheduled_for``/``scheduled_until``, the
components, and Statuspage's own automatic moves to in progress and completed (and the
components to under maintenance and back). When the window moves, the page follows; when the
change is canceled, the page says it is cancelled and completes it.

Customers read only what is built here from the service names and the times — never the
change's own text, which is internal.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from connectors.base import Connector, RemoteRef
from connectors.errors import ConnectorError
from mapping.engine import to_canonical
from mapping.registry import MappingSet
from mapping.spec import Mapping as FieldMap
from mapping.transforms import TransformContext
from sync import store

log = logging.getLogger("itsm_sync.maintenance")
KINDS = ("normal", "standard")
CANCELED = "4"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # ServiceNow's, UTC
PAGE_WIDE = "component_statuses"


@dataclass(frozen=True)
class Window:
    """What the status page should show for one change."""

    fields: dict[str, Any]
    canceled: bool = False


def _time(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(str(value), TIME_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def components(
    change: Mapping[str, Any], source: FieldMap, page: FieldMap, ctx: TransformContext
) -> dict[str, str]:
    """{component id: service name} the change affects, through the two mappings."""
    readers = tuple(f for f in source.fields if f.canonical == "services" and f.reads)
    writers = [f for f in page.fields if f.canonical == "services" and f.values is not None]
    if not readers or not writers:
        return {}
    sub = FieldMap(source.system, source.instance, source.object_type, readers)
    services = to_canonical(sub, change, ctx).get("services") or ()
    out: dict[str, str] = {}
    for service in services:
        component = writers[0].values.out.get(str(service)) if writers[0].values else None
        if component:
            out[component] = str(service)
    return out


def window(
    change: Mapping[str, Any], source: FieldMap, page: FieldMap, ctx: TransformContext
) -> Window | None:
    """The scheduled maintenance a change request stands for, or None (not one)."""
    if str(change.get("type") or "") not in KINDS:
        return None
    start, end = _time(change.get("start_date")), _time(change.get("end_date"))
    if start is None or end is None or end <= start:
        return None
    affected = components(change, source, page, ctx)
    if not affected:
        return None
    names = ", ".join(sorted({name.title() for name in affected.values()}))
    when = f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    canceled = str(change.get("state") or "") == CANCELED
    body = (
        f"The planned maintenance of {names} ({when}) has been cancelled."
        if canceled
        else f"We will carry out planned maintenance of {names} from {when}. Some features "
        "may be unavailable while it lasts."
    )
    fields: dict[str, Any] = {
        "name": f"Planned maintenance: {names}",
        "body": body,
        "scheduled_for": start.isoformat().replace("+00:00", "Z"),
        "scheduled_until": end.isoformat().replace("+00:00", "Z"),
        "component_ids": sorted(affected),
        "impact_override": "maintenance",
        "scheduled_auto_in_progress": True,
        "scheduled_auto_completed": True,
        "auto_transition_to_maintenance_state": True,
        "auto_transition_to_operational_state": True,
    }
    if canceled:
        fields["status"] = "completed"
    return Window(fields=fields, canceled=canceled)


class Maintenance:
    """Keeps each change request's scheduled maintenance on the page in line with it."""

    def __init__(
        self,
        db: Engine,
        connectors: Mapping[tuple[str, str], Connector],
        mappings: Callable[[], MappingSet],
        contexts: Callable[[str, str], TransformContext],
    ) -> None:
        self.db = db
        self.connectors = connectors
        self.mappings = mappings
        self.contexts = contexts

    def handle(self, system: str, instance: str, object_type: str, remote_id: str) -> bool:
        """Bring the change's maintenance in line; False if it is no maintenance at all."""
        if object_type != "change_request":
            return False
        mappings = self.mappings()
        try:
            source = mappings.get(system, instance)
        except KeyError:
            return False
        pages = [m for m in mappings if not any(f.reads for f in m.fields)]
        with store.session_scope(self.db, readonly=True) as s:
            obs = store.latest_observation(
                s, system=system, instance=instance, object_type=object_type, remote_id=remote_id
            )
            key = f"{system}:{instance}:{remote_id}"
            row = s.get(store.MaintenanceWindow, key)
        if obs is None:
            return False
        handled = False
        for page in pages:
            connector = self.connectors.get(page.key)
            if connector is None or (row is not None and row.page_instance != page.instance):
                continue
            wanted = window(obs.fields, source, page, self.contexts(system, instance))
            if wanted is None and row is None:
                continue
            handled = True
            number = str(obs.fields.get("number") or remote_id)
            try:
                self._apply(connector, page, key, number, row, wanted)
            except ConnectorError as exc:
                log.warning("maintenance for %s: %s", number, exc)
                raise
        return handled

    def _apply(
        self, connector: Connector, page: FieldMap, key: str, number: str,
        row: store.MaintenanceWindow | None, wanted: Window | None,
    ) -> None:  # fmt: skip
        if row is not None and row.ended:
            return
        if wanted is None:  # no longer a window (dates cleared, type changed): cancel it
            assert row is not None
            body = row.fields.get("body", "")
            wanted = Window({**row.fields, "status": "completed",
                             "body": f"This planned maintenance has been cancelled. {body}"},
                            canceled=True)  # fmt: skip
        if row is None:
            if wanted.canceled:
                return  # canceled before it was ever shown
            record = connector.create(
                "incident", {**wanted.fields, "status": "scheduled"},
                correlation_key=f"itsm-chg-{key.rsplit(':', 1)[1]}",
            )  # fmt: skip
            self._save(key, number, page, record.ref.id, wanted)
            return
        patch = {k: v for k, v in wanted.fields.items() if row.fields.get(k) != v}
        if not patch:
            return
        ref = RemoteRef(page.system, page.instance, "incident", row.page_id)
        connector.update(ref, patch)
        self._save(key, number, page, row.page_id, wanted)

    def _save(self, key: str, number: str, page: FieldMap, page_id: str, wanted: Window) -> None:
        with store.session_scope(self.db) as s:
            row = s.get(store.MaintenanceWindow, key)
            what = "cancelled" if wanted.canceled else "updated" if row else "scheduled"
            if row is None:
                row = store.MaintenanceWindow(change_key=key)
                s.add(row)
            row.change_number, row.page_system, row.page_instance = number, *page.key
            row.page_id, row.fields, row.ended = page_id, dict(wanted.fields), wanted.canceled
            row.updated_at = store.utcnow()
            store.audit(
                s, action="update", system=page.system, instance=page.instance,
                remote_id=page_id, field="maintenance", after=wanted.fields,
                reason=f"maintenance of change {number} {what} on the status page",
            )  # fmt: skip
