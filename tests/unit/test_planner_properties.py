"""Property tests: random edit sequences on both sides converge, and no edit is lost.

Two in-memory systems stand in for ServiceNow and Jira (each with a per-field history, as
sys_audit and the changelog keep it; one carries its history in every record as Jira's
changelog does, the other only answers when asked, as ServiceNow's sys_audit). Hypothesis
draws sequences of: a person's edit on either side (delivered at once, late, or never, so a
poll finds it), an edit that lands while the engine is writing that very record, and engine
passes. The real planner, executor and store run them. After the engine has caught up:

- both records hold the same values (convergence), and
- each field holds the value of the LAST person's edit to it, on either side, by the
  systems' own change times (per-field last-writer-wins: no update is lost).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete
from sqlalchemy.engine import Engine

from config.settings import SyncSettings
from connectors.base import (
    FIELD_CHANGES_KEY,
    OUR_UPDATES_KEY,
    Capability,
    FieldChange,
    RemoteComment,
    RemoteRecord,
    RemoteRef,
    Visibility,
)
from connectors.errors import NotFound
from mapping.registry import MappingSet
from mapping.spec import parse_mapping
from sync import store
from sync.ingest import store_records
from sync.reconcile import Reconciler
from sync.worker import Worker

SN = """
system: servicenow
object_type: incident
fields:
  title: {path: short_description}
  description: {path: description}
  state:
    path: state
    values: {new: "1", investigating: "2", resolved: "6"}
"""
JIRA = """
system: jira
object_type: issue
fields:
  title: {path: summary}
  description: {path: description}
  state:
    path: status.name
    values: {new: Open, investigating: "In Progress", resolved: Resolved}
"""
STATES = {
    "new": ("1", "Open"),
    "investigating": ("2", "In Progress"),
    "resolved": ("6", "Resolved"),
}
PATHS = {
    "servicenow": {"title": "short_description", "description": "description", "state": "state"},
    "jira": {"title": "summary", "description": "description", "state": "status"},
}


class Clock:
    """The systems' shared clock: people take a second or more between edits; an engine
    write a millisecond."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 9, 0, 0, 123456, tzinfo=dt.UTC)

    def tick(self, seconds: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


class FakeSystem:
    """An in-memory system with records, per-field history and a hook that lets a person's edit
    land just before the engine's next write is applied."""

    instance = "default"

    def __init__(self, system: str, clock: Clock, *, history_in_records: bool) -> None:
        self.system = system
        self.object_type = "incident" if system == "servicenow" else "issue"
        self.clock = clock
        self.carry = history_in_records
        self.capabilities = frozenset(
            {Capability.CREATE, Capability.UPDATE, Capability.TRANSITIONS,
             Capability.FIELD_HISTORY}
        )  # fmt: skip
        self.records: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, int] = {}
        self.updated: dict[str, dt.datetime] = {}
        self.history: dict[str, list[FieldChange]] = {}
        self.hook: Callable[[], None] | None = None

    # -- what people do ----------------------------------------------------------------

    def apply(self, rid: str, changes: Mapping[str, Any], step: float) -> str:
        at = self.clock.tick(step)
        self.versions[rid] += 1
        version = str(self.versions[rid])
        record = self.records[rid]
        for field, value in changes.items():
            if record.get(field) != value:
                self.history[rid].append(
                    FieldChange(
                        id=f"{rid}:{version}:{field}", field=field, value=value,
                        old=record.get(field), at=at, update=version,
                    )
                )  # fmt: skip
                record[field] = value
        self.updated[rid] = at
        return version

    def remote(self, rid: str) -> RemoteRecord:
        fields = dict(self.records[rid])
        if self.carry:
            fields[FIELD_CHANGES_KEY] = [c.to_json() for c in self.history[rid]]
        return RemoteRecord(
            ref=RemoteRef(self.system, self.instance, self.object_type, rid, rid),
            version=(self.versions[rid],),
            updated_at=self.updated[rid],
            fields=fields,
        )

    # -- the connector protocol -----------------------------------------------------------

    def object_types(self) -> Sequence[str]:
        return (self.object_type,)

    def changes_since(
        self, object_type: str, watermark: dt.datetime | None, *, page_size: int = 100
    ) -> Iterator[RemoteRecord]:
        return iter([self.remote(rid) for rid in self.records])

    def get(self, object_type: str, id_or_key: str) -> RemoteRecord:
        if id_or_key not in self.records:
            raise NotFound(id_or_key, system=self.system)
        return self.remote(id_or_key)

    def find_by_correlation(self, object_type: str, correlation_key: str) -> RemoteRecord | None:
        for rid, fields in self.records.items():
            if fields.get("stamp") == correlation_key:
                return self.remote(rid)
        return None

    def create(
        self,
        object_type: str,
        fields: Mapping[str, Any],
        *,
        correlation_key: str,
        look_first: bool = True,
    ) -> RemoteRecord:
        found = self.find_by_correlation(object_type, correlation_key)
        if found is not None:
            return found
        rid = f"{self.system[:2].upper()}-{len(self.records) + 1}"
        self.records[rid] = {**fields, "stamp": correlation_key}
        if self.system == "jira":
            self.records[rid].setdefault("status", {"name": "Open"})
        self.versions[rid], self.history[rid] = 0, []
        self.updated[rid] = self.clock.tick(0.001)
        return self.remote(rid)

    def update(self, ref: RemoteRef, fields: Mapping[str, Any]) -> RemoteRecord:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()  # a person's edit lands first; ours overwrites it
        version = self.apply(ref.id, fields, 0.001)
        record = self.remote(ref.id)
        return dataclasses.replace(record, fields={**record.fields, OUR_UPDATES_KEY: [version]})

    def transition(
        self, ref: RemoteRef, target: str, fields: Mapping[str, Any] | None = None, *,
        known: Mapping[str, Any] | None = None,
    ) -> RemoteRecord:  # fmt: skip
        state = {"state": target} if self.system == "servicenow" else {"status": {"name": target}}
        return self.update(ref, {**(fields or {}), **state})

    def comments(self, ref: RemoteRef) -> list[RemoteComment]:
        return []

    def known_comments(
        self, fields: Mapping[str, Any], through: tuple[int, ...] | None
    ) -> list[RemoteComment] | None:
        return []

    def add_comment(
        self, ref: RemoteRef, body: str, *, visibility: Visibility, origin: str = ""
    ) -> RemoteComment:
        raise AssertionError("no comments in this test")

    def person_by_email(self, email: str) -> Any:
        raise NotFound(email, system=self.system)

    def person_by_id(self, person_id: str) -> Any:
        raise NotFound(person_id, system=self.system)

    def parse_webhook(self, headers: Any, body: bytes, query: Any = None) -> list[Any]:
        return []

    def field_changes(self, ref: RemoteRef, since: dt.datetime | None) -> list[FieldChange]:
        return [c for c in self.history[ref.id] if since is None or c.at >= since]

    def stamps(self, fields: Mapping[str, Any]) -> list[str]:
        return [str(fields.get("stamp") or "")]

    def partners(self, ref: RemoteRef, fields: Mapping[str, Any]) -> list[tuple[str, str]]:
        return []

    def text_limit(self, path: str) -> int | None:
        return None

    def inert(self, text: str) -> str:
        return text


def remote_value(system: str, field: str, value: str) -> Any:
    if field == "state":
        sn, jira = STATES[value]
        return sn if system == "servicenow" else {"name": jira}
    return value


def canonical(system: str, field: str, raw: Any) -> str:
    if field == "state":
        wanted = raw if system == "servicenow" else (raw or {}).get("name")
        column = 0 if system == "servicenow" else 1
        return next(name for name, pair in STATES.items() if pair[column] == wanted)
    return str(raw or "")


edits = st.tuples(
    st.sampled_from(["servicenow", "jira"]),
    st.sampled_from(["title", "title", "description", "state"]),  # most often the same field
    st.sampled_from(["new", "investigating", "resolved"]),  # state values; text for the others
    st.sampled_from(["now", "late", "never", "during-write"]),  # how the engine hears of it
)
# Several edits between engine passes, so both sides often change one field before it looks.
steps = st.lists(st.one_of(edits, edits, edits, st.just("sync")), min_size=1, max_size=14)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One migrated database for every example (emptied before each: migrating is slow)."""
    engine = store.make_engine(f"sqlite:///{tmp_path_factory.mktemp('planner') / 'p.db'}")
    store.migrate(engine)
    yield engine
    engine.dispose()


def _empty(db: Engine) -> None:
    with store.session_scope(db) as s:
        for table in reversed(store.metadata.sorted_tables):
            if table.name != "alembic_version":
                s.exec(delete(table))  # type: ignore[call-overload]


@settings(
    max_examples=60, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
# The cases that matter most, always tried: both sides changed the title, the older edit seen
# last; an engineer's edit landing while the engine writes the desk's older one; an older edit
# whose delivery comes late, after a newer one was synced.
@example(
    plan=[("jira", "title", "new", "now"), ("servicenow", "title", "new", "now"), "sync"],
    text=["by jira", "by desk", *"abcdefghijkl"],
)
@example(
    plan=[("servicenow", "title", "new", "now"), ("jira", "title", "new", "during-write"), "sync"],
    text=["by desk", "by jira", *"abcdefghijkl"],
)
@example(
    plan=[
        ("jira", "state", "resolved", "late"),
        ("servicenow", "state", "investigating", "now"),
        "sync",
    ],
    text=list("abcdefghijklmn"),
)
# A field set back to the value it had (A -> B -> A) after the other side changed it: the
# last edit, though it restores the value we held, still wins.
@example(
    plan=[
        ("servicenow", "state", "investigating", "now"),
        ("jira", "state", "investigating", "now"),
        ("servicenow", "state", "new", "now"),
    ],
    text=list("abcdefghijklmn"),
)
@given(plan=steps, text=st.lists(st.text("abc xyz", min_size=1, max_size=8), min_size=14))
def test_edits_on_both_sides_converge_and_the_last_writer_wins_per_field(
    plan: list[Any], text: list[str], db: Engine
) -> None:
    _empty(db)
    clock = Clock()
    sn = FakeSystem("servicenow", clock, history_in_records=False)  # sys_audit: read on demand
    jira = FakeSystem("jira", clock, history_in_records=True)  # the changelog rides along
    systems = {"servicenow": sn, "jira": jira}
    mappings = MappingSet({m.key: m for m in (parse_mapping(SN), parse_mapping(JIRA))})
    connectors: dict[tuple[str, str], Any] = {
        ("servicenow", "default"): sn,
        ("jira", "default"): jira,
    }
    reconciler = Reconciler(db, connectors, lambda: mappings, SyncSettings())
    reconciler.policy = dataclasses.replace(reconciler.policy, create_when={}, follow={})

    # The desk opens the incident; the engine creates its Jira issue.
    sn.records["INC1"] = {"short_description": "opened", "description": "", "state": "1"}
    sn.versions["INC1"], sn.history["INC1"] = 0, []
    sn.updated["INC1"] = clock.tick(1)
    last: dict[str, tuple[dt.datetime, str]] = {
        "title": (clock.now, "opened"), "description": (clock.now, ""), "state": (clock.now, "new"),
    }  # fmt: skip
    late: list[RemoteRecord] = []

    def deliver(record: RemoteRecord) -> None:
        store_records(db, [record])

    def sync() -> None:
        for record in late:
            deliver(record)
        late.clear()
        for system in systems.values():
            store_records(db, list(system.changes_since(system.object_type, None)))
        worker = Worker(reconciler)
        for _ in range(200):  # until nothing is due (a drain without its idle waits)
            if not worker.step():
                break

    sync()
    assert jira.records, "the engine created the Jira issue"
    words = iter(text)
    for step in plan:
        if step == "sync":
            sync()
            continue
        side, field, state, how = step
        system = systems[side]
        if not system.records:
            continue
        rid = next(iter(system.records))
        value = state if field == "state" else next(words)
        path = PATHS[side][field]
        change = {path: remote_value(side, field, value)}

        def edit(system: FakeSystem = system, rid: str = rid, change: Any = change,
                 field: str = field, value: str = value, how: str = how) -> None:  # fmt: skip
            before = len(system.history[rid])
            system.apply(rid, change, 1.5)
            if len(system.history[rid]) > before:  # setting the value it has changes nothing
                last[field] = (system.clock.now, value)
            record = system.remote(rid)
            if how == "now":
                deliver(record)
            elif how in ("late", "during-write"):
                late.append(record)

        if how == "during-write" and system.hook is None:
            system.hook = edit
        else:
            edit()
    for system in systems.values():  # an edit still waiting for a write happens now
        if system.hook is not None:
            hook, system.hook = system.hook, None
            hook()
    for _ in range(4):
        sync()

    for field in ("title", "description", "state"):
        seen = {
            side: canonical(side, field, system.records[next(iter(system.records))].get(
                PATHS[side][field]
            ))
            for side, system in systems.items()
        }  # fmt: skip
        assert seen["servicenow"] == seen["jira"], f"{field} did not converge: {seen}"
        assert seen["servicenow"] == last[field][1], (
            f"{field}: the last edit ({last[field][1]!r}) was lost: {seen}"
        )
