"""The store on both dialects: schema, links, observations, watermarks, deliveries, audit..."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError, StatementError

from sync import store
from sync.queue import next_backoff
from sync.store import (
    IncidentRow,
    LinkConflict,
    StaleIncident,
    Watermark,
    include_object,
    make_engine,
    metadata,
    migrate,
    session_scope,
)

UTC = dt.UTC
T0 = dt.datetime(2024, 3, 10, 12, 0, 0, 123456, tzinfo=UTC)
JIRA = {"system": "jira", "instance": "default", "object_type": "issue"}


def _head() -> str:
    head = ScriptDirectory.from_config(store.alembic_config()).get_current_head()
    assert head is not None
    return head


def _revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _incident(engine: Engine, title: str = "db down") -> str:
    with session_scope(engine) as session:
        return store.create_incident(session, {"title": title}).id


# ---------------------------------------------------------------------------------- schema


def test_migrate_twice_is_idempotent(engine: Engine) -> None:
    migrate(engine)
    migrate(engine)
    assert _revision(engine) == _head()
    assert set(inspect(engine).get_table_names()) == {*metadata.tables, "alembic_version"}


def test_schema_head_is_the_newest_migration_and_a_database_behind_it_is_upgraded(
    tmp_path: Path,
) -> None:
    # migrate() skips alembic for a database at SCHEMA_HEAD: a new migration must move it.
    assert _head() == store.SCHEMA_HEAD
    db = make_engine(f"sqlite:///{tmp_path / 'behind.db'}")
    config = store.alembic_config()
    with db.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0012")
    assert _revision(db) == "0012"
    migrate(db)  # one behind: not skipped
    assert _revision(db) == store.SCHEMA_HEAD
    migrate(db)  # at the head: nothing to do, and nothing breaks
    assert _revision(db) == store.SCHEMA_HEAD


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_instances_starting_together_migrate_once(
    dialect: str, fresh_url: Callable[[str], str]
) -> None:
    fresh = make_engine(fresh_url(dialect))
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def run() -> None:
        try:
            start.wait(timeout=10)
            migrate(fresh)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert _revision(fresh) == _head()
    finally:
        fresh.dispose()


def test_orm_metadata_matches_the_migration(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include_object}
        )
        assert compare_metadata(context, metadata) == []


def test_sqlite_connection_settings(tmp_path: object) -> None:
    sqlite = make_engine(f"sqlite:///{tmp_path}/settings.db")
    with sqlite.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    sqlite.dispose()


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        store.add_link(session, incident_id="no-such-incident", remote_id="1", **JIRA)


def test_a_failed_scope_rolls_back(engine: Engine) -> None:
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        store.create_incident(session, {"title": "x"}, incident_id="gone")
        raise RuntimeError("boom")
    with session_scope(engine, readonly=True) as session:
        assert store.get_incident(session, "gone") is None


def test_a_reader_does_not_wait_for_a_writer(engine: Engine) -> None:
    with session_scope(engine) as writer:
        store.create_incident(writer, {"title": "uncommitted"}, incident_id="w")
        started = time.monotonic()
        with session_scope(engine, readonly=True) as reader:
            assert store.get_incident(reader, "w") is None  # not committed yet
        assert time.monotonic() - started < 5  # no wait for the write lock
    with session_scope(engine, readonly=True) as reader:
        assert store.get_incident(reader, "w") is not None


# ---------------------------------------------------------------------------------- time


def test_aware_utc_datetimes_round_trip(engine: Engine) -> None:
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    local = dt.datetime(2024, 3, 10, 17, 30, 0, 654321, tzinfo=india)
    with session_scope(engine) as session:
        store.set_watermark(
            session, system="jira", instance="default", object_type="issue", value=local
        )
    with session_scope(engine, readonly=True) as session:
        if engine.dialect.name == "postgresql":  # the server answers in the session's zone
            session.connection().execute(text("SET TIME ZONE 'America/New_York'"))
        row = session.get(Watermark, ("jira", "default", "issue"))
        assert row is not None
        assert row.value == local
        assert row.value is not None and row.value.tzinfo is UTC
        assert row.value.hour == 12 and row.value.microsecond == 654321
        assert row.updated_at.tzinfo is UTC


def test_naive_datetimes_are_refused(engine: Engine) -> None:
    with pytest.raises(StatementError, match="naive datetime"), session_scope(engine) as session:
        store.set_watermark(
            session,
            **JIRA,
            value=dt.datetime(2024, 1, 1),  # no tzinfo: ambiguous
        )


# ---------------------------------------------------------------------------------- incidents


def test_incident_save_bumps_version_and_refuses_stale_rows(engine: Engine) -> None:
    with session_scope(engine) as session:
        row = store.create_incident(session, {"title": "db down", "severity": "SEV2"})
        assert row.version == 1 and len(row.id) == 32
    with session_scope(engine) as session:
        loaded = store.get_incident(session, row.id)
        assert loaded is not None and loaded.data == {"title": "db down", "severity": "SEV2"}
        store.save_incident(session, loaded, {"title": "db down", "severity": "SEV1"})
        assert loaded.version == 2
    with session_scope(engine, readonly=True) as session:
        again = store.get_incident(session, row.id)
        assert again is not None and again.version == 2 and again.data["severity"] == "SEV1"
        assert again.updated_at >= again.created_at
    with pytest.raises(StaleIncident), session_scope(engine) as session:
        store.save_incident(session, row, {"title": "lost update"})  # row is still version 1


# ---------------------------------------------------------------------------------- links


def test_a_remote_record_is_linked_once(engine: Engine) -> None:
    first, second = _incident(engine), _incident(engine)
    with session_scope(engine) as session:
        link = store.add_link(
            session, incident_id=first, remote_id="10001", remote_key="OPS-1", **JIRA
        )
        assert link.id is not None and link.remote_key == "OPS-1"
        # The same link again is a harmless re-run.
        assert store.add_link(session, incident_id=first, remote_id="10001", **JIRA).id == link.id
    with session_scope(engine) as session:
        with pytest.raises(LinkConflict) as conflict:
            store.add_link(session, incident_id=second, remote_id="10001", **JIRA)
        assert conflict.value.existing.id == link.id
        assert conflict.value.existing.incident_id == first
        # One record per target: a second Jira issue for the first incident is refused too.
        with pytest.raises(LinkConflict) as conflict:
            store.add_link(session, incident_id=first, remote_id="10002", **JIRA)
        assert conflict.value.existing.remote_id == "10001"
        # The transaction is still usable after a conflict.
        other = store.add_link(session, incident_id=second, remote_id="10002", **JIRA)
    with session_scope(engine, readonly=True) as session:
        assert [x.id for x in store.links_of(session, first)] == [link.id]
        assert [x.id for x in store.links_of(session, second)] == [other.id]
        found = store.find_link(session, remote_id="10002", **JIRA)
        assert found is not None and found.incident_id == second
        assert store.find_link(session, remote_id="nope", **JIRA) is None


def test_racing_workers_cannot_both_link_one_record(engine: Engine) -> None:
    incidents = [_incident(engine) for _ in range(4)]
    start = threading.Barrier(len(incidents))
    outcomes: list[str] = []

    def link(incident_id: str) -> None:
        start.wait(timeout=10)
        try:
            with session_scope(engine) as session:
                store.add_link(session, incident_id=incident_id, remote_id="race", **JIRA)
            outcomes.append("linked")
        except LinkConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=link, args=(i,)) for i in incidents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["conflict"] * 3 + ["linked"]


def test_shadow_is_replaced_and_goes_with_its_link(engine: Engine) -> None:
    incident_id = _incident(engine)
    with session_scope(engine) as session:
        link = store.add_link(session, incident_id=incident_id, remote_id="1", **JIRA)
        assert link.id is not None
        assert store.get_shadow(session, link.id) is None
        store.set_shadow(session, link.id, {"summary": "a", "priority": "High"}, (3,))
        shadow = store.set_shadow(session, link.id, {"summary": "b"}, [4, 1])
        assert shadow.fields == {"summary": "b"} and shadow.version == [4, 1]
    with session_scope(engine, readonly=True) as session:
        stored = store.get_shadow(session, link.id)
        assert stored is not None and stored.fields == {"summary": "b"} and stored.version == [4, 1]
    with session_scope(engine) as session:  # deleting the incident takes links and shadows
        row = session.get(IncidentRow, incident_id)
        session.delete(row)
    with session_scope(engine, readonly=True) as session:
        assert store.get_shadow(session, link.id) is None


def test_incident_state_is_everything_a_reconcile_reads(engine: Engine) -> None:
    """One read for the incident, its links with their records' newest observations and their
    shadows, and one for its backoffs, open parked targets and synced comments."""
    assert _incident(engine) != ""
    with session_scope(engine, readonly=True) as session:
        assert store.incident_state(session, "nope") is None
    lonely = _incident(engine, "no links yet")
    incident_id = _incident(engine)
    at = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    with session_scope(engine) as session:
        seen = store.add_link(session, incident_id=incident_id, remote_id="1", **JIRA)
        new = store.add_link(
            session, incident_id=incident_id, system="servicenow", instance="default",
            object_type="incident", remote_id="s1",
        )  # fmt: skip
        assert seen.id is not None and new.id is not None
        store.record_observation(
            session, system="jira", instance="default", object_type="issue", remote_id="1",
            version=[7], fields={"summary": "db down"}, source="webhook", remote_updated_at=at,
        )  # fmt: skip
        store.set_shadow(session, seen.id, {"summary": "db"}, [6])
        store.park(session, incident_id=incident_id, target="statuspage:default", error="400")
        closed = store.park(session, incident_id=incident_id, target="jira:eu", error="400")
        store.resolve_parked(session, closed.id or 0)
        next_backoff(session, incident_id, "jira:default", "503", now=at)
        store.link_comment(
            session, incident_id=incident_id, canonical_id="c1", system="jira",
            instance="default", remote_id="10001", direction="in",
        )  # fmt: skip
        store.link_comment(
            session, incident_id="other", canonical_id="c9", system="jira",
            instance="default", remote_id="10009", direction="in",
        )  # fmt: skip
    with session_scope(engine, readonly=True) as session:
        state = store.incident_state(session, incident_id)
        empty = store.incident_state(session, lonely)
    assert state is not None and empty is not None
    assert (state.version, state.data) == (1, {"title": "db down"})
    assert [x.id for x in state.links] == [seen.id, new.id]
    assert state.links[1].system == "servicenow" and state.links[1].remote_id == "s1"
    observed = state.observations[seen.id]
    assert observed is not None and observed.version == [7]
    assert observed.fields == {"summary": "db down"} and observed.remote_updated_at == at
    assert state.observations[new.id] is None
    shadow = state.shadows[seen.id]
    assert shadow is not None and (shadow.fields, shadow.version) == ({"summary": "db"}, [6])
    assert state.shadows[new.id] is None
    assert state.parked == {"statuspage:default"}
    assert list(state.backoffs) == ["jira:default"] and state.backoffs["jira:default"] > at
    assert state.comments == [("c1", "jira", "default", "10001")]
    assert (empty.links, empty.parked, empty.backoffs, empty.comments) == ([], set(), {}, [])
    assert empty.data == {"title": "no links yet"}


# ---------------------------------------------------------------------------------- observations


def test_stale_observations_are_ignored(engine: Engine) -> None:
    ref: dict[str, Any] = {**JIRA, "remote_id": "10001"}
    with session_scope(engine) as session:
        assert store.record_observation(
            session,
            **ref,
            version=[5],
            fields={"summary": "v5"},
            source="webhook",
            remote_updated_at=T0,
        )
        assert not store.record_observation(
            session, **ref, version=[4], fields={"summary": "late"}, source="webhook"
        )
        assert not store.record_observation(
            session, **ref, version=[5], fields={"summary": "dup"}, source="poll"
        )
    with session_scope(engine) as session:
        seen = store.latest_observation(session, **ref)
        assert seen is not None
        assert (seen.version, seen.fields, seen.source) == ([5], {"summary": "v5"}, "webhook")
        assert seen.remote_updated_at == T0
        assert store.record_observation(
            session, **ref, version=[5, 1], fields={"summary": "v5.1"}, source="poll"
        )
        seen = store.latest_observation(session, **ref)
        assert seen is not None and seen.fields == {"summary": "v5.1"} and seen.version == [5, 1]
        assert seen.remote_updated_at is None
        assert store.latest_observation(session, **{**ref, "remote_id": "other"}) is None


def test_concurrent_observations_keep_the_newest(engine: Engine) -> None:
    ref: dict[str, Any] = {**JIRA, "remote_id": "10001"}
    start = threading.Barrier(6)
    newer: list[int] = []

    def observe(version: int) -> None:
        start.wait(timeout=10)
        with session_scope(engine) as session:
            if store.record_observation(
                session, **ref, version=[version], fields={"v": version}, source="webhook"
            ):
                newer.append(version)

    threads = [threading.Thread(target=observe, args=(v,)) for v in (3, 1, 6, 2, 5, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    with session_scope(engine, readonly=True) as session:
        seen = store.latest_observation(session, **ref)
        assert seen is not None and seen.version == [6] and seen.fields == {"v": 6}
    assert 6 in newer and newer == sorted(newer)  # each accepted one was newer than the last


# ---------------------------------------------------------------------------------- watermarks


def test_watermark_never_moves_back(engine: Engine) -> None:
    with session_scope(engine) as session:
        assert store.get_watermark(session, **JIRA) is None
        assert store.set_watermark(session, **JIRA, value=T0) == T0
        later = T0 + dt.timedelta(minutes=5)
        assert store.set_watermark(session, **JIRA, value=later) == later
        assert store.set_watermark(session, **JIRA, value=T0) == later
    with session_scope(engine, readonly=True) as session:
        assert store.get_watermark(session, **JIRA) == later
        assert store.get_watermark(session, **{**JIRA, "object_type": "other"}) is None


# ---------------------------------------------------------------------------------- deliveries


def test_a_delivery_is_recorded_once(engine: Engine) -> None:
    with session_scope(engine) as session:
        assert store.record_delivery(
            session,
            system="jira",
            delivery_id="d-1",
            status="accepted",
            body="{}",
            headers={"x-atlassian-webhook-identifier": "d-1"},
        )
        assert not store.record_delivery(
            session, system="jira", delivery_id="d-1", status="accepted"
        )
        # Ids are per system.
        assert store.record_delivery(
            session, system="servicenow", delivery_id="d-1", status="accepted"
        )
        big = "é" * (store.MAX_BODY_BYTES)  # 2 MiB of UTF-8
        assert store.record_delivery(
            session,
            system="jira",
            delivery_id="d-2",
            status="malformed",
            reason="not JSON",
            body=big,
        )
    with session_scope(engine, readonly=True) as session:
        accepted = session.get(store.WebhookDelivery, ("jira", "d-1"))
        assert accepted is not None and accepted.body is None  # kept only for bad ones
        assert accepted.headers == {"x-atlassian-webhook-identifier": "d-1"}
        malformed = session.get(store.WebhookDelivery, ("jira", "d-2"))
        assert malformed is not None and malformed.body is not None
        assert len(malformed.body.encode()) == store.MAX_BODY_BYTES
        assert malformed.reason == "not JSON"
    with pytest.raises(ValueError), session_scope(engine) as session:
        store.record_delivery(session, system="jira", delivery_id="d-3", status="ok")  # type: ignore[arg-type]


def test_concurrent_redeliveries_are_accepted_once(engine: Engine) -> None:
    start = threading.Barrier(4)
    results: list[bool] = []

    def deliver() -> None:
        start.wait(timeout=10)
        with session_scope(engine) as session:
            results.append(
                store.record_delivery(session, system="jira", delivery_id="x", status="accepted")
            )

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False, False, False, True]


# ---------------------------------------------------------------------------------- audit


def test_history_is_in_time_order(engine: Engine) -> None:
    incident_id = _incident(engine)
    with session_scope(engine) as session:
        store.audit(
            session,
            action="update",
            incident_id=incident_id,
            at=T0 + dt.timedelta(1),
            field="severity",
            before="SEV3",
            after="SEV2",
            system="jira",
            remote_id="1",
        )
        store.audit(session, action="create", incident_id=incident_id, at=T0, system="jira")
        store.audit(session, action="comment", incident_id=incident_id, at=T0, reason="second")
        store.audit(session, action="skip", incident_id="someone-else", at=T0)
        with pytest.raises(ValueError):
            store.audit(session, action="explode", incident_id=incident_id)  # type: ignore[arg-type]
    with session_scope(engine, readonly=True) as session:
        trail = store.history(session, incident_id)
        assert [(e.action, e.reason) for e in trail] == [
            ("create", ""),
            ("comment", "second"),
            ("update", ""),
        ]
        assert trail[2].before == "SEV3" and trail[2].after == "SEV2"
        assert trail[0].at == T0 and trail[0].actor == "itsm-sync"


# ---------------------------------------------------------------------------------- parked


def test_park_updates_the_open_item_and_resolve_closes_it(engine: Engine) -> None:
    with session_scope(engine) as session:
        first = store.park(
            session,
            incident_id="i1",
            target="jira:default",
            error="400",
            remote_message="Field 'x' cannot be set",
            status=400,
        )
        again = store.park(
            session,
            incident_id="i1",
            target="jira:default",
            error="400 again",
            remote_message="still",
            status=400,
        )
        assert again.id == first.id and again.attempts == 2 and again.error == "400 again"
        other = store.park(session, incident_id="i1", target="statuspage:default", error="403")
        assert other.id != first.id
    with session_scope(engine) as session:
        assert [p.id for p in store.open_parked(session)] == [first.id, other.id]
        assert first.id is not None
        assert store.resolve_parked(session, first.id)
        assert not store.resolve_parked(session, first.id)  # already resolved
        assert [p.id for p in store.open_parked(session, incident_id="i1")] == [other.id]
    with session_scope(engine) as session:  # parking again after a resolve opens a new item
        reopened = store.park(session, incident_id="i1", target="jira:default", error="400")
        assert reopened.id not in (first.id, other.id) and reopened.attempts == 1
        closed = store.get_parked(session, first.id)
        assert closed is not None and closed.resolved_at is not None
        assert closed.resolved_at.tzinfo is UTC


# ---------------------------------------------------------------------------------- comments


def test_a_remote_comment_is_synced_once(engine: Engine) -> None:
    with session_scope(engine) as session:
        args = {
            "incident_id": "i1",
            "canonical_id": "c1",
            "system": "jira",
            "instance": "default",
            "remote_id": "500",
        }
        assert store.link_comment(session, **args, direction="in")
        assert not store.link_comment(session, **args, direction="in")
        assert store.link_comment(session, **{**args, "system": "servicenow"}, direction="out")
        found = store.find_comment_link(session, system="jira", instance="default", remote_id="500")
        assert found is not None and found.canonical_id == "c1" and found.direction == "in"
        assert [c.system for c in store.comment_links(session, "i1")] == ["jira", "servicenow"]


# ---------------------------------------------------------------------------------- mappings


def test_mapping_versions_oldest_first(engine: Engine) -> None:
    with session_scope(engine) as session:
        store.add_mapping_version(
            session,
            system="jira",
            instance="default",
            digest="b",
            source="v2",
            diff="-a\n+b",
            accepted_by="admin",
            accepted_at=T0 + dt.timedelta(hours=1),
        )
        store.add_mapping_version(
            session, system="jira", instance="default", digest="a", source="v1", accepted_at=T0
        )
        store.add_mapping_version(session, system="jira", instance="eu", digest="z", source="")
    with session_scope(engine, readonly=True) as session:
        versions = store.mapping_versions(session, system="jira", instance="default")
        assert [v.digest for v in versions] == ["a", "b"]
        assert versions[1].diff == "-a\n+b" and versions[1].accepted_by == "admin"


def test_consecutive_journal_deliveries_are_joined(engine: Engine) -> None:
    """ServiceNow deliveries say which journal entries their update wrote; when a second one
    lands before a reconcile read the first, the stored observation says it for both, and a
    delivery after a gap says only its own (the reader then sees the gap)."""
    ref: dict[str, Any] = {
        "system": "servicenow", "instance": "default", "object_type": "incident",
        "remote_id": "a" * 32,
    }  # fmt: skip

    def journal(after: int, *ids: str) -> dict[str, Any]:
        return {"_journal": {"after": [after], "entries": [{"sys_id": i} for i in ids]}}

    with session_scope(engine) as s:
        store.record_observation(s, **ref, version=[3], fields=journal(2, "j1"), source="webhook")
        store.record_observation(s, **ref, version=[4], fields=journal(3, "j2"), source="webhook")
        store.record_observation(s, **ref, version=[5], fields=journal(4), source="webhook")
    with session_scope(engine) as s:
        seen = store.latest_observation(s, **ref)
        assert seen is not None and seen.fields["_journal"] == {
            "after": [2],
            "entries": [{"sys_id": "j1"}, {"sys_id": "j2"}],
        }
        store.record_observation(s, **ref, version=[7], fields=journal(6, "j4"), source="webhook")
    with session_scope(engine) as s:
        seen = store.latest_observation(s, **ref)
        assert seen is not None and seen.fields["_journal"] == {
            "after": [6],
            "entries": [{"sys_id": "j4"}],
        }


def test_a_comment_delivered_alone_rides_on_the_observation(engine: Engine) -> None:
    ref: dict[str, Any] = {**JIRA, "remote_id": "10001"}
    with session_scope(engine) as s:
        assert not store.add_comment_events(s, **ref, events=[{"id": "1"}])  # nothing stored
        store.record_observation(s, **ref, version=[5], fields={"summary": "v5"}, source="webhook")
        assert store.add_comment_events(s, **ref, events=[{"id": "1", "body": "hi"}])
        assert store.add_comment_events(s, **ref, events=[{"id": "1", "body": "hi"}])  # again
    with session_scope(engine) as s:
        seen = store.latest_observation(s, **ref)
        assert seen is not None and seen.version == [5]
        assert seen.fields["_comment_event"] == [{"id": "1", "body": "hi"}]
        # A newer delivery of the issue keeps the comment until a reconcile has seen it.
        store.record_observation(s, **ref, version=[6], fields={"summary": "v6"}, source="poll")
    with session_scope(engine) as s:
        seen = store.latest_observation(s, **ref)
        assert seen is not None and seen.fields["summary"] == "v6"
        assert seen.fields["_comment_event"] == [{"id": "1", "body": "hi"}]


def test_open_incidents_are_found_through_the_state_index(engine: Engine) -> None:
    """The overview and the overdue count look for open incidents by an expression that must be
    the index's own (migration 0007), or every incident's JSON is read."""
    with session_scope(engine) as s:
        statement = sa_select(IncidentRow.id).where(store.state_of(s).in_(["new", "monitoring"]))
        compiled = statement.compile(s.get_bind(), compile_kwargs={"literal_binds": True})
        prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
        if engine.dialect.name == "postgresql":
            s.connection().exec_driver_sql("SET enable_seqscan = off")
        plan = " ".join(str(r) for r in s.connection().exec_driver_sql(f"{prefix}{compiled}"))
    assert "ix_incident_state" in plan, plan
    opened, closed = _incident(engine), _incident(engine, "over")
    with session_scope(engine) as s:
        for incident_id, state in ((opened, "new"), (closed, "closed")):
            row = s.get(IncidentRow, incident_id)
            assert row is not None
            store.save_incident(s, row, {**row.data, "state": state})
    with session_scope(engine) as s:
        found = s.execute(sa_select(IncidentRow.id).where(store.state_of(s).in_(["new"]))).all()
    assert [r[0] for r in found] == [opened]
