"""Reconcile one incident: observed - shadow -> merge -> mapped - shadow -> writes.

Level-triggered: whatever woke us (a webhook, a poll, a replay), we work from the newest stored
observation of each linked record and the stored shadows, so late, duplicated or out-of-order
events change nothing. Shadows are kept in each system's own terms, per mapped path: a change
is a read path whose value, read through the mapping, differs from the shadow's; a write is a
write path whose wanted value, read back through the mapping, differs from the shadow's. After
every successful remote write the shadow holds what we wrote, so the webhook echoing our own
write shows no change and writes nothing. (On ServiceNow and Jira the echo costs one comment
read: the record a write returns may also hold someone else's edit, so it is compared once.)

Remote writes cannot be inside a database transaction, so the order is: (A) commit the merged
incident and the consumed shadows; (B) per target: write remotely, then commit its shadow and
an audit row. A crash between the two makes the next reconcile write the same values again
(idempotent), and creates are protected by find-before-create on the correlation key.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select, update

from config.settings import SyncSettings
from connectors.base import Capability, Connector, RemoteComment, RemoteRecord, RemoteRef
from connectors.base import Visibility as RemoteVisibility
from connectors.errors import Conflict, ConnectorError, RateLimited, Retriable
from connectors.jira import JiraConnector
from mapping.conditions import Condition, parse_condition
from mapping.engine import (
    applies,
    canonical_values,
    from_canonical,
    get_path,
    set_path,
    to_canonical,
)
from mapping.model import CANONICAL_FIELDS, Comment, Incident, State, Visibility
from mapping.registry import MappingSet
from mapping.spec import Mapping as FieldMap
from mapping.spec import MappingError
from mapping.templates import TemplateError
from mapping.transforms import TransformContext, TransformError
from sync import store
from sync.people import context_for
from sync.queue import clear_backoff, incident_key, mark_dirty, next_backoff

log = logging.getLogger("itsm_sync.reconcile")

SOURCES = ("servicenow", "jira")  # systems whose changes flow in; Statuspage is output only
CORRELATION_PREFIX = "itsm-"
REF_KEY = "_ref_key"  # stored with each observation: the record's human key (OPS-12, INC...)
# Kept in each shadow: the record version up to which every comment on it has been seen.
THROUGH_KEY = "_comments_through"


# Statuspage component statuses, best to worst; a component shared by open incidents shows the
# worst. The open public incidents looked at: the newest this many linked to the page.
COMPONENT_RANK = {
    "operational": 0,
    "under_maintenance": 1,
    "degraded_performance": 2,
    "partial_outage": 3,
    "major_outage": 4,
}
MAX_SHARED_INCIDENTS = 500


def _rank(status: Any) -> int:
    return COMPONENT_RANK.get(str(status), 0)


def _through(shadow: store.Shadow | None) -> tuple[int, ...] | None:
    value = shadow.fields.get(THROUGH_KEY) if shadow is not None else None
    return tuple(value) if isinstance(value, list) and value else None


CLOSED_STATES = {State.CLOSED, State.CANCELED}
MAPPING_FAILURES = (MappingError, TransformError, TemplateError)


def correlation_key(incident_id: str) -> str:
    return f"{CORRELATION_PREFIX}{incident_id}"


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}; an empty nested value clears its object ({"a": None})."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        if value is None and "." in path:
            set_path(out, path.rsplit(".", 1)[0], None)
        else:
            set_path(out, path, value)
    return out


def _normal(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class Change:
    link: store.Link
    value: Any
    at: dt.datetime


@dataclass
class Outcome:
    """What one reconcile did."""

    writes: int = 0
    parked: list[str] = field(default_factory=list)
    retry_in: float | None = None  # some target failed retriably: look again after this long
    conflicts: int = 0

    def later(self, seconds: float) -> None:
        self.retry_in = seconds if self.retry_in is None else min(self.retry_in, seconds)


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
        self._create_jira: Condition = parse_condition(
            settings.create_jira_when, fields=CANONICAL_FIELDS
        )
        self._contexts: dict[tuple[str, str], TransformContext] = {}
        # The postmortem tracker plugs in here (set by the composition root): its work on
        # resolved incidents, the closure gate, and which incident owns a change request.
        self.tracker: Any = None
        # (system, object_type, remote_id) -> the incident a non-incident record belongs to.
        self.resolvers: list[Callable[[str, str, str], str | None]] = []

    def context(self, system: str, instance: str) -> TransformContext:
        key = (system, instance)
        if key not in self._contexts:
            self._contexts[key] = context_for(self.connectors[key])
        return self._contexts[key]

    # -- records not linked yet ---------------------------------------------------------------

    def adopt(self, system: str, instance: str, object_type: str, remote_id: str) -> str | None:
        """Link a remote record we have observed to an incident: the one whose correlation key
        it carries (we created it and crashed before linking), or a new incident made from it.
        Returns the incident id, or None when the record is not ours to follow."""
        with store.session_scope(self.db) as s:
            link = store.find_link(
                s, system=system, instance=instance, object_type=object_type, remote_id=remote_id
            )
            if link is not None:
                return link.incident_id
            obs = store.latest_observation(
                s, system=system, instance=instance, object_type=object_type, remote_id=remote_id
            )
            if obs is None:
                return None
            fields = dict(obs.fields)
            owner = self._stamped_incident(s, system, fields)
            if owner is None and system not in SOURCES:
                return None  # a status page incident someone made by hand: not ours
        data: dict[str, Any] | None = None
        if owner is None:
            mapping = self.mappings().get(system, instance)
            if mapping.object_type != object_type:
                return None  # e.g. a change request: not an incident of its own
            issue_type = (fields.get("issuetype") or {}).get("name")
            if system == "jira" and issue_type != self.settings.jira_issue_type:
                return None  # a task, a review, an action item: not an incident
            values = to_canonical(mapping, fields, self.context(system, instance))
            values["parent"] = self._parent_id(system, instance, object_type, values.get("parent"))
            incident = Incident.model_validate(_nested_values(values))
            data = incident.model_dump(mode="json")
        try:
            return self._link_adopted(system, instance, object_type, remote_id, owner, fields, data)
        except _AlreadyLinked as linked:
            return linked.incident_id

    def _link_adopted(
        self, system: str, instance: str, object_type: str, remote_id: str,
        owner: str | None, fields: Mapping[str, Any], data: Mapping[str, Any] | None,
    ) -> str:  # fmt: skip
        with store.session_scope(self.db) as s:
            if owner is None:
                assert data is not None
                row = store.create_incident(s, data)
                row.data = {**row.data, "id": row.id}
                owner = row.id
                reason = f"new incident from {system} {fields.get(REF_KEY) or remote_id}"
            else:
                reason = "recovered the link from the correlation key"
            key = str(fields.get(REF_KEY) or fields.get("number") or "")
            try:
                link = store.add_link(
                    s,
                    incident_id=owner,
                    system=system,
                    instance=instance,
                    object_type=object_type,
                    remote_id=remote_id,
                    remote_key=key,
                )
            except store.LinkConflict as conflict:
                # Someone linked it first: roll back the incident made here, use theirs.
                raise _AlreadyLinked(conflict.existing.incident_id) from conflict
            store.audit(
                s, action="create" if "new" in reason else "skip", incident_id=owner,
                system=system, instance=instance, remote_id=remote_id, reason=reason,
            )  # fmt: skip
            mark_dirty(s, incident_key(owner), reason="adopted")
            return link.incident_id

    def _stamped_incident(self, s: Any, system: str, fields: Mapping[str, Any]) -> str | None:
        """The incident a record's correlation stamp names, if we made the record."""
        stamps: list[str] = []
        if system == "servicenow":
            stamps = [str(fields.get("correlation_id") or "")]
        elif system == "jira":
            stamps = [str(x) for x in fields.get("labels") or []]
        elif system == "statuspage":
            meta = (fields.get("metadata") or {}).get("itsm_sync") or {}
            stamps = [str(meta.get("correlation_key") or "")]
        for stamp in stamps:
            if stamp.startswith(CORRELATION_PREFIX):
                incident_id = stamp[len(CORRELATION_PREFIX) :]
                if store.get_incident(s, incident_id) is not None:
                    return incident_id
        return None

    def _parent_id(self, system: str, instance: str, object_type: str, remote: Any) -> str:
        """The canonical id of a parent given as a remote id (ServiceNow ``parent_incident``);
        a parent we have not seen yet is fetched and adopted first."""
        if not remote:
            return ""
        with store.session_scope(self.db) as s:
            link = store.find_link(
                s, system=system, instance=instance, object_type=object_type, remote_id=str(remote)
            )
            if link is not None:
                return link.incident_id
        record = self.connectors[(system, instance)].get(object_type, str(remote))
        self.observe(record, source="poll")
        return self.adopt(system, instance, object_type, record.ref.id) or ""

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
        links = state.links
        seen = {
            link.id: (state.observations[link.id or 0], state.shadows[link.id or 0])
            for link in links
        }
        parked = state.parked
        waits = state.backoffs
        synced_comments = {
            (system, instance, remote) for _, system, instance, remote in state.comments
        }
        # Posted and confirmed; an intent row (still pending) means a post may have happened:
        # look on the target before posting again.
        comment_targets = {
            (canonical, system, instance)
            for canonical, system, instance, remote in state.comments
            if not remote.startswith(store.PENDING_COMMENT)
        }
        unsure_comments = {
            (canonical, system, instance)
            for canonical, system, instance, remote in state.comments
            if remote.startswith(store.PENDING_COMMENT)
        }
        row_version, data = state.version, state.data
        incident = Incident.model_validate({**data, "id": incident_id})

        # A. What changed on the sources since we last looked.
        changes: dict[str, list[Change]] = {}
        consumed: dict[int, tuple[dict[str, Any], list[int]]] = {}
        new_comments: list[tuple[Comment, store.Link, str]] = []
        for link in links:
            obs, shadow = seen[link.id or 0]
            target = f"{link.system}:{link.instance}"
            if link.system not in SOURCES or obs is None or target in parked:
                continue
            connector = self.connectors[(link.system, link.instance)]
            newer = shadow is None or list(obs.version) > list(shadow.version)
            with_comments = Capability.COMMENTS in connector.capabilities
            # What the observation itself tells of the comments (a Jira issue carries them; a
            # ServiceNow delivery says what its update wrote): no call for those.
            known = connector.known_comments(obs.fields, _through(shadow)) if with_comments else []
            if not newer and not known:
                continue  # our own echo, or nothing new
            if newer:
                try:
                    mapping = mappings.get(link.system, link.instance)
                    ctx = self.context(link.system, link.instance)
                    now_values = self._read(mapping, obs.fields, ctx, link)
                    before = self._read(mapping, nest(shadow.fields), ctx, link) if shadow else {}
                except (*MAPPING_FAILURES, ConnectorError, KeyError) as exc:
                    self._park(incident_id, target, exc, outcome, reading=True)
                    continue
                at = obs.remote_updated_at or obs.observed_at
                for name, value in now_values.items():
                    if shadow is None or _normal(before.get(name)) != _normal(value):
                        changes.setdefault(name, []).append(Change(link, value, at))
                # Every mapped path, as the system holds it now: what we read is consumed, and
                # what we only write is compared against what is really there.
                read_paths = {f.path for f in mapping.fields}
                consumed[link.id or 0] = (
                    {
                        **(shadow.fields if shadow else {}),
                        **{p: get_path(obs.fields, p) for p in read_paths},
                        THROUGH_KEY: list(obs.version),
                    },
                    list(obs.version),
                )
            if with_comments:
                remote_comments = known
                if remote_comments is None:
                    try:  # nothing told us which comments are new: read them
                        remote_comments = connector.comments(_ref(link))
                    except ConnectorError as exc:
                        self._fail(incident_id, target, exc, outcome)
                        consumed.pop(link.id or 0, None)
                        continue
                for rc in remote_comments:
                    if rc.origin or (link.system, link.instance, rc.id) in synced_comments:
                        continue
                    new_comments.append((_canonical_comment(rc, link), link, rc.id))

        # Merge, with the mapping's policy where two systems changed the same field.
        values = canonical_values(incident)
        audits: list[dict[str, Any]] = []
        for name, candidates in changes.items():
            winner = candidates[0]
            if len(candidates) > 1:
                winner = self._winner(name, candidates, mappings)
                outcome.conflicts += 1
                audits.append(
                    dict(
                        action="conflict", field=name,
                        before={_name(c.link): _jsonable(c.value) for c in candidates},
                        after=_jsonable(winner.value), system=winner.link.system,
                        reason=f"both changed {name}; {winner.link.system} wins",
                    )
                )  # fmt: skip
            if _normal(values.get(name)) != _normal(winner.value):
                audits.append(
                    dict(
                        action="update", field=name, before=_jsonable(values.get(name)),
                        after=_jsonable(winner.value), system=winner.link.system,
                        remote_id=winner.link.remote_id,
                        reason=f"changed in {_name(winner.link)}",
                    )
                )  # fmt: skip
                values[name] = winner.value
        merged = Incident.model_validate(
            {
                **incident.model_dump(),
                **_nested_values(values),
                "comments": [*incident.comments, *(c for c, _, _ in new_comments)],
            }
        )
        if self.tracker is not None:
            self.tracker.note(merged)  # the postmortem requirement latches
            terminal = mappings.terminal_states()
            if merged.state in terminal and incident.state not in terminal:
                merged = self._closure_gate(
                    merged, incident.state, changes.get("state", []), links, outcome
                )
        if merged != incident or consumed or new_comments:
            with store.session_scope(self.db) as s:
                # Raises StaleIncident if someone saved it since we read it (or deleted it).
                store.replace_incident_data(
                    s, incident_id, row_version, merged.model_dump(mode="json")
                )
                for link_id, (flat, version) in consumed.items():
                    store.set_shadow(s, link_id, flat, version)
                for comment, link, remote_id in new_comments:
                    store.link_comment(
                        s, incident_id=incident_id, canonical_id=comment.id, system=link.system,
                        instance=link.instance, remote_id=remote_id, direction="in",
                    )  # fmt: skip
                    comment_targets.add((comment.id, link.system, link.instance))
                for entry in audits:
                    store.audit(s, incident_id=incident_id, **entry)
        incident = merged

        # B. Bring every target in line with the incident.
        links_by_target = {(link.system, link.instance): link for link in links}
        for mapping in mappings:
            target = f"{mapping.system}:{mapping.instance}"
            if target in parked or (mapping.system, mapping.instance) not in self.connectors:
                continue
            if target in waits and waits[target] > store.utcnow():
                # Still backing off after a retriable failure: this target waits, the
                # incident's other targets go on, and the incident comes back when it may.
                outcome.later((waits[target] - store.utcnow()).total_seconds())
                continue
            existing = links_by_target.get((mapping.system, mapping.instance))
            try:
                if existing is None:
                    created = self._maybe_create(incident, mapping, links, outcome)
                    if created is None:
                        continue
                    links.append(created)
                    links_by_target[(mapping.system, mapping.instance)] = created
                    existing = created
                else:
                    shadow = seen.get(existing.id or 0, (None, None))[1]
                    fallback: tuple[dict[str, Any], list[int]] = (
                        shadow.fields if shadow else {},
                        [],
                    )
                    fresh_flat = consumed.get(existing.id or 0, fallback)[0]
                    self._push(incident, mapping, existing, fresh_flat, outcome)
                self._push_comments(
                    incident, mapping, existing, comment_targets, unsure_comments, outcome
                )
                if target in waits:  # it worked again: forget its failures
                    with store.session_scope(self.db) as s:
                        clear_backoff(s, incident_id, target)
            except (*MAPPING_FAILURES,) as exc:
                self._park(incident_id, target, exc, outcome)
            except ConnectorError as exc:
                self._fail(incident_id, target, exc, outcome)
        self._attach_child(incident, links, comment_targets, outcome)
        if self.tracker is not None and incident.state in (State.RESOLVED, State.CLOSED):
            try:
                self.tracker.work(incident, links)
            except ConnectorError as exc:
                self._fail(incident_id, "postmortem", exc, outcome)
        return outcome

    def _closure_gate(
        self,
        merged: Incident,
        before: State,
        changes: list[Change],
        links: list[store.Link],
        outcome: Outcome,
    ) -> Incident:
        """A move into a terminal state (closed, canceled: whatever the mappings name): allowed
        only if the postmortem gate is open; otherwise the incident stays in the state it had
        (the push writes it back where it was ended) and every system gets an internal note
        that says exactly what is missing."""
        try:
            self.tracker.work(merged, links)  # items and change requests as of now
        except ConnectorError as exc:
            log.warning("postmortem work before the gate failed: %s", exc)
        gate = self.tracker.gate(merged)
        if gate.open:
            return merged
        by = ", ".join(sorted({f"{c.link.system} {c.link.remote_key}" for c in changes})) or "?"
        note = self.tracker.record_blocked(merged, gate, by, before=before.value)
        comment = Comment(
            id=f"gate:{merged.id}:{len(merged.comments)}",
            body=note,
            visibility=Visibility.INTERNAL,
            origin="itsm-sync:closure-gate",
            created_at=dt.datetime.now(dt.UTC),
        )
        return merged.model_copy(update={"state": before, "comments": (*merged.comments, comment)})

    # -- reading ------------------------------------------------------------------------------

    def _read(
        self, mapping: FieldMap, fields: Mapping[str, Any], ctx: TransformContext, link: store.Link
    ) -> dict[str, Any]:
        values = to_canonical(mapping, fields, ctx)
        if "labels" in values:  # our correlation stamp is not a label people use
            values["labels"] = tuple(
                x for x in values["labels"] or () if not str(x).startswith(CORRELATION_PREFIX)
            )
        if "parent" in values:
            values["parent"] = self._parent_id(
                link.system, link.instance, link.object_type, values["parent"]
            )
        return values

    def _winner(self, name: str, candidates: list[Change], mappings: MappingSet) -> Change:
        for c in candidates:
            policies = {
                f.policy for f in mappings.get(c.link.system, c.link.instance).for_field(name)
            }
            for policy in policies:
                if policy.startswith("owner:"):
                    owner = policy.split(":", 1)[1]
                    for candidate in candidates:
                        if candidate.link.system == owner:
                            return candidate
        return max(candidates, key=lambda c: c.at)

    # -- writing ------------------------------------------------------------------------------

    def _desired(self, incident: Incident, mapping: FieldMap) -> dict[str, Any]:
        """The flat {path: value} this system should hold for ``incident``."""
        parent_remote = ""
        if incident.parent:
            with store.session_scope(self.db) as s:
                for link in store.links_of(s, incident.parent):
                    if (link.system, link.instance) == (mapping.system, mapping.instance):
                        parent_remote = link.remote_id
        view = incident.model_copy(update={"parent": parent_remote})
        nested = from_canonical(mapping, view, self.context(mapping.system, mapping.instance))
        flat: dict[str, Any] = {}
        for f in mapping.fields:
            if f.writes:
                value = get_path(nested, f.path)
                present = _paths(nested)
                if value is not None or f.path in present or f.path.rsplit(".", 1)[0] in present:
                    flat[f.path] = value
        if mapping.system == "jira" and "labels" in flat:  # keep the correlation stamp
            flat["labels"] = sorted({*(flat["labels"] or []), correlation_key(incident.id)})
        if mapping.system == "statuspage" and isinstance(flat.get("components"), dict):
            flat["components"] = self._shared_components(incident, mapping, flat["components"])
        return flat

    def _shared_components(
        self, incident: Incident, mapping: FieldMap, mine: dict[str, Any]
    ) -> dict[str, Any]:
        """A component's status is page-wide: while another open public incident affects it,
        it shows the worse of the two (else resolving one outage would show the component
        operational in the middle of the other)."""
        out = dict(mine)
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
        ctx = self.context(mapping.system, mapping.instance)
        for row in rows:
            try:
                other = Incident.model_validate({**row.data, "id": row.id})
                if other.state in (*CLOSED_STATES, State.RESOLVED) or not applies(mapping, other):
                    continue
                theirs = get_path(from_canonical(mapping, other, ctx), "components") or {}
            except (*MAPPING_FAILURES, ConnectorError, ValueError):
                continue  # that incident's own reconcile reports what is wrong with it
            for component, status in dict(theirs).items():
                if component in out and _rank(status) > _rank(out[component]):
                    out[component] = status
        return out

    def _same(self, mapping: FieldMap, path: str, wanted: Any, held: Any, link: store.Link) -> bool:
        if _normal(wanted) == _normal(held):
            return True
        readers = [f for f in mapping.fields if f.reads and f.path == path]
        if not readers or held is None:
            return False
        ctx = self.context(mapping.system, mapping.instance)
        sub = FieldMap(mapping.system, mapping.instance, mapping.object_type, tuple(readers))
        try:
            a = to_canonical(sub, nest({path: wanted}), ctx)
            b = to_canonical(sub, nest({path: held}), ctx)
        except (*MAPPING_FAILURES, ConnectorError):
            return False
        return _normal(a) == _normal(b)

    def _state_path(self, mapping: FieldMap) -> str | None:
        for f in mapping.fields:
            if f.canonical == "state" and f.writes:
                return f.path
        return None

    def _maybe_create(
        self, incident: Incident, mapping: FieldMap, links: list[store.Link], outcome: Outcome
    ) -> store.Link | None:
        system = mapping.system
        if incident.state in CLOSED_STATES or incident.state is State.RESOLVED:
            return None  # never open new records for finished incidents
        if incident.parent and system != "servicenow":
            return None  # a duplicate ticket attaches to its parent's records instead
        if system == "servicenow":
            wanted = self.settings.create_servicenow_for_jira and any(
                link.system == "jira" for link in links
            )
        elif system == "jira":
            wanted = self._create_jira.evaluate(canonical_values(incident))
        else:
            wanted = applies(mapping, incident)
        if not wanted or not applies(mapping, incident):
            return None
        connector = self.connectors[(system, mapping.instance)]
        desired = self._desired(incident, mapping)
        state_path = self._state_path(mapping)
        fields = dict(desired)
        state = fields.pop(state_path, None) if state_path and system != "statuspage" else None
        if system == "jira":
            fields["issuetype"] = {"name": self.settings.jira_issue_type}
        record = connector.create(
            mapping.object_type, nest(fields), correlation_key=correlation_key(incident.id)
        )
        held = dict(fields)
        version = list(record.version)
        # The record comes back from a read after the create. If someone changed it meanwhile
        # (an engineer moved the new issue at once), that read holds their change: as the
        # shadow it would pass for ours, and our push would revert it. Then the shadow holds
        # what we created (in its first status) with no version, and the next pass reads
        # their change in.
        touched = isinstance(connector, JiraConnector) and record.fields.get(
            "updated"
        ) != record.fields.get("created")
        if state_path and system != "statuspage":
            held[state_path] = get_path(record.fields, state_path)
            if touched and isinstance(connector, JiraConnector):
                held[state_path] = connector.created_status(record)
        if touched:
            version = []
            with store.session_scope(self.db) as s:
                mark_dirty(s, incident_key(incident.id), reason=f"{system} changed at creation")
        with store.session_scope(self.db) as s:
            try:
                link = store.add_link(
                    s, incident_id=incident.id, system=system, instance=mapping.instance,
                    object_type=mapping.object_type, remote_id=record.ref.id,
                    remote_key=record.ref.key, url=record.url,
                )  # fmt: skip
            except store.LinkConflict as conflict:
                return conflict.existing
            if touched:
                store.record_observation(
                    s, system=system, instance=mapping.instance, object_type=mapping.object_type,
                    remote_id=record.ref.id, version=list(record.version),
                    fields={**record.fields, REF_KEY: record.ref.key}, source="poll",
                    remote_updated_at=record.updated_at,
                )  # fmt: skip
            store.set_shadow(s, link.id or 0, held, version)
            store.audit(
                s, action="create", incident_id=incident.id, system=system,
                instance=mapping.instance, remote_id=record.ref.id, after=_jsonable(fields),
                reason=f"created {record.ref.key or record.ref.id} for the incident",
            )  # fmt: skip
        outcome.writes += 1
        if state is not None and not touched:
            self._push(incident, mapping, link, held, outcome)
        return link

    def _push(
        self,
        incident: Incident,
        mapping: FieldMap,
        link: store.Link,
        held: dict[str, Any],
        outcome: Outcome,
    ) -> None:
        desired = self._desired(incident, mapping)
        patch = {
            path: value
            for path, value in desired.items()
            if not self._same(mapping, path, value, held.get(path), link)
        }
        if mapping.system == "statuspage" and not applies(mapping, incident):
            patch = {}  # no longer public: leave the page alone
        if not patch:
            return
        connector = self.connectors[(mapping.system, mapping.instance)]
        ref = _ref(link)
        state_path = self._state_path(mapping)
        state = patch.pop(state_path) if state_path and state_path in patch else None
        record: RemoteRecord | None = None
        defaults: dict[str, Any] = {}
        if state is not None and mapping.system == "servicenow":
            extra = dict(patch)
            if state in ("6", "7"):
                extra.setdefault("close_code", desired.get("close_code") or "Solution provided")
                extra.setdefault(
                    "close_notes",
                    desired.get("close_notes")
                    or f"Resolved; synced by itsm-sync from {incident.title!r}",
                )
            record = connector.transition(ref, str(state), nest(extra))
            written: dict[str, Any] = {**patch, str(state_path): state}
            # Close code and notes filled in only because ServiceNow wants them on a resolve
            # are not the incident's: left out of the shadow, they are read in next time
            # instead of being "brought in line" (blanked) by the next pass.
            defaults = {
                k: extra[k] for k in ("close_code", "close_notes") if k in extra and k not in patch
            }
        elif state is not None and mapping.system == "statuspage":
            record = connector.transition(ref, str(state), nest(patch))
            written = {**patch, str(state_path): state}
        else:
            if patch:
                record = connector.update(ref, nest(patch))
            if state is not None:
                record = connector.transition(ref, str(state), {})
            written = {**patch, **({state_path: state} if state is not None and state_path else {})}
        outcome.writes += 1
        assert record is not None  # the patch was not empty
        # The record we got back may also hold edits others made since we last looked (a
        # title, a comment), and its version covers them: as the shadow's version it would
        # make them pass for the echo of our own write, lost. So a source's record becomes
        # its newest observation, and the shadow's version stays empty: the next pass (one
        # comment read) compares it field by field and picks up anything that isn't ours.
        source = link.system in SOURCES
        version = [] if source else list(record.version)
        seen_through = held.get(THROUGH_KEY)
        if (
            mapping.system == "servicenow"
            and isinstance(seen_through, list)
            and len(seen_through) == 1
            and tuple(record.version) == (seen_through[0] + 1,)
        ):
            # sys_mod_count moved by one: the only update since every comment was seen is our
            # PATCH (one call), so the echo pass needs no journal read.
            held = {**held, THROUGH_KEY: list(record.version)}
        if source:  # marked on its own, before: one row lock per transaction, no lock cycles
            with store.session_scope(self.db) as s:
                mark_dirty(s, incident_key(incident.id), reason=f"wrote {link.system}")
        with store.session_scope(self.db) as s:
            if source:
                store.record_observation(
                    s, system=link.system, instance=link.instance, object_type=link.object_type,
                    remote_id=link.remote_id, version=list(record.version),
                    fields={**record.fields, REF_KEY: record.ref.key}, source="poll",
                    remote_updated_at=record.updated_at,
                )  # fmt: skip
            store.set_shadow(s, link.id or 0, {**held, **written}, version)
            for path, value in {**written, **defaults}.items():
                store.audit(
                    s, action="transition" if path == state_path else "update",
                    incident_id=incident.id, system=mapping.system, instance=mapping.instance,
                    remote_id=link.remote_id, field=path, before=_jsonable(held.get(path)),
                    after=_jsonable(value), reason="brought in line with the incident",
                )  # fmt: skip

    def _push_comments(
        self,
        incident: Incident,
        mapping: FieldMap,
        link: store.Link,
        done: set[tuple[str, str, str]],
        unsure: set[tuple[str, str, str]],
        outcome: Outcome,
    ) -> None:
        """Post each comment the target lacks. An intent row is committed before each post
        and confirmed after it, so only a post that may have happened (a crash or an error
        in between) costs a look at the target's comments first; a normal post costs none."""
        connector = self.connectors[(mapping.system, mapping.instance)]
        if mapping.system not in SOURCES or Capability.COMMENTS not in connector.capabilities:
            return  # nothing but the public message ever reaches the status page
        pending = [
            c for c in incident.comments
            if (c.id, mapping.system, mapping.instance) not in done
            and not c.origin.startswith(f"{mapping.system}:")
        ]  # fmt: skip
        if not pending:
            return
        existing: list[RemoteComment] | None = None
        for comment in pending:
            if comment.visibility is Visibility.INTERNAL and (
                Capability.INTERNAL_COMMENTS not in connector.capabilities
            ):
                continue
            match: RemoteComment | None = None
            if (comment.id, mapping.system, mapping.instance) in unsure:
                if existing is None:  # it may be there already: never post twice
                    existing = connector.comments(_ref(link))
                match = next(
                    (r for r in existing if r.origin == comment.origin and r.body == comment.body),
                    None,
                )
            if match is None:
                with store.session_scope(self.db) as s:
                    store.link_comment(
                        s, incident_id=incident.id, canonical_id=comment.id,
                        system=mapping.system, instance=mapping.instance,
                        remote_id=store.pending_comment_id(comment.id), direction="out",
                    )  # fmt: skip
                match = connector.add_comment(
                    _ref(link),
                    comment.body,
                    visibility=RemoteVisibility(comment.visibility.value),
                    origin=comment.origin,
                )
                outcome.writes += 1
            with store.session_scope(self.db) as s:
                store.confirm_comment(
                    s, system=mapping.system, instance=mapping.instance,
                    canonical_id=comment.id, remote_id=match.id,
                )  # fmt: skip
                store.audit(
                    s, action="comment", incident_id=incident.id, system=mapping.system,
                    instance=mapping.instance, remote_id=link.remote_id,
                    after={"visibility": comment.visibility.value, "origin": comment.origin},
                    reason=f"{comment.visibility.value} comment from {comment.origin}",
                )  # fmt: skip
            done.add((comment.id, mapping.system, mapping.instance))

    def _attach_child(
        self,
        incident: Incident,
        links: list[store.Link],
        done: set[tuple[str, str, str]],
        outcome: Outcome,
    ) -> None:
        """A duplicate ticket shows up on its parent's Jira issue, with the count so far.

        The marker row is committed first (its id orders the duplicates, so two children
        reconciled at once still count 1, 2, 3), then the comment is posted, then the marker
        gets the comment's id; a crash in between posts nothing twice (we look first)."""
        if not incident.parent:
            return
        marker = f"child:{incident.id}"
        pending = f"pending:{incident.id}"
        with store.session_scope(self.db) as s:
            jira = next((x for x in store.links_of(s, incident.parent) if x.system == "jira"), None)
            if jira is None:
                return
            mine = s.exec(
                select(store.CommentLink).where(
                    col(store.CommentLink.incident_id) == incident.parent,
                    col(store.CommentLink.canonical_id) == marker,
                )
            ).first()
            if mine is not None and not mine.remote_id.startswith("pending:"):
                return
            if mine is None:
                store.link_comment(
                    s, incident_id=incident.parent, canonical_id=marker, system="jira",
                    instance=jira.instance, remote_id=pending, direction="out",
                )  # fmt: skip
        with store.session_scope(self.db, readonly=True) as s:
            markers = s.exec(
                select(store.CommentLink)
                .where(
                    col(store.CommentLink.incident_id) == incident.parent,
                    col(store.CommentLink.canonical_id).startswith("child:"),
                )
                .order_by(col(store.CommentLink.id))
            ).all()
            ordinal = 1 + [m.canonical_id for m in markers].index(marker)
        own = next((link for link in links if link.system == "servicenow"), None)
        name = own.remote_key if own else incident.id
        connector = self.connectors.get(("jira", jira.instance))
        if connector is None:
            return
        text = (
            f"Duplicate ticket {name} attached to this incident "
            f"({ordinal} duplicate ticket(s) so far): {incident.title}"
        )
        try:
            existing = connector.comments(_ref(jira))
            posted = next((c for c in existing if c.body == text), None)
            if posted is None:
                posted = connector.add_comment(
                    _ref(jira), text, visibility=RemoteVisibility.INTERNAL,
                    origin=f"servicenow:{name}",
                )  # fmt: skip
                outcome.writes += 1
        except ConnectorError as exc:
            self._fail(incident.id, f"jira:{jira.instance}", exc, outcome)
            return
        with store.session_scope(self.db) as s:
            s.exec(
                update(store.CommentLink)
                .where(
                    col(store.CommentLink.incident_id) == incident.parent,
                    col(store.CommentLink.canonical_id) == marker,
                )
                .values(remote_id=posted.id)
            )
            store.audit(
                s, action="comment", incident_id=incident.parent, system="jira",
                instance=jira.instance, remote_id=jira.remote_id,
                reason=f"duplicate {name} attached ({ordinal} so far)",
            )  # fmt: skip

    # -- failures -----------------------------------------------------------------------------

    def _park(
        self, incident_id: str, target: str, exc: Exception, outcome: Outcome, reading: bool = False
    ) -> None:
        remote = exc.remote_message if isinstance(exc, ConnectorError) else ""
        status = exc.status if isinstance(exc, ConnectorError) else None
        what = "reading from" if reading else "writing to"
        message = f"{what} {target}: {exc}"
        log.warning(
            "incident %s parked for %s: %s", incident_id, target, message,
            extra={"incident_id": incident_id, "target": target},
        )  # fmt: skip
        with store.session_scope(self.db) as s:
            store.park(
                s, incident_id=incident_id, target=target, error=message,
                remote_message=remote, status=status,
            )  # fmt: skip
            store.audit(
                s,
                action="park",
                incident_id=incident_id,
                system=target.split(":")[0],
                reason=message,
            )
        outcome.parked.append(target)

    def _fail(self, incident_id: str, target: str, exc: ConnectorError, outcome: Outcome) -> None:
        if isinstance(exc, Retriable | Conflict):
            with store.session_scope(self.db) as s:
                delay = next_backoff(s, incident_id, target, str(exc))
            if isinstance(exc, RateLimited):
                delay = max(delay, exc.retry_after)
            log.info(
                "incident %s: %s failed retriably (%s); again in %.1fs", incident_id, target,
                exc, delay, extra={"incident_id": incident_id, "target": target},
            )  # fmt: skip
            outcome.later(delay)
            return
        self._park(incident_id, target, exc, outcome)


def _name(link: store.Link) -> str:
    return f"{link.system} {link.remote_key or link.remote_id}"


def _ref(link: store.Link) -> RemoteRef:
    return RemoteRef(link.system, link.instance, link.object_type, link.remote_id, link.remote_key)


def _paths(nested: Mapping[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in nested.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, Mapping):
            out |= _paths(value, path + ".")
    return out


def _nested_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat canonical values (``resolution.code``) as Incident fields; None drops the field."""
    out: dict[str, Any] = {}
    resolution: dict[str, Any] = {}
    for name, value in values.items():
        if name.startswith("resolution."):
            resolution[name.split(".", 1)[1]] = value or ""
        elif name in ("severity",) and value in ("", None):
            out[name] = None
        elif value is None and not name.endswith("_at"):
            continue
        else:
            out[name] = value
    if resolution:
        out["resolution"] = resolution
    return out


def _canonical_comment(rc: RemoteComment, link: store.Link) -> Comment:
    return Comment(
        id=f"{link.system}:{link.instance}:{rc.id}",
        body=rc.body,
        visibility=Visibility(rc.visibility.value),
        author=rc.author,
        origin=f"{link.system}:{link.remote_key or link.remote_id}",
        created_at=rc.created_at,
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
