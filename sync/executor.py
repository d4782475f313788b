"""Carrying out a plan: the only code that writes to a remote system.

Each operation is idempotent, so a crash or a lost answer at any point is made good by running
the plan again from the newest state:

- a create first looks for a record with the incident's correlation key (the connector's
  find-before-create) and, when the store already has a link for the target, uses it;
- an update writes the same values again;
- a transition to a state the record is already in is a success, also when the remote refused
  a step because an earlier try of it had been applied and its answer lost (a false park);
- a comment is recorded as an intent before it is posted and confirmed after, so one whose
  fate is unknown is looked for on the target before it is posted again.

After each write the executor works out which of the record's updates were its own — the
ServiceNow update counter moved by exactly one, or the Jira changelog entries that set what it
wrote — and keeps their side effects (a resolution Jira filled in, a priority ServiceNow
derived) in the shadow, as ours: only someone else's update is a change. Updates by others that
landed between our read and our write are kept with the record's observation, dated, so the
next pass weighs them per field (last writer wins) instead of losing them to our write.

Remote writes cannot be inside a database transaction, so the order is: (A) commit the merged
incident and the consumed shadows; (B) per target: write remotely, then commit its shadow and
an audit row.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select, update

from connectors.base import (
    FIELD_CHANGES_KEY,
    OUR_UPDATES_KEY,
    Capability,
    Connector,
    FieldChange,
    RemoteComment,
    RemoteRecord,
    RemoteRef,
    field_changes_of,
    join_history,
)
from connectors.base import Visibility as RemoteVisibility
from connectors.errors import Conflict, ConnectorError, Fatal, RateLimited, Retriable
from mapping.engine import canonical_values, get_path
from mapping.model import Incident
from sync import store
from sync.planner import (
    INTENT_KEY,
    MAPPING_FAILURES,
    MAX_OURS,
    OURS_KEY,
    REF_KEY,
    THEIRS_KEY,
    THROUGH_KEY,
    Create,
    Join,
    Merged,
    Op,
    Park,
    Post,
    Record,
    Target,
    Transition,
    Update,
    jsonable,
    nest,
    normal,
    pending_theirs,
)
from sync.queue import clear_backoff, incident_key, mark_dirty, next_backoff

log = logging.getLogger("itsm_sync.executor")
WRITES_KEY = "_writes_at"  # in a shadow: when we wrote the record lately
LOOP_LIMIT = 30
LOOP_SECONDS = 60


class WriteLoop(Fatal):
    """The same record keeps being written: parked, not written forever."""


@dataclass
class Outcome:
    """What one reconcile did."""

    writes: int = 0
    parked: list[str] = field(default_factory=list)
    retry_in: float | None = None  # some target failed retriably: look again after this long
    conflicts: int = 0
    # A write's answer may hold an edit someone made between our read and our write (or
    # cannot tell): the incident is due again as soon as this pass is finished.
    again: bool = False

    def later(self, seconds: float) -> None:
        self.retry_in = seconds if self.retry_in is None else min(self.retry_in, seconds)


@dataclass
class _Held:
    """A record as this pass knows it: its link, what it holds, and its newest version."""

    link: store.Link
    held: dict[str, Any]
    version: list[int]
    observed: Mapping[str, Any]
    history: list[FieldChange]


def ref_of(link: store.Link) -> RemoteRef:
    return RemoteRef(link.system, link.instance, link.object_type, link.remote_id, link.remote_key)


def keep_history(*groups: list[FieldChange]) -> list[dict[str, Any]]:
    """Field changes as an observation keeps them: each once, the newest MAX_HISTORY."""
    return [c.to_json() for c in join_history(*groups)]


class Executor:
    """Runs one incident's plan through the connectors and records what happened."""

    def __init__(
        self,
        db: Engine,
        connectors: Mapping[tuple[str, str], Connector],
        incident_id: str,
        outcome: Outcome,
    ) -> None:
        self.db = db
        self.connectors = connectors
        self.incident_id = incident_id
        self.outcome = outcome
        self.values: dict[str, Any] = {}  # the incident's canonical values, as being written
        # Links whose first write's intent was noted with the merge (one transaction fewer).
        self.noted: set[int] = set()
        # Creates whose intent was recorded with the merge: whether one was tried before.
        self.tried: dict[tuple[str, str], bool] = {}

    # -- A: the merge ------------------------------------------------------------------------

    @staticmethod
    def intents(
        ops: list[Op], targets: Mapping[tuple[str, str], Target], held: Mapping[Any, _Held]
    ) -> dict[int, dict[str, Any]]:
        """Per linked source record this pass writes to, what it will write (every update and
        transition of the pass): noted before the first write, so that a write whose answer
        never comes is still known as ours (:meth:`sync.planner.Record.intended` only counts
        the values the record's history shows were made)."""
        values: dict[int, dict[str, Any]] = {}
        for op in ops:
            target, record = targets.get(op.target), held.get(op.target)
            if target is None or not target.source or record is None or record.link.id is None:
                continue
            if isinstance(op, Update):
                values.setdefault(record.link.id, {}).update(op.fields)
            elif isinstance(op, Transition):
                values.setdefault(record.link.id, {})[op.path] = op.value
        at = store.utcnow().isoformat()
        return {k: {"at": at, "values": jsonable(v)} for k, v in values.items() if v}

    def save(
        self,
        merged: Merged | None,
        version: int,
        intents: Mapping[int, dict[str, Any]],
        creates: list[Create] | None = None,
    ) -> None:
        """Commit the merged incident, the consumed shadows, the comments taken in, the audit
        of the merge and the intents of the writes and creates to come, in one transaction
        (StaleIncident if someone saved it since). Without a merge: the intents alone."""
        if merged is None and not intents and not creates:
            return
        with store.session_scope(self.db) as s:
            for op in creates or []:
                system, instance = op.target
                self.tried[op.target] = store.create_intent(
                    s, incident_id=self.incident_id, system=system, instance=instance
                )
            consumed = merged.consumed if merged is not None else {}
            for link_id, intent in intents.items():
                if link_id in consumed:
                    continue
                noted = store.get_shadow(s, link_id)
                if noted is not None:
                    store.set_shadow(
                        s, link_id, {**noted.fields, INTENT_KEY: intent}, noted.version
                    )
                    self.noted.add(link_id)
            if merged is None:
                return
            store.replace_incident_data(
                s, self.incident_id, version, merged.incident.model_dump(mode="json")
            )
            for link_id, (flat, seen) in merged.consumed.items():
                if link_id in intents:
                    flat = {**flat, INTENT_KEY: intents[link_id]}
                    self.noted.add(link_id)
                store.set_shadow(s, link_id, flat, seen)
            for comment, record, remote_id in merged.new_comments:
                store.link_comment(
                    s, incident_id=self.incident_id, canonical_id=comment.id,
                    system=record.ref.system, instance=record.ref.instance, remote_id=remote_id,
                    direction="in",
                )  # fmt: skip
            for entry in merged.audits:
                store.audit(s, incident_id=self.incident_id, **entry)

    # -- B: per target -----------------------------------------------------------------------

    def run(
        self,
        incident: Incident,
        ops: list[Op],
        targets: Mapping[tuple[str, str], Target],
        records: dict[tuple[str, str], _Held],
        backoffs: Mapping[str, dt.datetime],
    ) -> None:
        """Each target's operations in order; a target that fails stops there (backing off or
        parked), the others go on."""
        self.values = canonical_values(incident)
        by_target: dict[tuple[str, str], list[Op]] = {}
        for op in ops:
            by_target.setdefault(op.target, []).append(op)
        for key, target_ops in by_target.items():
            target = targets.get(key)
            name = f"{key[0]}:{key[1]}"
            try:
                self._run_target(target, target_ops, records)
                if name in backoffs:  # it worked again: forget its failures
                    with store.session_scope(self.db) as s:
                        clear_backoff(s, self.incident_id, name)
            except MAPPING_FAILURES as exc:
                self.park(name, exc)
            except ConnectorError as exc:
                self.fail(name, exc)

    def _run_target(
        self, target: Target | None, ops: list[Op], records: dict[tuple[str, str], _Held]
    ) -> None:
        pending: Update | None = None
        for op in ops:
            if isinstance(op, Park):
                self.park(f"{op.target[0]}:{op.target[1]}", op.error or Fatal(op.reason))
                return
            if isinstance(op, Join):
                self.join(op)
                continue
            assert target is not None
            if isinstance(op, Create):
                created = self.create(op, target)
                if created is not None:
                    records[op.target] = created
                continue
            held = records.get(op.target)
            if held is None:
                return  # its record could not be made: nothing to write to
            connector = self.connectors[op.target]
            if isinstance(op, Update):
                if Capability.FIELDS_ON_TRANSITION in connector.capabilities:
                    pending = op  # goes with the transition that follows, if one does
                    continue
                self.write(target, held, fields=op.fields, reason=op.reason)
            elif isinstance(op, Transition):
                fields = dict(pending.fields) if pending else {}
                pending = None
                self.write(
                    target, held, fields=fields, state=(op.path, op.value), known=op.known,
                    reason=op.reason,
                )  # fmt: skip
            elif isinstance(op, Post):
                if pending is not None:
                    self.write(target, held, fields=pending.fields, reason=pending.reason)
                    pending = None
                self.post(op, held)
        if pending is not None:
            held = records[pending.target]
            self.write(target, held, fields=pending.fields, reason=pending.reason)  # type: ignore[arg-type]

    # -- writes ------------------------------------------------------------------------------

    def create(self, op: Create, target: Target) -> _Held | None:
        """Create the record (found instead if it exists), link it, then move it to its state
        unless someone already moved it (then the next pass weighs their move)."""
        system, instance = op.target
        connector = self.connectors[op.target]
        # The first attempt ever (its intent committed first) creates without looking for an
        # earlier one: one read fewer per created record (docs/performance.md); any other
        # attempt, and every retry of this one, looks for the correlation key first.
        tried = self.tried.pop(op.target, None)
        if tried is None:  # not recorded with the merge
            with store.session_scope(self.db) as s:
                tried = store.create_intent(
                    s, incident_id=self.incident_id, system=system, instance=instance
                )
        record = connector.create(
            op.object_type, nest(op.fields), correlation_key=op.correlation_key, look_first=tried
        )
        human = field_changes_of(record.fields)  # all after its creation: nothing was ours yet
        read_paths = {f.path for f in target.mapping.fields if f.reads}
        as_created = _revert(record.fields, human)
        held: dict[str, Any] = {
            **{p: get_path(as_created, p) for p in read_paths},
            **dict(op.fields),
            THROUGH_KEY: list(record.version),
        }
        if op.state_path and op.state_path not in op.fields:
            held[op.state_path] = get_path(as_created, op.state_path)
        touched = bool(human)
        version = [] if touched else list(record.version)
        with store.session_scope(self.db) as s:
            try:
                link = store.add_link(
                    s, incident_id=self.incident_id, system=system, instance=instance,
                    object_type=op.object_type, remote_id=record.ref.id,
                    remote_key=record.ref.key, url=record.url,
                )  # fmt: skip
            except store.LinkConflict:
                return None  # another worker linked one first: its pass writes to it
            self._observe(s, record, human)
            store.set_shadow(s, link.id or 0, held, version)
            store.audit(
                s, action="create", incident_id=self.incident_id, system=system,
                instance=instance, remote_id=record.ref.id, after=jsonable(dict(op.fields)),
                reason=f"created {record.ref.key or record.ref.id} for the incident",
            )  # fmt: skip
            if touched:  # someone changed it at once: the next pass weighs their change
                mark_dirty(
                    s, incident_key(self.incident_id), reason=f"{system} changed at creation"
                )
        self.outcome.writes += 1
        out = _Held(link, held, list(record.version), dict(record.fields), human)
        moves = op.state is not None and op.state_path and not touched
        if moves and normal(held.get(str(op.state_path))) != normal(op.state):
            self.write(target, out, state=(str(op.state_path), op.state), known=dict(op.fields))
        return out

    def write(
        self,
        target: Target,
        held: _Held,
        *,
        fields: Mapping[str, Any] | None = None,
        state: tuple[str, Any] | None = None,
        known: Mapping[str, Any] | None = None,
        reason: str = "brought in line with the incident",
    ) -> None:
        """One write (an update, a transition, or both where the system takes both at once),
        then the shadow, the observation and the audit."""
        link = held.link
        connector = self.connectors[(link.system, link.instance)]
        ref = ref_of(link)
        fields = dict(fields or {})
        written = dict(fields)
        if state is not None:
            written[state[0]] = state[1]
        if link.id in self.noted:  # noted with the merge, before this pass's first write
            self.noted.discard(link.id)
        elif target.source:  # noted first: if its answer never comes, the write is still ours
            intent = {"at": store.utcnow().isoformat(), "values": jsonable(written)}
            with store.session_scope(self.db) as s:
                noted = store.get_shadow(s, link.id or 0)
                if noted is not None:
                    store.set_shadow(
                        s, link.id or 0, {**noted.fields, INTENT_KEY: intent}, noted.version
                    )
        if state is None:
            after = connector.update(ref, nest(fields))
        else:
            path, value = state
            step = (lambda to: self._note_step(link.id or 0, path, to)) if target.source else None
            after = self._transition(connector, ref, path, value, fields, known, step)
        source = target.source
        ours, theirs, alone, exact = self._attribute(connector, ref, held, after, written)
        read_paths = {f.path for f in target.mapping.fields if f.reads}
        shadow = {**held.held, **written}
        shadow.pop(INTENT_KEY, None)  # answered: recorded below
        touched_fields = {c.field for c in ours}
        for path in read_paths - set(written):
            # What our update did besides what we asked (a resolution Jira filled in, the
            # priority ServiceNow derived) is ours, not a change by someone; except where the
            # incident has no value of its own (close notes ServiceNow's resolve wanted): then
            # it is read in on the next pass, rather than blanked as "not the incident's".
            if alone:  # ours was the only update since we read it: whatever moved is ours
                moved = normal(get_path(held.observed, path)) != normal(
                    get_path(after.fields, path)
                )
            else:
                moved = path.split(".", 1)[0] in touched_fields
            if not moved:
                continue
            names = {f.canonical for f in target.mapping.fields if f.reads and f.path == path}
            if any(self.values.get(name) not in (None, "", ()) for name in names):
                shadow[path] = get_path(after.fields, path)
        mine = sorted({c.update for c in ours})
        shadow[OURS_KEY] = [*held.held.get(OURS_KEY, []), *mine][-MAX_OURS:]
        if theirs:  # kept until a pass weighed them (see THEIRS_KEY)
            shadow[THEIRS_KEY] = keep_history(pending_theirs(held.held), theirs)
        # A circuit breaker: a record written over and over (two values that read the same to
        # the mapping but never compare equal, a system that changes what we write) is parked
        # after LOOP_LIMIT writes in LOOP_SECONDS, rather than written forever.
        now = store.utcnow()
        recent = [
            at for at in held.held.get(WRITES_KEY, [])
            if (now - dt.datetime.fromisoformat(at)).total_seconds() < LOOP_SECONDS
        ]  # fmt: skip
        shadow[WRITES_KEY] = [*recent, now.isoformat()][-LOOP_LIMIT:]
        looping = len(recent) + 1 >= LOOP_LIMIT
        through = held.held.get(THROUGH_KEY)
        # No comment came in between only if nobody else's update did: "theirs" lists field
        # changes, and a comment-only update changes no field (a desk's work note between our
        # read and our write was never read, chaos seed 21), so it must be known exactly.
        if (
            not theirs
            and (alone or exact)
            and isinstance(through, list)
            and through == held.version
        ):
            shadow[THROUGH_KEY] = list(after.version)
        history = [*held.history, *ours, *theirs]
        # A source's record may hold others' edits (their updates, a comment): the next pass
        # compares it field by field (version left empty); an output-only one is ours alone.
        version = [] if source else list(after.version)
        if source and (theirs or not exact):
            # The answer we store below holds someone's edit (or may): their own delivery would
            # then be "not newer" and change nothing, so the next pass must weigh it. Due again
            # when this pass finishes (the worker's finishing transaction; a crash before it
            # leaves the claim, which comes back the same way).
            self.outcome.again = True
        with store.session_scope(self.db) as s:
            if source:
                # An answer that shows someone's edit keeps it even where the echo of this
                # write, the same version with only our update, was stored first.
                self._observe(s, after, history, join=bool(theirs))
            store.set_shadow(s, link.id or 0, shadow, version)
            for path, value in written.items():
                store.audit(
                    s, action="transition" if state and path == state[0] else "update",
                    incident_id=self.incident_id, system=link.system, instance=link.instance,
                    remote_id=link.remote_id, field=path, before=jsonable(held.held.get(path)),
                    after=jsonable(value), reason=reason,
                )  # fmt: skip
            for change in theirs:
                store.audit(
                    s, action="skip", incident_id=self.incident_id, system=link.system,
                    instance=link.instance, remote_id=link.remote_id, field=change.field,
                    after=jsonable(change.value),
                    reason=f"{change.author or 'someone'} changed {change.field} at "
                    f"{change.at.isoformat(timespec='seconds')}, between our read and our "
                    "write: weighed on the next pass",
                )  # fmt: skip
        self.outcome.writes += 1
        held.held = shadow
        held.version = list(after.version)
        held.observed = dict(after.fields)
        held.history = [*held.history, *ours, *theirs]
        if looping:
            raise WriteLoop(
                f"{link.system} {link.remote_key or link.remote_id} was written {LOOP_LIMIT} "
                f"times in {LOOP_SECONDS} s ({', '.join(sorted(written))}): the mapping "
                "probably writes a value the system keeps in another form; check it, then "
                "replay",
                system=link.system,
            )

    def _transition(
        self,
        connector: Connector,
        ref: RemoteRef,
        path: str,
        value: Any,
        fields: Mapping[str, Any],
        known: Mapping[str, Any] | None,
        on_step: Callable[[str], None] | None = None,
    ) -> RemoteRecord:
        """A transition, idempotent: refused, but the record is where it was to go (an earlier
        try was applied and its answer lost), it is a success, not a park."""
        try:
            if fields and Capability.FIELDS_ON_TRANSITION not in connector.capabilities:
                connector.update(ref, nest(fields))
            extra = (
                {"on_step": on_step}
                if on_step and Capability.WORKFLOW in connector.capabilities
                else {}
            )
            return connector.transition(
                ref, str(value), nest(fields) if fields else None, known=nest(known or {}),
                **extra,
            )  # fmt: skip
        except Fatal:
            now = connector.get(ref.object_type, ref.id)
            if normal(get_path(now.fields, path)) == normal(value):
                log.info(
                    "%s is already at %s=%s: the transition had been applied", ref, path, value
                )
                return now
            raise

    def _note_step(self, link_id: int, path: str, to: Any) -> None:
        """Note, before the call that makes it, a state a workflow walk passes through on its
        way (Jira: Open -> In Progress -> Resolved), beside the write's intent: if the walk is
        cut short there (the process dies between two steps), the record's move to it is ours,
        not someone's (a chaos run reopened a resolved incident so, seed 13)."""
        with store.session_scope(self.db) as s:
            noted = store.get_shadow(s, link_id)
            if noted is None:
                return
            intent = dict(noted.fields.get(INTENT_KEY) or {"at": store.utcnow().isoformat()})
            via = {k: list(v) for k, v in (intent.get("via") or {}).items()}
            via[path] = [*via.get(path, []), jsonable(to)]
            store.set_shadow(
                s, link_id, {**noted.fields, INTENT_KEY: {**intent, "via": via}}, noted.version
            )

    def _attribute(
        self,
        connector: Connector,
        ref: RemoteRef,
        held: _Held,
        after: RemoteRecord,
        written: Mapping[str, Any],
    ) -> tuple[list[FieldChange], list[FieldChange], bool, bool]:
        """The record's updates since our read: (ours, someone else's, whether ours was the
        only one, whether "someone else's" is known exactly). The connector names the updates
        its write made; the rest came from someone else, between our read and our write. A
        system whose answer carries no history has an update counter: moved by one, the only
        update was ours; by more, its history is read."""
        mine = {str(u) for u in after.fields.get(OUR_UPDATES_KEY) or []}
        known_ids = {c.id for c in held.history}
        read_at = _time_of(held.observed)
        new = [
            c
            for c in field_changes_of(after.fields)
            if c.id not in known_ids and (read_at is None or c.at > read_at)
        ]
        before, moved = list(held.version), list(after.version)
        # An answer without history (ServiceNow's): its version is an update counter.
        counted = FIELD_CHANGES_KEY not in after.fields and len(before) == len(moved) == 1
        if counted and Capability.FIELD_HISTORY in connector.capabilities:
            if moved[0] == before[0]:
                return [], [], True, True  # nothing changed: no update at all
            if moved[0] - before[0] == 1:
                return [_counter(after, path) for path in written], [], True, True
            # Someone else updated it between our read and our write: whose was what.
            new = [
                c
                for c in connector.field_changes(ref, read_at)
                if c.update.isdigit() and before[0] < int(c.update) <= moved[0]
            ]
            # By what each update set, not by the answer's counter: a write retried after its
            # first try was applied (the answer lost) makes no update of its own, and its
            # answer's counter is then someone else's later update (a chaos run took a desk's
            # edit for ours so, and wrote the old value back over it: seed 13).
            # (Where no update shows what we wrote, as a system that reshapes a value, the
            # counter it answered still says which was ours.)
            mine = {c.update for c in new if _sets(c, written)} or mine
        ours = [c for c in new if c.update in mine]
        theirs = [c for c in new if c.update not in mine]
        # Exact: the answer carried its history and no comment we had not seen. Otherwise
        # (someone else's update counted between, a comment made meanwhile, no history)
        # someone's edit may be in the answer unseen.
        exact = (
            not counted
            and FIELD_CHANGES_KEY in after.fields
            and not _comments_moved(connector, held.observed, after.fields)
        )
        return ours, theirs, False, exact

    def _observe(
        self, s: Any, record: RemoteRecord, history: list[FieldChange], *, join: bool = False
    ) -> None:
        fields = {k: v for k, v in record.fields.items() if k != OUR_UPDATES_KEY}
        fields[REF_KEY] = record.ref.key
        if history:
            fields[FIELD_CHANGES_KEY] = keep_history(history)
        store.record_observation(
            s, system=record.ref.system, instance=record.ref.instance,
            object_type=record.ref.object_type, remote_id=record.ref.id,
            version=list(record.version), fields=fields, source="poll",
            remote_updated_at=record.updated_at, join_history=join,
        )  # fmt: skip

    # -- comments ----------------------------------------------------------------------------

    def post(self, op: Post, held: _Held) -> None:
        """Post a comment the target lacks: an intent row first, confirmed after; one whose
        fate is unknown is looked for on the target before it is posted again."""
        link = held.link
        connector = self.connectors[(link.system, link.instance)]
        comment = op.comment
        match: RemoteComment | None = None
        if op.unsure:
            match = next(
                (
                    r
                    for r in connector.comments(ref_of(link))
                    if r.origin == comment.origin and r.body == op.body
                ),
                None,
            )
        if match is None:
            with store.session_scope(self.db) as s:
                store.link_comment(
                    s, incident_id=self.incident_id, canonical_id=comment.id,
                    system=link.system, instance=link.instance,
                    remote_id=store.pending_comment_id(comment.id), direction="out",
                )  # fmt: skip
            match = connector.add_comment(
                ref_of(link), op.body, visibility=RemoteVisibility(comment.visibility.value),
                origin=comment.origin,
            )  # fmt: skip
            self.outcome.writes += 1
        with store.session_scope(self.db) as s:
            store.confirm_comment(
                s, system=link.system, instance=link.instance, canonical_id=comment.id,
                remote_id=match.id,
            )  # fmt: skip
            store.audit(
                s, action="comment", incident_id=self.incident_id, system=link.system,
                instance=link.instance, remote_id=link.remote_id,
                after={"visibility": comment.visibility.value, "origin": comment.origin},
                reason=f"{comment.visibility.value} comment from {comment.origin}",
            )  # fmt: skip

    def join(self, op: Join) -> None:
        """A duplicate shows on its parent's record, with the count so far.

        The marker row is committed first (its id orders the duplicates, so two children
        reconciled at once still count 1, 2, 3), then the note is posted, then the marker gets
        the note's id; a crash in between posts nothing twice (we look first). Where the
        duplicate has a record of its own on the same system, the two are linked as
        duplicates too."""
        system, instance = op.target
        pending = f"pending:{self.incident_id}"
        with store.session_scope(self.db) as s:
            parent = next(
                (x for x in store.links_of(s, op.parent_id) if (x.system, x.instance) == op.target),
                None,
            )
            if parent is None:
                return
            mine = s.exec(
                select(store.CommentLink).where(
                    col(store.CommentLink.incident_id) == op.parent_id,
                    col(store.CommentLink.canonical_id) == op.marker,
                )
            ).first()
            if mine is not None and not mine.remote_id.startswith("pending:"):
                return
            if mine is None:
                store.link_comment(
                    s, incident_id=op.parent_id, canonical_id=op.marker, system=system,
                    instance=instance, remote_id=pending, direction="out",
                )  # fmt: skip
        with store.session_scope(self.db, readonly=True) as s:
            markers = s.exec(
                select(store.CommentLink)
                .where(
                    col(store.CommentLink.incident_id) == op.parent_id,
                    col(store.CommentLink.canonical_id).startswith("child:"),
                )
                .order_by(col(store.CommentLink.id))
            ).all()
            ordinal = 1 + [m.canonical_id for m in markers].index(op.marker)
        connector = self.connectors.get(op.target)
        if connector is None:
            return
        text = op.text.replace("{ordinal}", str(ordinal))
        existing = connector.comments(ref_of(parent))
        posted = next((c for c in existing if c.body == text), None)
        if posted is None:
            posted = connector.add_comment(
                ref_of(parent), text, visibility=RemoteVisibility.INTERNAL,
                origin=f"{system}:{op.marker}",
            )  # fmt: skip
            self.outcome.writes += 1
        if op.link_to and Capability.ISSUE_LINKS in connector.capabilities:
            link_issues = getattr(connector, "link_issues", None)
            if link_issues is not None:
                link_issues("Duplicate", op.link_to, parent.remote_key)
        with store.session_scope(self.db) as s:
            s.exec(
                update(store.CommentLink)
                .where(
                    col(store.CommentLink.incident_id) == op.parent_id,
                    col(store.CommentLink.canonical_id) == op.marker,
                )
                .values(remote_id=posted.id)
            )
            store.audit(
                s, action="comment", incident_id=op.parent_id, system=system, instance=instance,
                remote_id=parent.remote_id,
                reason=f"duplicate {op.marker.split(':', 1)[1]} attached ({ordinal} so far)",
            )  # fmt: skip

    # -- failures ----------------------------------------------------------------------------

    def park(self, target: str, exc: Exception, *, reading: bool = False) -> None:
        remote = exc.remote_message if isinstance(exc, ConnectorError) else ""
        status = exc.status if isinstance(exc, ConnectorError) else None
        what = "reading from" if reading else "writing to"
        message = f"{what} {target}: {exc}"
        log.warning(
            "incident %s parked for %s: %s", self.incident_id, target, message,
            extra={"incident_id": self.incident_id, "target": target},
        )  # fmt: skip
        with store.session_scope(self.db) as s:
            store.park(
                s, incident_id=self.incident_id, target=target, error=message,
                remote_message=remote, status=status,
            )  # fmt: skip
            store.audit(
                s, action="park", incident_id=self.incident_id, system=target.split(":")[0],
                reason=message,
            )  # fmt: skip
        self.outcome.parked.append(target)

    def fail(self, target: str, exc: ConnectorError) -> None:
        if isinstance(exc, Retriable | Conflict):
            with store.session_scope(self.db) as s:
                delay = next_backoff(s, self.incident_id, target, str(exc))
            if isinstance(exc, RateLimited):
                delay = max(delay, exc.retry_after)
            log.info(
                "incident %s: %s failed retriably (%s); again in %.1fs", self.incident_id,
                target, exc, delay, extra={"incident_id": self.incident_id, "target": target},
            )  # fmt: skip
            self.outcome.later(delay)
            return
        self.park(target, exc)


def held_records(
    records: list[Record], links: list[store.Link], consumed: Mapping[int, Any]
) -> dict[tuple[str, str], _Held]:
    """What each linked record holds as this pass begins (after the merge took changes in)."""
    by_id = {link.id: link for link in links}
    out: dict[tuple[str, str], _Held] = {}
    for record in records:
        link = by_id.get(record.link_id)
        if link is None:
            continue
        held = consumed.get(record.link_id, (dict(record.shadow or {}),))[0]
        out[record.target] = _Held(
            link,
            dict(held),
            list(record.version or record.shadow_version or ()),
            dict(record.observed or {}),
            list(record.history),
        )
    return out


def _comments_moved(
    connector: Connector, before: Mapping[str, Any], after: Mapping[str, Any]
) -> bool:
    """Whether ``after`` may hold a comment ``before`` did not (True when it cannot tell)."""
    if Capability.COMMENTS not in connector.capabilities:
        return False
    then, now = connector.known_comments(before, None), connector.known_comments(after, None)
    if then is None or now is None:
        return True
    return bool({c.id for c in now} - {c.id for c in then})


def _time_of(fields: Mapping[str, Any]) -> dt.datetime | None:
    for name in ("sys_updated_on", "updated", "updated_at"):
        value = fields.get(name)
        if not value:
            continue
        text = str(value).replace("Z", "+00:00")
        if "T" not in text:
            text = text.replace(" ", "T") + "+00:00"
        if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
            text = text[:-2] + ":" + text[-2:]
        try:
            return dt.datetime.fromisoformat(text)
        except ValueError:
            return None
    return None


def _sets(change: FieldChange, written: Mapping[str, Any]) -> bool:
    """Whether ``change`` set a field to what we wrote there."""
    for path, value in written.items():
        top, _, rest = path.partition(".")
        if change.field == top and change.known:
            made = get_path(change.value, rest) if rest else change.value
            if normal(made) == normal(value):
                return True
    return False


def _counter(after: RemoteRecord, path: str) -> FieldChange:
    """One of our writes, on a system that only says "one update: yours" (the counter)."""
    version = str(after.version[0]) if after.version else ""
    top = path.split(".", 1)[0]
    return FieldChange(
        id=f"{version}:{top}", field=top, value=after.fields.get(top), at=after.updated_at,
        update=version,
    )  # fmt: skip


def _revert(fields: Mapping[str, Any], changes: list[FieldChange]) -> dict[str, Any]:
    """The record's fields before ``changes`` (each field back to its first change's old
    value): the record as created, when the changes are all that came after creation."""
    out = dict(fields)
    done: set[str] = set()
    for change in changes:
        if change.field in done or not change.known:
            continue
        done.add(change.field)
        out[change.field] = change.old
    return out
