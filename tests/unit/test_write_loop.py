"""A record the engine would write forever is parked after a minute's worth of writes, with
the reason, instead of being written until the rate limits stop it (a circuit breaker against
a mapping that writes a value the system keeps in another form, or any other ping-pong)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from config.settings import SyncSettings
from mapping.registry import MappingSet
from mapping.spec import parse_mapping
from sync import store
from sync.executor import LOOP_LIMIT, WRITES_KEY, Executor, Outcome, _Held
from sync.planner import Update
from sync.reconcile import Reconciler
from tests.unit.test_planner_properties import JIRA, SN, Clock, FakeSystem


def test_a_record_written_over_and_over_is_parked_with_the_reason(tmp_path: Path) -> None:
    db = store.make_engine(f"sqlite:///{tmp_path / 'loop.db'}")
    store.migrate(db)
    clock = Clock()
    jira = FakeSystem("jira", clock, history_in_records=True)
    record = jira.create("issue", {"summary": "Checkout down"}, correlation_key="itsm-i1")
    connectors: dict[tuple[str, str], Any] = {("jira", "default"): jira}
    mappings = MappingSet({m.key: m for m in (parse_mapping(SN), parse_mapping(JIRA))})
    reconciler = Reconciler(db, connectors, lambda: mappings, SyncSettings())
    target = reconciler.target(mappings.get("jira"))
    with store.session_scope(db) as s:
        row = store.create_incident(s, {"title": "Checkout down"})
        link = store.add_link(
            s, incident_id=row.id, system="jira", instance="default", object_type="issue",
            remote_id=record.ref.id, remote_key=record.ref.key,
        )  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    lately = [(now - dt.timedelta(seconds=n)).isoformat() for n in range(LOOP_LIMIT - 1)]
    held = {("jira", "default"): _Held(link, {WRITES_KEY: lately}, [0], {}, [])}
    outcome = Outcome()
    executor = Executor(db, connectors, row.id, outcome)
    from mapping.model import Incident

    executor.run(
        Incident(id=row.id, title="x"), [Update(("jira", "default"), {"summary": "Checkout down!"})],
        {("jira", "default"): target}, held, {},
    )  # fmt: skip
    with store.session_scope(db, readonly=True) as s:
        parked = store.open_parked(s)
    assert outcome.parked == ["jira:default"]
    assert [p.target for p in parked] == ["jira:default"]
    assert f"was written {LOOP_LIMIT} times in 60 s (summary)" in parked[0].error
    # A record written now and then is not: the same write with no recent ones goes through.
    outcome = Outcome()
    held = {("jira", "default"): _Held(link, {}, [1], {}, [])}
    Executor(db, connectors, row.id, outcome).run(
        Incident(id=row.id, title="x"), [Update(("jira", "default"), {"summary": "Checkout"})],
        {("jira", "default"): target}, held, {},
    )  # fmt: skip
    assert outcome.parked == [] and outcome.writes == 1
    assert jira.records[record.ref.id]["summary"] == "Checkout"
