"""Reconcile one incident: read, let the planner decide, let the executor write.

Level-triggered: whatever woke us (a webhook, a poll, a replay), we work from the newest stored
observation of each linked record and the stored shadows, so late, duplicated or out-of-order
events change nothing. The steps:

1. read the incident, its links, each record's newest observation and shadow (the store);
2. read what the observations do not tell and a decision needs: comments not carried by a
   delivery, a record's field history where only the record's time dates a change that could
   decide a conflict, a parent record not seen yet (the connectors);
3. merge (:func:`sync.planner.merge`, pure), then the postmortem gate on any end;
4. commit the merged incident and the consumed shadows;
5. plan (:func:`sync.planner.plan`, pure) and execute (:class:`sync.executor.Executor`).

System quirks live behind the connector protocol (how a record is stamped, moved, written) or
in the mapping and policy data (which records are incidents, what a create sets): this module
names no system.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from config.settings import SyncSettings
from connectors.base import (
    Capability,
    Connector,
    FieldChange,
    RemoteComment,
    RemoteRecord,
    RemoteRef,
    field_changes_of,
    join_history,
)
from connectors.errors import ConnectorError
from mapping.conditions import parse_condition
from mapping.engine import applies, from_canonical, get_path
from mapping.model import CANONICAL_FIELDS, Comment, Incident, Stamp, State, Visibility
from mapping.registry import MappingSet
from mapping.spec import Mapping as FieldMap
from mapping.transforms import TransformContext
from sync import pairing as pairing_module
from sync import planner, store
from sync.executor import Executor, Outcome, _revert, held_records, ref_of
from sync.people import context_for
from sync.planner import (
    CORRELATION_PREFIX,
    MAPPING_FAILURES,
    PAGE_WIDE,
    REF_KEY,
    SEEN_KEY,
    THROUGH_KEY,
    Merged,
    Policy,
    Record,
    Snapshot,
    Target,
    correlation_key,
    nested_values,
    pending_theirs,
)
from sync.queue import incident_key, mark_dirty

__all__ = ["CORRELATION_PREFIX", "REF_KEY", "Outcome", "Reconciler", "correlation_key"]

log = logging.getLogger("itsm_sync.reconcile")
# The open public incidents looked at for a page-wide component status: the newest this many.
MAX_SHARED_INCIDENTS = 500


def policy_from(settings: SyncSettings) -> Policy:
    """The lifecycle rules of the settings, per system as data."""
    return Policy(
        create_when={"jira": parse_condition(settings.create_jira_when, fields=CANONICAL_FIELDS)},
        create_if_linked=frozenset({"servicenow"} if settings.create_servicenow_for_jira else ()),
        create_fields={"jira": {"issuetype": {"name": settings.jira_issue_type}}},
        follow={"jira": {"issuetype.name": settings.jira_issue_type}},
        tie_winner=settings.tie_winner,
        quick_resolve_seconds=settings.quick_resolve_seconds,
        duplicates_follow_parent=settings.duplicates_follow_parent,
    )


def _through(shadow: Mapping[str, Any] | None) -> tuple[int, ...] | None:
    value = (shadow or {}).get(THROUGH_KEY)
    return tuple(value) if isinstance(value, list) and value else None


class _AlreadyLinked(Exception):
    def __init__(self, incident_id: str) -> None:
        super().__init__(incident_id)
        self.incident_id = incident_id


class Reconciler:
    """Everything a worker needs to reconcile incidents; safe to share between threads."""

    def __init__(
        self,
        db: Engine,
        connectors: Mapping[tuple[str, str], Connector],
        mappings: Callable[[], MappingSet],
        settings: SyncSettings,
    ) -> None:
        self.db = db
        self.connectors = connectors
        self.mappings = mappings
        self.settings = settings
        self.policy = policy_from(settings)
        self._contexts: dict[tuple[str, str], TransformContext] = {}
        # The postmortem tracker plugs in here (set by the composition root): its work on
        # resolved incidents, the closure gate, and which incident owns a change request.
        self.tracker: Any = None
        # (system, object_type, remote_id) -> the incident a non-incident record belongs to.
        self.resolvers: list[Callable[[str, str, str], str | None]] = []
        # (system, instance, object_type, remote_id) -> handled: records of their own kind
        # (a change request shown as scheduled maintenance, sync.maintenance).
        self.handlers: list[Callable[[str, str, str, str], bool]] = []

    def context(self, system: str, instance: str) -> TransformContext:
        key = (system, instance)
        if key not in self._contexts:
            self._contexts[key] = context_for(self.connectors[key])
        return self._contexts[key]

    def target(self, mapping: FieldMap, parked: bool = False, wait: float | None = None) -> Target:
        connector = self.connectors[mapping.key]
        return Target(
            mapping=mapping,
            context=self.context(*mapping.key),
            capabilities=connector.capabilities,
            text_limit=connector.text_limit,
            inert=connector.inert,
            parked=parked,
            wait_seconds=wait,
        )

    # -- records not linked yet ---------------------------------------------------------------

    def adopt(
        self,
        system: str,
        instance: str,
        object_type: str,
        remote_id: str,
        *,
        pairing: bool = True,
        mark: bool = True,
        seen: tuple[store.Link | None, store.Observation | None] | None = None,
    ) -> str | None:
        """Link a remote record we have observed to an incident: the one whose correlation key
        it carries (we created it and crashed before linking), the one of the record it names
        as its counterpart (linked by hand before us), or a new incident made from it.
        Returns the incident id, or None when the record is not ours to follow. With
        ``mark=False`` the incident made or found is not queued: the caller does it.
        ``seen``: the record's link and observation as the caller has just read them (the
        worker, for each record it meets: one read transaction fewer per record adopted)."""
        mapping_set = self.mappings()
        if seen is None:
            with store.session_scope(self.db, readonly=True) as s:
                seen = (
                    store.find_link(
                        s, system=system, instance=instance, object_type=object_type,
                        remote_id=remote_id,
                    ),
                    store.latest_observation(
                        s, system=system, instance=instance, object_type=object_type,
                        remote_id=remote_id,
                    ),
                )  # fmt: skip
        link, obs = seen
        if link is not None:
            return link.incident_id
        if obs is None:
            return None
        fields, version = dict(obs.fields), list(obs.version)
        owner = self._stamped_incident(system, instance, fields)
        try:
            mapping = mapping_set.get(system, instance)
        except KeyError:
            return None
        reading = any(f.reads for f in mapping.fields)
        if owner is None and not reading:
            return None  # an output-only record someone made by hand (a status page incident)
        data: dict[str, Any] | None = None
        if owner is None:
            if mapping.object_type != object_type:
                return None  # e.g. a change request: not an incident of its own
            for path, wanted in (self.policy.follow.get(system) or {}).items():
                if str(get_path(fields, path) or "") != wanted:
                    return None  # a task, a review, an action item: not an incident
            if pairing:
                record = RemoteRecord(
                    ref=RemoteRef(system, instance, object_type, remote_id,
                                  str(fields.get(REF_KEY) or "")),
                    version=tuple(obs.version),
                    updated_at=obs.remote_updated_at or obs.observed_at, fields=fields,
                )  # fmt: skip
                other = pairing_module.counterpart(self, record)
                if other is not None:
                    try:
                        return pairing_module.link_records(
                            self, other, record, reason=f"{system} {record.ref.key} names it"
                        )
                    except pairing_module.PairConflict as exc:
                        log.warning("%s: %s", record.ref, exc)
            target = self.target(mapping)
            parents = self._parents([(target, fields)])
            values = planner.read(target, fields, parents)
            at = obs.remote_updated_at or obs.observed_at
            stamps = {name: Stamp(at=at, system=system) for name in values}
            incident = Incident.model_validate({**nested_values(values), "changed": stamps})
            data = incident.model_dump(mode="json")
        held: tuple[dict[str, Any], list[int]] | None = None
        if owner is not None:
            # A record we made whose create failed after it was made (an answer lost, a kill):
            # the values it was created with are ours, as the executor's own create records
            # them; only later changes by others are changes (weighed on the next pass).
            human = field_changes_of(fields)
            as_created = _revert(fields, human)
            paths = {f.path for f in mapping.fields if f.reads}
            held = (
                {p: get_path(as_created, p) for p in paths},
                [] if human else version,
            )
        try:
            return self._link_adopted(
                system, instance, object_type, remote_id, owner, fields, data, held, mark=mark
            )
        except _AlreadyLinked as linked:
            return linked.incident_id

    def _link_adopted(
        self, system: str, instance: str, object_type: str, remote_id: str,
        owner: str | None, fields: Mapping[str, Any], data: Mapping[str, Any] | None,
        held: tuple[dict[str, Any], list[int]] | None = None, *, mark: bool = True,
    ) -> str:  # fmt: skip
        with store.session_scope(self.db) as s:
            if owner is None:
                assert data is not None
                # The id is in the data from the INSERT (no UPDATE to add it afterwards).
                new_id = uuid.uuid4().hex
                row = store.create_incident(s, {**data, "id": new_id}, incident_id=new_id)
                owner = row.id
                reason = f"new incident from {system} {fields.get(REF_KEY) or remote_id}"
            else:
                reason = "recovered the link from the correlation key"
            key = str(fields.get(REF_KEY) or fields.get("number") or "")
            try:
                link = store.add_link(
                    s, incident_id=owner, system=system, instance=instance,
                    object_type=object_type, remote_id=remote_id, remote_key=key,
                )  # fmt: skip
            except store.LinkConflict as conflict:
                # Someone linked it first: roll back the incident made here, use theirs.
                raise _AlreadyLinked(conflict.existing.incident_id) from conflict
            if held is not None:
                store.set_shadow(s, link.id or 0, *held)
            store.audit(
                s, action="create" if "new" in reason else "skip", incident_id=owner,
                system=system, instance=instance, remote_id=remote_id, reason=reason,
            )  # fmt: skip
            if mark:
                mark_dirty(s, incident_key(owner), reason="adopted")
            return link.incident_id

    def _stamped_incident(
        self, system: str, instance: str, fields: Mapping[str, Any]
    ) -> str | None:
        """The incident a record's correlation stamp names, if we made the record."""
        connector = self.connectors.get((system, instance))
        stamped = [
            stamp[len(CORRELATION_PREFIX) :]
            for stamp in (connector.stamps(fields) if connector is not None else [])
            if stamp.startswith(CORRELATION_PREFIX)
        ]
        if not stamped:
            return None  # most records: no read at all
        with store.session_scope(self.db, readonly=True) as s:
            for incident_id in stamped:
                if store.get_incident(s, incident_id) is not None:
                    return incident_id
        return None

    def _parents(
        self, sources: list[tuple[Target, Mapping[str, Any]]]
    ) -> dict[tuple[str, str, str], str]:
        """Canonical ids of the parents records name by remote id (ServiceNow
        ``parent_incident``); a parent not seen yet is read and adopted first."""
        out: dict[tuple[str, str, str], str] = {}
        for target, fields in sources:
            mapping = target.mapping
            for f in mapping.for_field("parent"):
                if not f.reads:
                    continue
                remote = get_path(fields, f.path)
                if remote and isinstance(remote, str):
                    key = (mapping.system, mapping.instance, remote)
                    if key not in out:
                        out[key] = self._parent_id(mapping, remote)
        return out

    def _parent_id(self, mapping: FieldMap, remote: str) -> str:
        system, instance = mapping.key
        with store.session_scope(self.db, readonly=True) as s:
            link = store.find_link(
                s, system=system, instance=instance, object_type=mapping.object_type,
                remote_id=remote,
            )  # fmt: skip
            if link is not None:
                return link.incident_id
        record = self.connectors[mapping.key].get(mapping.object_type, remote)
        self.observe(record, source="poll")
        return self.adopt(system, instance, mapping.object_type, record.ref.id) or ""

    def observe(self, record: RemoteRecord, *, source: str) -> bool:
        with store.session_scope(self.db) as s:
            return store.record_observation(
                s,
                system=record.ref.system,
                instance=record.ref.instance,
                object_type=record.ref.object_type,
                remote_id=record.ref.id,
                version=list(record.version),
                fields={**record.fields, REF_KEY: record.ref.key},
                source=source,  # type: ignore[arg-type]
                remote_updated_at=record.updated_at,
            )

    # -- one incident -------------------------------------------------------------------------

    def reconcile(self, incident_id: str) -> Outcome:
        outcome = Outcome()
        mappings = self.mappings()
        with store.session_scope(self.db, readonly=True) as s:
            state = store.incident_state(s, incident_id)
        if state is None:
            return outcome
        executor = Executor(self.db, self.connectors, incident_id, outcome)
        now = store.utcnow()
        targets: dict[tuple[str, str], Target] = {}
        for mapping in mappings:
            if mapping.key not in self.connectors:
                continue
            name = f"{mapping.system}:{mapping.instance}"
            wait = state.backoffs.get(name)
            waiting = (wait - now).total_seconds() if wait is not None and wait > now else None
            if waiting is not None:
                # Still backing off after a retriable failure: this target waits, the
                # incident's other targets go on, and the incident comes back when it may.
                outcome.later(waiting)
            targets[mapping.key] = self.target(mapping, name in state.parked, waiting)
        incident = Incident.model_validate({**state.data, "id": incident_id})
        comments = state.comments
        unsure = frozenset(
            (c, sy, i) for c, sy, i, r in comments if r.startswith(store.PENDING_COMMENT)
        )
        records = self._records(state, targets, unsure, executor)
        snap = Snapshot(
            incident=incident,
            records=tuple(records),
            targets=targets,
            terminal=mappings.terminal_states(),
            synced=frozenset((sy, i, r) for _, sy, i, r in comments),
            posted=frozenset(
                (c, sy, i) for c, sy, i, r in comments if not r.startswith(store.PENDING_COMMENT)
            ),
            unsure=unsure,
            parents=self._parents(
                [
                    (targets[r.target], fields)
                    for r in records
                    if r.target in targets
                    for fields in (r.observed, r.shadow and planner.nest(r.shadow))
                    if fields
                ]
            ),
            parent=self._incident(incident.parent) if incident.parent else None,
            first_seen=state.created_at,
            now=now,
        )
        merged = planner.merge(snap, self.policy)
        if merged.needs_history:
            snap = self._with_history(snap, merged.needs_history, executor)
            merged = planner.merge(snap, self.policy)
        outcome.conflicts += merged.conflicts
        for park in merged.parks:
            error = park.error or Exception(park.reason)
            executor.park(f"{park.target[0]}:{park.target[1]}", error, reading=True)
        parked_now = {p.target for p in merged.parks}
        if self.tracker is not None:
            merged.incident = self._gate(merged, incident, snap, outcome)
        before = incident
        incident = merged.incident
        snap = dataclasses.replace(
            snap,
            targets={k: t for k, t in targets.items() if k not in parked_now},
            parent_remote=self._parent_remote(incident),
            shared=self._shared(incident, targets),
        )
        ops = planner.plan(snap, incident, self.policy, merged.consumed)
        held = held_records(list(snap.records), state.links, merged.consumed)
        # The merge and the intents of the writes to come in one transaction. Raises
        # StaleIncident if someone saved the incident since we read it (or deleted it).
        executor.save(
            merged if merged.incident != before or merged.changed else None,
            state.version,
            executor.intents(ops, snap.targets, held),
            [op for op in ops if isinstance(op, planner.Create)],
        )
        executor.run(incident, ops, snap.targets, held, state.backoffs)
        self._after(snap.incident, incident, outcome)
        return outcome

    def _records(
        self,
        state: store.IncidentState,
        targets: Mapping[tuple[str, str], Target],
        unsure: frozenset[tuple[str, str, str]],
        executor: Executor,
    ) -> list[Record]:
        """Each linked record as the store holds it, with the comments that could be new
        (read where the observation does not carry them)."""
        out = []
        for link in state.links:
            obs = state.observations.get(link.id or 0)
            shadow = state.shadows.get(link.id or 0)
            record = Record(
                link_id=link.id or 0,
                ref=ref_of(link),
                url=link.url,
                observed=dict(obs.fields) if obs else None,
                version=tuple(obs.version) if obs else None,
                observed_at=(obs.remote_updated_at or obs.observed_at) if obs else None,
                shadow=dict(shadow.fields) if shadow else None,
                shadow_version=tuple(shadow.version) if shadow else None,
                history=_history(obs, shadow),
            )
            target = targets.get(record.target)
            if target is not None and target.source and not target.parked and obs is not None:
                comments = self._comments(record, target, unsure, executor)
                if comments is _FAILED:
                    # Its comments could not be read: what it changed waits for the next pass
                    # (the target backs off), and it is written to as it was.
                    record = dataclasses.replace(record, observed=None)
                else:
                    record = dataclasses.replace(record, comments=comments)  # type: ignore[arg-type]
            out.append(record)
        return out

    def _comments(
        self,
        record: Record,
        target: Target,
        unsure: frozenset[tuple[str, str, str]],
        executor: Executor,
    ) -> tuple[RemoteComment, ...] | object | None:
        connector = self.connectors[record.target]
        if Capability.COMMENTS not in connector.capabilities or record.observed is None:
            return None
        known = connector.known_comments(record.observed, _through(record.shadow))
        if not record.newer and not known:
            return None
        ours_in_doubt = any((sy, i) == record.target for _, sy, i in unsure)
        if known is not None and not ours_in_doubt:
            return tuple(known)
        try:  # nothing told us which comments are new (or one of ours may be among them)
            return tuple(connector.comments(record.ref))
        except ConnectorError as exc:
            executor.fail(f"{record.ref.system}:{record.ref.instance}", exc)
            return _FAILED

    def _with_history(self, snap: Snapshot, wanted: set[int], executor: Executor) -> Snapshot:
        """The snapshot with the field history of the records that need it read."""
        records = []
        for record in snap.records:
            connector = self.connectors.get(record.target)
            if (
                record.link_id not in wanted
                or connector is None
                or Capability.FIELD_HISTORY not in connector.capabilities
            ):
                records.append(record)
                continue
            since = _since(record, snap.incident)
            try:
                read = connector.field_changes(record.ref, since)
            except ConnectorError as exc:
                log.info("field history of %s could not be read: %s", record.ref, exc)
                records.append(record)
                continue
            known = {c.id for c in record.history}
            history = sorted([*record.history, *(c for c in read if c.id not in known)], key=_at)
            records.append(dataclasses.replace(record, history=tuple(history)))
        return dataclasses.replace(snap, records=tuple(records))

    def _gate(self, merged: Merged, before: Incident, snap: Snapshot, outcome: Outcome) -> Incident:
        """The postmortem requirement latches; a move into a terminal state is allowed only
        if the gate is open, else the incident stays in the state it had and every system gets
        an internal note that says exactly what is missing."""
        incident = merged.incident
        self.tracker.note(incident)
        if incident.state.value not in snap.terminal or before.state.value in snap.terminal:
            return incident
        links = self._links(incident.id)
        try:
            self.tracker.work(incident, links)  # items and change requests as of now
        except ConnectorError as exc:
            log.warning("postmortem work before the gate failed: %s", exc)
        gate = self.tracker.gate(incident)
        if gate.open:
            return incident
        by = (
            ", ".join(
                sorted(
                    {
                        r.name
                        for r in snap.records
                        for a in merged.audits
                        if a.get("field") == "state" and a.get("remote_id") == r.ref.id
                    }
                )
            )
            or "?"
        )
        note = self.tracker.record_blocked(incident, gate, by, before=before.state.value)
        comment = Comment(
            id=f"gate:{incident.id}:{len(incident.comments)}",
            body=note,
            visibility=Visibility.INTERNAL,
            origin="itsm-sync:closure-gate",
            created_at=dt.datetime.now(dt.UTC),
        )
        return incident.model_copy(
            update={
                "state": before.state,
                "comments": (*incident.comments, comment),
                "changed": {**incident.changed, "state": Stamp(at=snap.now, system="itsm-sync")},
            }
        )

    def _after(self, before: Incident, incident: Incident, outcome: Outcome) -> None:
        """Duplicates follow their parent: a parent that was resolved wakes its duplicates;
        and the postmortem's work on a resolved incident."""
        done = {State.RESOLVED, State.CLOSED, State.CANCELED}
        if incident.state in done and before.state not in done:
            with store.session_scope(self.db) as s:
                for row in _children(s, incident.id):
                    mark_dirty(s, incident_key(row), reason=f"its parent {incident.id} ended")
        if self.tracker is not None and incident.state in (State.RESOLVED, State.CLOSED):
            try:
                self.tracker.work(incident, self._links(incident.id))
            except ConnectorError as exc:
                Executor(self.db, self.connectors, incident.id, outcome).fail("postmortem", exc)

    # -- small reads ----------------------------------------------------------------------

    def _links(self, incident_id: str) -> list[store.Link]:
        with store.session_scope(self.db, readonly=True) as s:
            return store.links_of(s, incident_id)

    def _incident(self, incident_id: str) -> Incident | None:
        with store.session_scope(self.db, readonly=True) as s:
            row = store.get_incident(s, incident_id)
        if row is None:
            return None
        return Incident.model_validate({**row.data, "id": row.id})

    def _parent_remote(self, incident: Incident) -> dict[tuple[str, str], str]:
        if not incident.parent:
            return {}
        return {(x.system, x.instance): x.remote_id for x in self._links(incident.parent)}

    def _shared(
        self, incident: Incident, targets: Mapping[tuple[str, str], Target]
    ) -> dict[tuple[str, str], dict[str, str]]:
        """Per page-wide target (component statuses): the worst status each component has in
        the other open incidents it shows."""
        out: dict[tuple[str, str], dict[str, str]] = {}
        for key, target in targets.items():
            mapping = target.mapping
            wide = [f for f in mapping.fields if f.transform and f.transform.name == PAGE_WIDE]
            if not wide or not applies(mapping, incident):
                continue
            out[key] = self._others_components(incident, target, wide[0].path)
        return out

    def _others_components(self, incident: Incident, target: Target, path: str) -> dict[str, str]:
        mapping = target.mapping
        with store.session_scope(self.db, readonly=True) as s:
            rows = s.exec(
                select(store.IncidentRow)
                .join(store.Link, col(store.Link.incident_id) == col(store.IncidentRow.id))
                .where(
                    col(store.Link.system) == mapping.system,
                    col(store.Link.instance) == mapping.instance,
                    col(store.Link.incident_id) != incident.id,
                )
                .order_by(col(store.Link.id).desc())
                .limit(MAX_SHARED_INCIDENTS)
            ).all()
        worst: dict[str, str] = {}
        for row in rows:
            try:
                other = Incident.model_validate({**row.data, "id": row.id})
                if other.state in (State.RESOLVED, State.CLOSED, State.CANCELED):
                    continue
                if not applies(mapping, other):
                    continue
                theirs = get_path(from_canonical(mapping, other, target.context), path) or {}
            except (*MAPPING_FAILURES, ConnectorError, ValueError):
                continue  # that incident's own reconcile reports what is wrong with it
            for component, status in dict(theirs).items():
                if planner._rank(status) > planner._rank(worst.get(component)):
                    worst[component] = str(status)
        return worst


_FAILED = object()


def _history(obs: store.Observation | None, shadow: store.Shadow | None) -> tuple[FieldChange, ...]:
    """A record's known field history: its observation's, and someone's changes a write's
    answer told of that no pass has weighed yet (kept with the shadow: a newer observation
    may have replaced the one that carried them)."""
    stored = field_changes_of(obs.fields) if obs else []
    theirs = pending_theirs(shadow.fields if shadow else None)
    return tuple(join_history(stored, theirs)) if theirs else tuple(stored)


def _at(change: FieldChange) -> dt.datetime:
    return change.at


def _since(record: Record, incident: Incident) -> dt.datetime | None:
    """Where a record's history needs reading from: after what was already weighed."""
    seen = (record.shadow or {}).get(SEEN_KEY)
    if seen:
        try:
            return dt.datetime.fromisoformat(str(seen))
        except ValueError:
            pass
    stamps = [s.at for s in incident.changed.values()]
    return min(stamps) if stamps else None


def _children(s: Any, parent_id: str) -> list[str]:
    """Incidents that name ``parent_id`` as their parent (duplicates)."""
    parent = col(store.IncidentRow.parent)  # data["parent"], kept as an indexed column
    return list(s.exec(select(store.IncidentRow.id).where(parent == parent_id)).all())
