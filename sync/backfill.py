"""What a backfill would do, without doing it (``itsm-sync backfill --dry-run``).

Reads every record updated since the given time (the same reads a backfill makes; nothing is
written to a remote system, and nothing about incidents to the store: no observation, link,
incident or queue row; the CLI's start-up still migrates the database and records the mapping
versions, as every command does) and says, per record, what the backfill would do with it, as
the engine would decide it:

- ``linked``: it is linked already (the backfill only brings it in line);
- ``link``: it names its counterpart on another system (linked by hand before us): the two
  become one incident, nothing is created;
- ``create``: a new incident from it, and the records the lifecycle policy wants for it on the
  other systems (the planner's own decision, :func:`sync.planner.plan`);
- ``skip``: not an incident this service follows (a task, a record of an output-only system),
  or one the policy leaves alone (resolved long ago, below the severity that gets a record).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field

from connectors.base import RemoteRecord
from connectors.errors import ConnectorError
from mapping.engine import get_path
from mapping.model import Incident, Stamp
from sync import pairing, planner, store
from sync.planner import REF_KEY, Create, Park, Record, Snapshot, nested_values
from sync.poller import POLLED
from sync.reconcile import Reconciler


@dataclass(frozen=True)
class Intent:
    """What the backfill would do with one record."""

    action: str  # linked | link | create | skip
    record: str  # e.g. "servicenow INC0010001"
    title: str = ""
    creates: tuple[str, ...] = ()  # e.g. ("jira issue",)
    with_record: str = ""  # link: the counterpart
    reason: str = ""

    def line(self) -> str:
        title = f" ({self.title})" if self.title else ""
        if self.action == "create":
            made = ", ".join(self.creates) or "no other record"
            return f"create  {self.record}{title} -> new incident; would create: {made}"
        if self.action == "link":
            return f"link    {self.record}{title} <-> {self.with_record}"
        if self.action == "linked":
            return f"linked  {self.record}{title}: already linked, brought in line"
        return f"skip    {self.record}{title}: {self.reason}"


@dataclass
class DryRun:
    intents: list[Intent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for i in self.intents if i.action == action)

    def creates(self) -> int:
        return sum(len(i.creates) for i in self.intents)


def dry_run(reconciler: Reconciler, since: dt.datetime, *, page_size: int = 100) -> DryRun:
    out = DryRun()
    for (system, instance), connector in sorted(reconciler.connectors.items()):
        for object_type in POLLED.get(system, ()):
            try:
                for record in connector.changes_since(object_type, since, page_size=page_size):
                    out.intents.extend(_intent(reconciler, record))
            except ConnectorError as exc:
                out.errors.append(f"{system}/{instance} {object_type}: {exc}")
    return out


def _name(record: RemoteRecord) -> str:
    return f"{record.ref.system} {record.ref.key or record.ref.id}"


def _intent(reconciler: Reconciler, record: RemoteRecord) -> Iterator[Intent]:
    ref = record.ref
    with store.session_scope(reconciler.db, readonly=True) as s:
        link = store.find_link(
            s, system=ref.system, instance=ref.instance, object_type=ref.object_type,
            remote_id=ref.id,
        )  # fmt: skip
    mappings = reconciler.mappings()
    try:
        mapping = mappings.get(ref.system, ref.instance)
    except KeyError:
        return
    fields = {**record.fields, REF_KEY: ref.key}
    source = reconciler.target(mapping)
    title_paths = [f.path for f in mapping.for_field("title")]
    title = str(get_path(fields, title_paths[0]) or "") if title_paths else ""
    if link is not None:
        yield Intent("linked", _name(record), title)
        return
    if mapping.object_type != ref.object_type:
        return  # e.g. a change request: not an incident of its own
    if not any(f.reads for f in mapping.fields):
        yield Intent("skip", _name(record), title, reason="an output-only system's record")
        return
    for path, wanted in (reconciler.policy.follow.get(ref.system) or {}).items():
        if str(get_path(fields, path) or "") != wanted:
            yield Intent("skip", _name(record), title, reason=f"{path} is not {wanted!r}")
            return
    other = pairing.counterpart(reconciler, record)
    if other is not None:
        yield Intent("link", _name(record), title, with_record=_name(other))
        return
    values = planner.read(source, fields, {})
    stamps = {name: Stamp(at=record.updated_at, system=ref.system) for name in values}
    incident = Incident.model_validate(
        {**nested_values(values), "changed": stamps, "id": "dry-run"}
    )
    targets = {m.key: reconciler.target(m) for m in mappings if m.key in reconciler.connectors}
    snap = Snapshot(
        incident=incident,
        records=(Record(link_id=0, ref=ref, observed=fields, observed_at=record.updated_at),),
        targets=targets,
        terminal=mappings.terminal_states(),
    )
    ops = planner.plan(snap, incident, reconciler.policy, {})
    creates = tuple(f"{op.target[0]} {op.object_type}" for op in ops if isinstance(op, Create))
    parks = [op for op in ops if isinstance(op, Park)]
    if parks:
        reasons = "; ".join(f"{p.target[0]}: {p.reason}" for p in parks)
        yield Intent("skip", _name(record), title, reason=f"would park ({reasons})")
        return
    yield Intent("create", _name(record), title, creates=creates)
