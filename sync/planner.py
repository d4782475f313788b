"""Deciding what to write: a pure function from snapshots to typed operations.

The planner never calls a remote system or the database. It gets everything as arguments — the
incident, each linked record as last observed and as its shadow (what we last saw or wrote,
per mapped path), the field changes those records' histories tell, the mappings, and the
policy — and returns the merged incident and an ordered list of operations (:class:`Create`,
:class:`Update`, :class:`Transition`, :class:`Post`, :class:`Join`, :class:`Park`). Only the
executor (:mod:`sync.executor`) does I/O.

**Merge (sources -> canonical).** For each source record whose observation is newer than its
shadow, every canonical field whose value differs from the shadow's is a candidate change. A
change is dated by the record's own history — the Jira changelog, ServiceNow's ``sys_audit`` —
never by the whole record's update time, except where no history is known (then the record's
time stands in, and the reconciler reads the history where that could decide a conflict). A
history entry newer than the incident's value of a field, that is not one of our own updates,
is a candidate too, even when the record shows our value now: someone edited the field just
before our write overwrote it, and their edit is the newer one.

Candidates are decided **per field, last writer wins**: the newest change wins; the current
value stands against anything older than the change it came from. Times are compared to the
second (ServiceNow keeps no more); within the same second the field's owner wins if the
mapping names one (``policy: owner:<system>``), else ``sync.tie_winner`` (ServiceNow). An
``owner:<system>`` policy always wins when that system changed the field.

**Plan (canonical -> targets).** For each target mapping: create the record if the policy says
so (a finished incident never gets new records, but one resolved within
``sync.quick_resolve_seconds`` of opening does: created, then resolved); otherwise write the
paths whose wanted value differs from what the record holds (read back through the mapping, so
equal values in another spelling are no change); the state by transition; each comment the
target lacks (never an internal one where the target has no internal comments). Text is
stripped of control characters, cut to the target's limit with a visible ``[truncated]``
marker, and comment bodies made inert where the target would render markup live.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.base import (
    FIELD_CHANGES_KEY,
    Capability,
    FieldChange,
    RemoteComment,
    RemoteRef,
    field_changes_of,
)
from mapping.conditions import Condition
from mapping.engine import (
    applies,
    canonical_values,
    from_canonical,
    get_path,
    set_path,
    to_canonical,
)
from mapping.model import CANONICAL_FIELDS, Comment, Incident, Stamp, State, Visibility
from mapping.spec import Mapping as FieldMap
from mapping.spec import MappingError
from mapping.templates import TemplateError
from mapping.transforms import TransformContext, TransformError

MAPPING_FAILURES = (MappingError, TransformError, TemplateError)
CORRELATION_PREFIX = "itsm-"
REF_KEY = "_ref_key"  # stored with each observation: the record's human key (OPS-12, INC...)
# Reserved keys of a shadow: the record version up to which every comment was seen; the
# updates that were our own writes; the newest history entry already weighed.
THROUGH_KEY = "_comments_through"
OURS_KEY = "_ours"
SEEN_KEY = "_history_through"
# Someone's field changes that a write's answer told of (made between our read and our write),
# kept with the shadow until a pass has weighed them: a newer observation of the record (a
# webhook of the next update, carrying that update's history alone) replaces the stored one
# and its history before that pass (a chaos run lost a desk's title so: seed 21).
THEIRS_KEY = "_theirs"


def pending_theirs(shadow: Mapping[str, Any] | None) -> list[FieldChange]:
    """The changes kept under :data:`THEIRS_KEY` in a shadow's fields, oldest first."""
    return field_changes_of({FIELD_CHANGES_KEY: (shadow or {}).get(THEIRS_KEY) or []})


# A write we are about to make ({"at", "values": {path: value}}), noted before it is sent: a
# change in the record's history that made a path what we meant to write, at or after that time
# (within INTENT_SECONDS), is ours even if its answer never came back to record it.
INTENT_KEY = "_intent"
INTENT_SECONDS = 120.0
INTENT_SECONDS_DELTA = dt.timedelta(seconds=INTENT_SECONDS)
MAX_OURS = 50
TRUNCATED = " [truncated]"
# Control characters (but tab, newline, carriage return) never leave for a target.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Statuspage component statuses, best to worst; a component shared by open incidents shows
# the worst.
COMPONENT_RANK = {
    "operational": 0,
    "under_maintenance": 1,
    "degraded_performance": 2,
    "partial_outage": 3,
    "major_outage": 4,
}
PAGE_WIDE = "component_statuses"  # a transform whose values are shared by every incident


def correlation_key(incident_id: str) -> str:
    return f"{CORRELATION_PREFIX}{incident_id}"


def normal(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} -> {"a": {"b": 1}}; an empty nested value clears its object ({"a": None})."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        if path.startswith("_"):
            continue
        if value is None and "." in path:
            set_path(out, path.rsplit(".", 1)[0], None)
        else:
            set_path(out, path, value)
    return out


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def clean_text(value: str) -> str:
    """Text from a remote system as we store and send it: no NUL or control characters."""
    return _CONTROL.sub("", value)


def fit(value: str, limit: int | None) -> str:
    """``value`` cut to ``limit`` characters, with a visible marker where it was cut."""
    if limit is None or len(value) <= limit:
        return value
    return value[: max(0, limit - len(TRUNCATED))] + TRUNCATED


# -- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One linked remote record, as the engine knows it."""

    link_id: int
    ref: RemoteRef
    url: str = ""
    observed: Mapping[str, Any] | None = None  # the newest observation's fields
    version: tuple[int, ...] | None = None
    observed_at: dt.datetime | None = None  # the record's own update time (else when seen)
    shadow: Mapping[str, Any] | None = None  # flat {path: value}: what we last saw or wrote
    shadow_version: tuple[int, ...] | None = None
    comments: tuple[RemoteComment, ...] | None = None  # what could be new (None: nothing)
    history: tuple[FieldChange, ...] = ()  # the field changes known, oldest first

    @property
    def target(self) -> tuple[str, str]:
        return (self.ref.system, self.ref.instance)

    @property
    def name(self) -> str:
        return f"{self.ref.system} {self.ref.key or self.ref.id}"

    @property
    def newer(self) -> bool:
        if self.observed is None:
            return False
        return self.shadow is None or list(self.version or ()) > list(self.shadow_version or ())

    @property
    def one_update(self) -> bool:
        """The record changed by exactly one update since we looked (its update counter moved
        by one, on a system whose records carry no history): that update's time is the time
        of every change it holds."""
        if FIELD_CHANGES_KEY in (self.observed or {}):
            return False
        now, then = list(self.version or ()), list(self.shadow_version or ())
        return len(now) == len(then) == 1 and now[0] - then[0] == 1

    def ours(self) -> set[str]:
        return {str(u) for u in (self.shadow or {}).get(OURS_KEY) or []}

    def intended(self) -> dict[str, Any]:
        """The paths of our last noted write that the history shows it made ({path: value}):
        a write applied whose answer never came (lost, or the process died)."""
        intent = (self.shadow or {}).get(INTENT_KEY)
        if not isinstance(intent, Mapping):
            return {}
        made = {
            path: value
            for path, value in (intent.get("values") or {}).items()
            if any(self._made(c, path, value, intent) for c in self.history)
        }
        # A workflow walk cut short: the last state it reached on its way is ours too.
        for path, steps in (intent.get("via") or {}).items():
            if path in made:
                continue
            reached = [v for c in self.history for v in steps if self._made(c, path, v, intent)]
            if reached:
                made[path] = reached[-1]
        return made

    @staticmethod
    def _made(change: FieldChange, path: str, value: Any, intent: Mapping[str, Any]) -> bool:
        at = _time(intent.get("at"))
        top, _, rest = path.partition(".")
        if at is None or change.field != top or not change.known:
            return False
        # ServiceNow keeps whole seconds: a change in the second of the intent may be ours.
        if _second(change.at) < _second(at) or change.at - at > INTENT_SECONDS_DELTA:
            return False
        made = get_path(change.value, rest) if rest else change.value
        return normal(made) == normal(value)

    def human_history(self) -> list[FieldChange]:
        """History entries that are not our own writes, newer than those already weighed."""
        ours = self.ours()
        seen = _time((self.shadow or {}).get(SEEN_KEY))
        intent = (self.shadow or {}).get(INTENT_KEY)
        intended = self.intended() if isinstance(intent, Mapping) else {}
        return [
            c
            for c in self.history
            if c.update not in ours
            and (seen is None or c.at > seen or not self.shadow)
            and not any(self._made(c, p, v, intent or {}) for p, v in intended.items())
            and not self._stepped(c, intent)
        ]

    @classmethod
    def _stepped(cls, change: FieldChange, intent: Any) -> bool:
        """A move to a state our last write noted it was walking through (a workflow step
        before the state it was going to; the walk may have been cut short there)."""
        if not isinstance(intent, Mapping):
            return False
        via = intent.get("via") or {}
        return any(cls._made(change, p, v, intent) for p, vs in via.items() for v in vs)


@dataclass(frozen=True)
class Target:
    """One system instance the incident may have a record on: its mapping and what its
    connector can do (pure functions only: the planner never calls it)."""

    mapping: FieldMap
    context: TransformContext
    capabilities: frozenset[Capability]
    text_limit: Callable[[str], int | None]
    inert: Callable[[str], str]
    parked: bool = False
    wait_seconds: float | None = None  # backing off after a retriable failure

    @property
    def key(self) -> tuple[str, str]:
        return (self.mapping.system, self.mapping.instance)

    @property
    def name(self) -> str:
        return f"{self.mapping.system}:{self.mapping.instance}"

    @property
    def source(self) -> bool:
        """A system whose changes flow in (its mapping reads something)."""
        return any(f.reads for f in self.mapping.fields)

    def state_path(self) -> str | None:
        for f in self.mapping.fields:
            if f.canonical == "state" and f.writes:
                return f.path
        return None


@dataclass(frozen=True)
class Policy:
    """The lifecycle rules, from settings (per system as data, never as code)."""

    create_when: Mapping[str, Condition] = field(default_factory=dict)
    create_if_linked: frozenset[str] = frozenset()  # these: when linked on another system
    create_fields: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    follow: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    tie_winner: str = "servicenow"
    quick_resolve_seconds: float = 3600.0
    duplicates_follow_parent: bool = True


@dataclass(frozen=True)
class Snapshot:
    """Everything one reconcile decides from."""

    incident: Incident
    records: tuple[Record, ...]
    targets: Mapping[tuple[str, str], Target]
    terminal: frozenset[str]
    synced: frozenset[tuple[str, str, str]] = frozenset()  # remote comments already linked
    posted: frozenset[tuple[str, str, str]] = frozenset()  # (comment, system, instance) done
    unsure: frozenset[tuple[str, str, str]] = frozenset()  # posted, maybe (intent row)
    parents: Mapping[tuple[str, str, str], str] = field(default_factory=dict)  # remote -> id
    parent_remote: Mapping[tuple[str, str], str] = field(default_factory=dict)
    parent: Incident | None = None
    shared: Mapping[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)
    first_seen: dt.datetime | None = None
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


# -- outputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    target: tuple[str, str]


@dataclass(frozen=True)
class Create(Op):
    """A new record on the target, then (unless it can be created in it) its state."""

    object_type: str
    fields: Mapping[str, Any]  # flat paths
    state_path: str | None
    state: Any  # the remote state value to reach after creating (None: as created)
    correlation_key: str


@dataclass(frozen=True)
class Update(Op):
    fields: Mapping[str, Any]  # flat paths -> wanted values
    reason: str = "brought in line with the incident"


@dataclass(frozen=True)
class Transition(Op):
    """The state, by the target's own way of moving it. ``known``: the incident's values of
    the target's fields, for what the move may need (ServiceNow's resolve wants a close code
    and notes; the connector falls back to its defaults for what the incident leaves empty)."""

    path: str
    value: Any
    known: Mapping[str, Any] = field(default_factory=dict)
    reason: str = "brought in line with the incident"


@dataclass(frozen=True)
class Post(Op):
    """A comment the target lacks. ``unsure``: it may be there already (look first)."""

    comment: Comment
    body: str
    unsure: bool = False


@dataclass(frozen=True)
class Join(Op):
    """A duplicate shows on its parent's record: a note with the count so far, and a link of
    the ``Duplicate`` type where both have records on a system that links them."""

    parent_id: str
    text: str
    marker: str
    link_to: str = ""  # the duplicate's own record on the target, if it has one


@dataclass(frozen=True)
class Park(Op):
    reason: str
    error: Exception | None = None
    reading: bool = False


@dataclass
class Change:
    record: Record
    value: Any
    at: dt.datetime
    precise: bool  # dated by the record's history (else by the whole record's update time)


@dataclass
class Merged:
    """The incident after taking in what changed on the sources."""

    incident: Incident
    consumed: dict[int, tuple[dict[str, Any], list[int]]] = field(default_factory=dict)
    new_comments: list[tuple[Comment, Record, str]] = field(default_factory=list)
    audits: list[dict[str, Any]] = field(default_factory=list)
    parks: list[Park] = field(default_factory=list)
    conflicts: int = 0
    # Records whose history would decide a change that only the record's time dates now.
    needs_history: set[int] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.consumed or self.new_comments or self.audits)


# -- merge ------------------------------------------------------------------------------------


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _second(at: dt.datetime) -> int:
    return int(at.timestamp())


def read(
    target: Target, fields: Mapping[str, Any], parents: Mapping[tuple[str, str, str], str]
) -> dict[str, Any]:
    """Canonical values of a record's fields (our correlation stamp is no label people use; a
    parent given as a remote id becomes the canonical id)."""
    values = to_canonical(target.mapping, fields, target.context)
    if "labels" in values:
        values["labels"] = tuple(
            x for x in values["labels"] or () if not str(x).startswith(CORRELATION_PREFIX)
        )
    if values.get("parent"):
        m = target.mapping
        values["parent"] = parents.get((m.system, m.instance, str(values["parent"])), "")
    return values


def _fields_of(mapping: FieldMap, name: str) -> set[str]:
    return {f.path.split(".", 1)[0] for f in mapping.fields if f.canonical == name and f.reads}


def canonical_comment(rc: RemoteComment, record: Record) -> Comment:
    return Comment(
        id=f"{record.ref.system}:{record.ref.instance}:{rc.id}",
        body=clean_text(rc.body),
        visibility=Visibility(rc.visibility.value),
        author=rc.author,
        origin=f"{record.ref.system}:{record.ref.key or record.ref.id}",
        created_at=rc.created_at,
    )


def merge(snap: Snapshot, policy: Policy) -> Merged:
    """Take in what changed on the source records since we last looked."""
    incident = snap.incident
    out = Merged(incident=incident)
    candidates: dict[str, list[Change]] = {}
    current = canonical_values(incident)
    for record in snap.records:
        target = snap.targets.get(record.target)
        if target is None or not target.source or record.observed is None or target.parked:
            continue
        human = record.human_history()
        if record.newer or human:
            try:
                now = read(target, record.observed, snap.parents)
                # What we wrote is what we hold, also where the answer never came.
                held = {**record.shadow, **record.intended()} if record.shadow else None
                before = read(target, nest(held), snap.parents) if held else {}
            except MAPPING_FAILURES as exc:
                out.parks.append(Park(record.target, str(exc), exc, reading=True))
                continue
            for name, value in now.items():
                change = _change(snap, target, record, name, value, before, human, current)
                if change is not None:
                    candidates.setdefault(name, []).append(change)
            read_paths = {f.path for f in target.mapping.fields}
            flat = {
                **(record.shadow or {}),
                **{p: get_path(record.observed, p) for p in read_paths},
                THROUGH_KEY: list(record.version or ()),
            }
            if record.history:
                flat[SEEN_KEY] = max(c.at for c in record.history).isoformat()
            flat.pop(INTENT_KEY, None)  # weighed: what it made is now in the shadow
            flat.pop(THEIRS_KEY, None)  # weighed with the record's history (Record.history)
            out.consumed[record.link_id] = (flat, list(record.version or ()))
        for rc in record.comments or ():
            if rc.origin or (record.ref.system, record.ref.instance, rc.id) in snap.synced:
                continue
            out.new_comments.append((canonical_comment(rc, record), record, rc.id))

    values = canonical_values(incident)
    stamps = dict(incident.changed)
    for name, changes in candidates.items():
        winner = _decide(name, changes, stamps.get(name), snap, policy)
        if len(changes) > 1:
            out.conflicts += 1
            chosen = winner.record.name if winner else "the current value"
            out.audits.append(
                dict(
                    action="conflict", field=name,
                    before={c.record.name: jsonable(c.value) for c in changes},
                    after=jsonable(winner.value if winner else values.get(name)),
                    system=winner.record.ref.system if winner else "",
                    reason=f"both changed {name}; {chosen} wins ({_why(changes, winner)})",
                )
            )  # fmt: skip
        if winner is None:
            _note_lost(out, name, changes, stamps.get(name), values.get(name))
            continue
        for change in changes:
            if winner is not change and not change.precise:
                out.needs_history.add(change.record.link_id)
        # A record that changed but shows the value we hold may have been set back to it
        # (A -> B -> A) after this change: only its history can tell.
        changed_here = {c.record.link_id for c in changes}
        for record in snap.records:
            if record.newer and not record.history and record.link_id not in changed_here:
                out.needs_history.add(record.link_id)
        if not winner.precise and stamps.get(name) is not None:
            out.needs_history.add(winner.record.link_id)
        stamps[name] = Stamp(at=winner.at, system=winner.record.ref.system)
        if normal(values.get(name)) != normal(winner.value):
            out.audits.append(
                dict(
                    action="update", field=name, before=jsonable(values.get(name)),
                    after=jsonable(winner.value), system=winner.record.ref.system,
                    remote_id=winner.record.ref.id, reason=f"changed in {winner.record.name}",
                )
            )  # fmt: skip
            values[name] = winner.value
    merged = Incident.model_validate(
        {
            **incident.model_dump(),
            **nested_values(values),
            "changed": stamps,
            "comments": [*incident.comments, *(c for c, _, _ in out.new_comments)],
        }
    )
    out.incident = _follow_parent(merged, snap, policy, out)
    return out


def _change(
    snap: Snapshot,
    target: Target,
    record: Record,
    name: str,
    value: Any,
    before: Mapping[str, Any],
    human: list[FieldChange],
    current: Mapping[str, Any],
) -> Change | None:
    """The change this record holds for canonical field ``name``, if any."""
    paths = _fields_of(target.mapping, name)
    entries = [c for c in human if c.field in paths]
    if record.shadow is None:  # first sight of the record: a change is what the incident lacks
        differs = normal(current.get(name)) != normal(value)
    else:
        differs = normal(before.get(name)) != normal(value)
    if differs and record.newer:
        if entries:
            return Change(record, value, entries[-1].at, precise=True)
        at = record.observed_at or snap.now
        return Change(record, value, at, precise=record.one_update)
    # The record shows the value we hold, but its history may tell of an edit newer than our
    # value's own change: one made just before our own write overwrote it, or one that set
    # the field back to the value we hold (A -> B -> A) while another side changed it. It
    # takes part in the decision with its own time.
    stamp = snap.incident.changed.get(name)
    for entry in reversed(entries):
        if not entry.known or stamp is None or entry.at <= stamp.at:
            break
        try:
            theirs = read(
                target, {**(record.observed or {}), entry.field: entry.value}, snap.parents
            )
        except MAPPING_FAILURES:
            break
        if name in theirs:
            return Change(record, theirs[name], entry.at, precise=True)
        break
    return None


def _owner(name: str, snap: Snapshot) -> str:
    for target in snap.targets.values():
        for f in target.mapping.for_field(name):
            if f.policy.startswith("owner:"):
                return f.policy.split(":", 1)[1]
    return ""


def _order(a: dt.datetime, b: dt.datetime) -> int:
    """-1, 0 or 1 as ``a`` is before, at the same time as (as far as anyone can tell), or after
    ``b``. ServiceNow keeps whole seconds: where either time has no fraction, they compare to
    the second."""
    if a.microsecond and b.microsecond:
        return (a > b) - (a < b)
    x, y = _second(a), _second(b)
    return (x > y) - (x < y)


def _decide(
    name: str, changes: list[Change], stamp: Stamp | None, snap: Snapshot, policy: Policy
) -> Change | None:
    """The change that wins, or None: the current value stands (it changed later).

    The newest change wins. Two changes at the same time (within ServiceNow's second) go to
    the field's owner, else to ``tie_winner``; a change at the same time as the current
    value's own wins over it (it was seen after it)."""
    owner = _owner(name, snap)
    if owner:
        for change in changes:
            if change.record.ref.system == owner:
                return change
    tie = owner or policy.tie_winner
    best = changes[0]
    for change in changes[1:]:
        order = _order(change.at, best.at)
        if order > 0 or (order == 0 and change.record.ref.system == tie):
            best = change
    if stamp is not None and _order(stamp.at, best.at) > 0:
        return None
    return best


def _why(changes: list[Change], winner: Change | None) -> str:
    def when(c: Change) -> str:
        how = "" if c.precise else " (record time)"
        return f"{c.record.name} at {c.at.isoformat(timespec='seconds')}{how}"

    if winner is None:
        return "the current value changed later than " + ", ".join(when(c) for c in changes)
    return "last writer wins: " + ", ".join(when(c) for c in changes)


def _note_lost(
    out: Merged, name: str, changes: list[Change], stamp: Stamp | None, current: Any
) -> None:
    """An older change lost to the current value: say so (the record is written back)."""
    for change in changes:
        if not change.precise:
            out.needs_history.add(change.record.link_id)
        out.audits.append(
            dict(
                action="skip", field=name, before=jsonable(change.value), after=jsonable(current),
                system=change.record.ref.system, remote_id=change.record.ref.id,
                reason=(
                    f"{change.record.name} changed {name} at "
                    f"{change.at.isoformat(timespec='seconds')}, before the current value "
                    f"(changed {stamp.at.isoformat(timespec='seconds') if stamp else '?'} in "
                    f"{stamp.system if stamp else '?'}): the current value stands"
                ),
            )
        )  # fmt: skip


def _follow_parent(merged: Incident, snap: Snapshot, policy: Policy, out: Merged) -> Incident:
    """A duplicate whose parent was resolved (or ended) is resolved with it (configurable)."""
    parent = snap.parent
    if not (policy.duplicates_follow_parent and parent is not None and merged.parent):
        return merged
    done = {State.RESOLVED.value, *snap.terminal}
    if parent.state.value not in done or merged.state.value in done:
        return merged
    out.audits.append(
        dict(
            action="update", field="state", before=merged.state.value,
            after=State.RESOLVED.value, reason=f"its parent {parent.title!r} was resolved",
        )
    )  # fmt: skip
    stamp = parent.changed.get("state") or Stamp(at=snap.now, system="")
    return merged.model_copy(
        update={
            "state": State.RESOLVED,
            "resolution": parent.resolution,
            "changed": {**merged.changed, "state": stamp},
        }
    )


def nested_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat canonical values (``resolution.code``) as Incident fields; None drops the field."""
    out: dict[str, Any] = {}
    resolution: dict[str, Any] = {}
    for name, value in values.items():
        if name.startswith("resolution."):
            resolution[name.split(".", 1)[1]] = value or ""
        elif name == "severity" and value in ("", None):
            out[name] = None
        elif value == "" and isinstance(CANONICAL_FIELDS.get(name), tuple):
            continue  # no value for a field of fixed values: the incident's default
        elif value is None and not name.endswith("_at"):
            continue
        else:
            out[name] = value
    if resolution:
        out["resolution"] = resolution
    return out


# -- plan -------------------------------------------------------------------------------------


def _paths(nested: Mapping[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in nested.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, Mapping):
            out |= _paths(value, path + ".")
    return out


def _rank(status: Any) -> int:
    return COMPONENT_RANK.get(str(status), 0)


def desired(incident: Incident, target: Target, snap: Snapshot) -> dict[str, Any]:
    """The flat {path: value} this target should hold for ``incident``."""
    mapping = target.mapping
    update: dict[str, Any] = {"parent": snap.parent_remote.get(target.key, "")}
    if _stale_message(incident):
        update["public_message"] = ""  # approved for an earlier stage: this stage's own text
    view = incident.model_copy(update=update)
    nested = from_canonical(mapping, view, target.context)
    present = _paths(nested)
    flat: dict[str, Any] = {}
    for f in mapping.fields:
        if not f.writes:
            continue
        value = get_path(nested, f.path)
        if value is not None or f.path in present or f.path.rsplit(".", 1)[0] in present:
            if isinstance(value, str):
                value = fit(clean_text(value), target.text_limit(f.path))
            flat[f.path] = value
        if f.transform is not None and f.transform.name == PAGE_WIDE:
            flat[f.path] = _shared(flat.get(f.path), snap.shared.get(target.key) or {})
    if "labels" in flat:  # keep our correlation stamp among the labels
        flat["labels"] = sorted({*(flat["labels"] or []), correlation_key(incident.id)})
    return flat


# Stages of the public story: what the status page calls each canonical state.
STAGES = {"new": "investigating", "closed": "resolved", "canceled": "resolved"}


def stage(state: str) -> str:
    return STAGES.get(state, state)


def _stale_message(incident: Incident) -> bool:
    """The public message was approved at an earlier stage than the incident is at now."""
    approved = incident.public_message_stage
    return bool(approved) and stage(approved) != stage(incident.state.value)


def withdrawn(
    incident: Incident, target: Target, snap: Snapshot, held: Mapping[str, Any]
) -> dict[str, Any]:
    """What an output-only record shows once the incident no longer matches its mapping
    (downgraded, made private): resolved, with the mapping's closing text, its components
    back to normal (unless another open incident still affects them). Nothing once done."""
    mapping = target.mapping
    out: dict[str, Any] = {}
    for f in mapping.fields:
        if not f.writes:
            continue
        if f.canonical == "state" and f.values is not None:
            out[f.path] = f.values.to_remote(State.RESOLVED.value, f"{mapping.system} {f.path}")
        elif f.canonical == "public_message" and mapping.withdraw_message:
            out[f.path] = mapping.withdraw_message
        elif f.transform is not None and f.transform.name == PAGE_WIDE:
            mine = held.get(f.path)
            normal_status = str(f.args.get("resolved") or "operational")
            if isinstance(mine, dict):
                out[f.path] = _shared(
                    dict.fromkeys(mine, normal_status), snap.shared.get(target.key) or {}
                )
    state_path = target.state_path()
    if state_path and normal(held.get(state_path)) == normal(out.get(state_path)):
        return {}  # resolved already: it stays as it is
    return out


def _shared(mine: Any, others: Mapping[str, str]) -> Any:
    """A page-wide status: while another open incident affects it, the worse of the two."""
    if not isinstance(mine, dict):
        return mine
    out = dict(mine)
    for component, status in others.items():
        if component in out and _rank(status) > _rank(out[component]):
            out[component] = status
    return out


def _same(target: Target, path: str, wanted: Any, held: Any) -> bool:
    if normal(wanted) == normal(held):
        return True
    # Equal if they read as the same canonical values (a refiner's `when`, which depends on
    # other fields, does not apply: this compares the values of this one path).
    readers = [
        dataclasses.replace(f, when=None)
        for f in target.mapping.fields
        if f.reads and f.path == path
    ]
    if not readers or held is None:
        return False
    m = target.mapping
    sub = FieldMap(m.system, m.instance, m.object_type, tuple(readers))
    try:
        a = to_canonical(sub, nest({path: wanted}), target.context)
        b = to_canonical(sub, nest({path: held}), target.context)
    except MAPPING_FAILURES:
        return False
    return normal(a) == normal(b)


def _wants_record(incident: Incident, target: Target, snap: Snapshot, policy: Policy) -> bool:
    system = target.mapping.system
    if incident.state.value in snap.terminal:
        return False  # never open new records for ended incidents
    if incident.state is State.RESOLVED and not _quick(incident, snap, policy):
        return False  # nor for ones resolved long ago (a backfill)
    if incident.parent and not target.mapping.for_field("parent"):
        return False  # a duplicate attaches to its parent's records instead
    if not applies(target.mapping, incident):
        return False
    if system in policy.create_if_linked:
        return any(r.ref.system != system for r in snap.records)
    condition = policy.create_when.get(system)
    return condition.evaluate(canonical_values(incident)) if condition else True


def _quick(incident: Incident, snap: Snapshot, policy: Policy) -> bool:
    """Resolved within ``quick_resolve_seconds`` of being opened (and seen by us since)."""
    window = dt.timedelta(seconds=policy.quick_resolve_seconds)
    opened = incident.started_at or snap.first_seen
    if opened is None or snap.now - opened > window:
        return False
    return snap.first_seen is None or snap.now - snap.first_seen <= window


def plan(
    snap: Snapshot, incident: Incident, policy: Policy, consumed: Mapping[int, Any]
) -> list[Op]:
    """The writes that bring every target in line with ``incident``."""
    ops: list[Op] = []
    by_target = {r.target: r for r in snap.records}
    for key, target in snap.targets.items():
        if target.parked or target.wait_seconds is not None:
            continue
        record = by_target.get(key)
        try:
            if record is None:
                if not _wants_record(incident, target, snap, policy):
                    continue
                ops.append(_create(incident, target, snap, policy))
            else:
                held = consumed.get(record.link_id, (record.shadow or {},))[0]
                ops += _writes(incident, target, snap, held)
            ops += _posts(incident, target, snap)
        except MAPPING_FAILURES as exc:
            ops.append(Park(key, str(exc), exc))
    ops += _join(incident, snap)
    return ops


def _create(incident: Incident, target: Target, snap: Snapshot, policy: Policy) -> Create:
    fields = desired(incident, target, snap)
    state_path = target.state_path()
    state = None
    if state_path and Capability.CREATE_IN_STATE not in target.capabilities:
        state = fields.pop(state_path, None)
    for path, value in (policy.create_fields.get(target.mapping.system) or {}).items():
        fields.setdefault(path, value)
    return Create(
        target.key, target.mapping.object_type, fields, state_path, state,
        correlation_key(incident.id),
    )  # fmt: skip


def _writes(
    incident: Incident, target: Target, snap: Snapshot, held: Mapping[str, Any]
) -> list[Op]:
    reason = "brought in line with the incident"
    if applies(target.mapping, incident) or target.source:
        wanted = desired(incident, target, snap)
    else:
        # An output-only target (the status page) the incident no longer matches.
        wanted = withdrawn(incident, target, snap, held)
        reason = (
            "no longer matches the status page's rule (downgraded or made private): closed there"
        )
    patch = {p: v for p, v in wanted.items() if not _same(target, p, v, held.get(p))}
    if not patch:
        return []
    state_path = target.state_path()
    if not target.source and state_path in patch:
        # An output-only target's state change is an update people read (a status page
        # update): it always carries the message, even one that did not change.
        for f in target.mapping.fields:
            if f.canonical == "public_message" and f.writes and f.path in wanted:
                patch.setdefault(f.path, wanted[f.path])
    ops: list[Op] = []
    state = patch.pop(state_path) if state_path and state_path in patch else None
    if patch:
        ops.append(Update(target.key, patch, reason))
    if state is not None and state_path is not None:
        known = {p: v for p, v in wanted.items() if p != state_path and v not in (None, "")}
        ops.append(Transition(target.key, state_path, state, known, reason))
    return ops


def _posts(incident: Incident, target: Target, snap: Snapshot) -> list[Op]:
    """Each comment the target lacks."""
    system, instance = target.key
    if not target.source or Capability.COMMENTS not in target.capabilities:
        return []  # nothing but the public message ever reaches an output-only target
    ops: list[Op] = []
    for comment in incident.comments:
        done = (comment.id, system, instance)
        if done in snap.posted or comment.origin.startswith(f"{system}:"):
            continue
        if comment.visibility is Visibility.INTERNAL and (
            Capability.INTERNAL_COMMENTS not in target.capabilities
        ):
            continue
        body = fit(target.inert(clean_text(comment.body)), target.text_limit("comment"))
        ops.append(Post(target.key, comment, body, unsure=done in snap.unsure))
    return ops


def _join(incident: Incident, snap: Snapshot) -> list[Op]:
    """A duplicate attaches to its parent's record on systems that have no duplicates."""
    if not incident.parent:
        return []
    ops: list[Op] = []
    own = next((r for r in snap.records if r.ref.object_type == "incident"), None)
    name = own.ref.key if own and own.ref.key else incident.id
    for key, target in snap.targets.items():
        if target.mapping.for_field("parent") or not target.source:
            continue
        if key not in snap.parent_remote or target.parked:
            continue
        mine = next((r for r in snap.records if r.target == key), None)
        ops.append(
            Join(
                key, incident.parent,
                text=f"Duplicate ticket {name} attached to this incident "
                "({ordinal} duplicate ticket(s) so far): " + incident.title,
                marker=f"child:{incident.id}", link_to=mine.ref.key if mine else "",
            )
        )  # fmt: skip
    return ops


def targets_in_order(ops: Sequence[Op]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for op in ops:
        if op.target not in seen:
            seen.append(op.target)
    return seen
