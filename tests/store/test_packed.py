"""Storage per edit (issue 14, ``python -m bench.storage``): the newest observation of each
record and the shadow of each link are kept compressed on SQLite (``sync.store.packed``), the
same dicts come back on both dialects, and migrations 0008 and 0009 compress those of an
existing database; the audit's time is an integer on SQLite (0010), the same aware datetimes
come back, in order."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text

from config.settings import RetentionSettings
from connectors.base import COMMENT_EVENT_KEY
from sync import store
from sync.retention import prune
from sync.store import make_engine, migrate, session_scope
from sync.store.packed import pack, unpack

UTC = dt.UTC
T0 = dt.datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
KEY = {"system": "jira", "instance": "default", "object_type": "issue", "remote_id": "10001"}


def _issue(summary: str) -> dict[str, Any]:
    """A Jira issue's fields as the REST API sends them: mostly links, avatars and nulls."""
    avatar = {f"{n}x{n}": f"https://avatars.example.com/initials/AA-1.png?size={n}" for n in
              (16, 24, 32, 48)}  # fmt: skip
    person = {"self": "https://jira.example.com/rest/api/2/user?accountId=5b10a2",
              "accountId": "5b10a2", "avatarUrls": avatar, "displayName": "Alice Anders",
              "active": True, "timeZone": "Europe/Berlin", "accountType": "atlassian"}  # fmt: skip
    return {
        "summary": summary, "description": "p99 latency above 2 s \u00e9\u4e2d", "assignee": person,
        "reporter": person, "creator": person, "labels": ["incident"], "resolution": None,
        "customfield_10010": {"self": "https://jira.example.com/rest/api/2/customFieldOption/1",
                              "value": "SEV1", "id": "10100"},
        "status": {"self": "https://jira.example.com/rest/api/2/status/3", "name": "In Progress",
                   "statusCategory": {"key": "indeterminate", "colorName": "yellow"}},
        "_field_changes": [{"id": "10001:0", "field": "summary", "value": summary, "old": None}],
        "_ref_key": "OPS-1",
    }  # fmt: skip


def _observe(engine: Engine, version: int, fields: dict[str, Any]) -> bool:
    with session_scope(engine) as s:
        return store.record_observation(
            s, **KEY, version=[version], fields=fields, source="webhook", observed_at=T0
        )


def test_an_observation_comes_back_as_it_went_in(engine: Engine) -> None:
    assert _observe(engine, 1, _issue("first"))
    assert _observe(engine, 2, _issue("second"))
    assert not _observe(engine, 1, _issue("late"))  # older: nothing changes
    with session_scope(engine, readonly=True) as s:
        obs = store.latest_observation(s, **KEY)
        assert obs is not None and obs.fields == _issue("second") and obs.version == [2]
    with session_scope(engine) as s:
        assert store.add_comment_events(s, **KEY, events=[{"id": "c1", "body": "hi"}])
    with session_scope(engine, readonly=True) as s:
        obs = store.latest_observation(s, **KEY)
        assert obs is not None and obs.fields[COMMENT_EVENT_KEY] == [{"id": "c1", "body": "hi"}]


def test_a_shadow_comes_back_as_it_went_in(engine: Engine) -> None:
    incident = _incident(engine)
    with session_scope(engine) as s:
        link = store.add_link(s, incident_id=incident, **KEY)
        store.set_shadow(s, link.id or 0, _issue("written"), [7])
    with session_scope(engine, readonly=True) as s:
        shadow = store.get_shadow(s, link.id or 0)
        assert shadow is not None and shadow.fields == _issue("written") and shadow.version == [7]
        state = store.incident_state(s, incident)  # the reconcile's read: Core, not the ORM
        assert state is not None and state.shadows[link.id or 0] is not None
        assert state.shadows[link.id or 0].fields == _issue("written")  # type: ignore[union-attr]


def _incident(engine: Engine) -> str:
    with session_scope(engine) as s:
        return store.create_incident(s, {"title": "Checkout fails"}).id


def _old_incident(engine: Engine, data: dict[str, Any] | None = None) -> str:
    """An incident as a release before 0012 stored it (JSON, no state column): the app's
    code writes the newest schema's columns, so a database at an older revision gets SQL."""
    incident_id = uuid.uuid4().hex
    at = "2026-12-07 02:00:00.000000" if engine.dialect.name == "sqlite" else T0
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO incident (id, data, created_at, updated_at, version)"
                " VALUES (:id, :data, :at, :at, 1)"
            ),
            {"id": incident_id, "data": json.dumps(data or {"title": "Checkout fails"}), "at": at},
        )
    return incident_id


def test_sqlite_keeps_an_observation_and_a_shadow_compressed(tmp_path: Path) -> None:
    """(PostgreSQL keeps JSONB, which TOAST compresses: nothing of ours to check there.)"""
    engine = make_engine(f"sqlite:///{tmp_path / 'packed.db'}")
    migrate(engine)
    fields = _issue("Checkout fails")
    _observe(engine, 1, fields)
    with engine.connect() as c:
        kind, size = c.execute(text("SELECT typeof(fields), length(fields) FROM observation")).one()
    engine.dispose()
    assert kind == "blob"
    assert size < len(json.dumps(fields)) / 3, (size, len(json.dumps(fields)))


def test_unpack_reads_what_was_stored_before_packing() -> None:
    value = {"a": [1, None, "x"], "b": {"c": "\u00e9"}}
    assert unpack(pack(value)) == value
    assert unpack(json.dumps(value)) == value  # TEXT, as 0007 stored it
    assert unpack(json.dumps(value).encode()) == value  # that TEXT cast to BLOB


def _upgrade(db: Any, revision: str, *, down: bool = False) -> None:
    """Migrate ``db`` up to ``revision`` only (a database as an older release left it), or
    back down to it."""
    config = store.alembic_config()
    with db.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_0008_0009_compress_the_observations_and_shadows_of_an_existing_database(
    dialect: str, fresh_url: Callable[[str], str]
) -> None:
    db = make_engine(fresh_url(dialect))
    try:
        _upgrade(db, "0007")
        incident = _old_incident(db)
        with session_scope(db) as s:
            link_id = store.add_link(s, incident_id=incident, **KEY).id
        fields = _issue("before the upgrade")
        at = "2026-12-07 02:00:00.000000" if dialect == "sqlite" else T0
        with db.begin() as c:  # rows as 0007 stored them (JSON text on SQLite, JSONB on PG)
            c.execute(
                text(
                    "INSERT INTO observation (system, instance, object_type, remote_id, version,"
                    " fields, source, observed_at) VALUES (:system, :instance, :object_type,"
                    " :remote_id, :version, :fields, 'poll', :at)"
                ),
                {**KEY, "version": "[3]", "fields": json.dumps(fields), "at": at},
            )
            c.execute(
                text(
                    "INSERT INTO shadow (link_id, fields, version, updated_at)"
                    " VALUES (:link, :fields, :version, :at)"
                ),
                {"link": link_id, "version": "[3]", "fields": json.dumps(fields), "at": at},
            )
        migrate(db)
        with session_scope(db, readonly=True) as s:
            obs = store.latest_observation(s, **KEY)
            assert obs is not None and obs.fields == fields and obs.version == [3]
            shadow = store.get_shadow(s, link_id or 0)
            assert shadow is not None and shadow.fields == fields and shadow.version == [3]
        if dialect == "sqlite":
            with db.connect() as c:
                for table in ("observation", "shadow"):
                    kind = c.execute(text(f"SELECT typeof(fields) FROM {table}")).scalar()
                    assert kind == "blob", table
        # and it goes on working: a newer observation and shadow replace them
        assert _observe(db, 4, _issue("after the upgrade"))
        with session_scope(db) as s:
            store.set_shadow(s, link_id or 0, _issue("after the upgrade"), [4])
        with session_scope(db, readonly=True) as s:
            obs = store.latest_observation(s, **KEY)
            assert obs is not None and obs.fields["summary"] == "after the upgrade"
        _upgrade(db, "0007", down=True)  # and back: 0007's JSON again
        with db.connect() as c:
            for table in ("observation", "shadow"):
                stored = c.execute(text(f"SELECT fields FROM {table}")).scalar()
                loaded = stored if isinstance(stored, dict) else json.loads(stored)
                assert loaded["summary"] == "after the upgrade", table
    finally:
        db.dispose()


def _audit(engine: Engine, incident: str, at: dt.datetime, after: str) -> None:
    with session_scope(engine) as s:
        store.audit(
            s, action="update", incident_id=incident, system="jira", instance="default",
            remote_id="10001", field="summary", before="a", after=after, at=at,
            reason="brought in line with the incident",
        )  # fmt: skip


def test_audit_times_come_back_aware_to_the_microsecond_and_in_order(engine: Engine) -> None:
    incident = _incident(engine)
    times = [T0 + dt.timedelta(microseconds=n) for n in (7, 1, 999_999)]
    for n, at in enumerate(times):
        _audit(engine, incident, at, f"v{n}")
    with session_scope(engine, readonly=True) as s:
        entries = store.history(s, incident)
    assert [e.at for e in entries] == sorted(times)  # ORDER BY at, in SQL
    assert all(e.at.tzinfo is not None and e.at.utcoffset() == dt.timedelta(0) for e in entries)
    # retention compares in SQL: exactly the rows older than the cutoff go
    pruned = prune(
        engine, RetentionSettings(audit_days=1), now=T0 + dt.timedelta(days=1, microseconds=5)
    )
    assert pruned["audit entries"] == 1
    with session_scope(engine, readonly=True) as s:
        assert [e.after for e in store.history(s, incident)] == ["v0", "v2"]


def test_sqlite_keeps_audit_times_as_integers(tmp_path: Path) -> None:
    """(PostgreSQL keeps timestamptz, 8 bytes already.)"""
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate(engine)
    _audit(engine, _incident(engine), T0, "x")
    with engine.connect() as c:
        kind, value = c.execute(text("SELECT typeof(at), at FROM audit")).one()
    engine.dispose()
    assert (kind, value) == ("integer", int(T0.timestamp()) * 1_000_000)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_0010_keeps_the_audit_times_of_an_existing_database(
    dialect: str, fresh_url: Callable[[str], str]
) -> None:
    db = make_engine(fresh_url(dialect))
    try:
        _upgrade(db, "0009")
        incident = _old_incident(db)
        stored = ["2026-12-07 02:00:00.000007", "2026-12-06 23:59:59.999999"]
        with db.begin() as c:  # rows as 0009 stored them (naive UTC text on SQLite)
            for n, at in enumerate(stored):
                c.execute(
                    text(
                        "INSERT INTO audit (at, incident_id, system, instance, remote_id,"
                        " action, field, actor, reason) VALUES (:at, :incident, 'jira',"
                        " 'default', '10001', 'update', :field, 'itsm-sync', '')"
                    ),
                    {"at": at if dialect == "sqlite" else dt.datetime.fromisoformat(at + "+00:00"),
                     "incident": incident, "field": f"f{n}"},
                )  # fmt: skip
        migrate(db)
        with session_scope(db, readonly=True) as s:
            entries = store.history(s, incident)
        assert [e.field for e in entries] == ["f1", "f0"]  # by time
        assert [e.at for e in entries] == [
            dt.datetime(2026, 12, 6, 23, 59, 59, 999_999, tzinfo=UTC),
            dt.datetime(2026, 12, 7, 2, 0, 0, 7, tzinfo=UTC),
        ]
        _audit(db, incident, T0 + dt.timedelta(hours=1), "new")  # and it goes on working
        with session_scope(db, readonly=True) as s:
            assert [e.after for e in store.history(s, incident)][-1] == "new"
        _upgrade(db, "0009", down=True)  # and back: text again on SQLite
        with db.connect() as c:
            first = c.execute(text("SELECT at FROM audit WHERE field = 'f0'")).scalar()
        if dialect == "sqlite":
            assert first == "2026-12-07 02:00:00.000007"
        else:
            assert first == dt.datetime(2026, 12, 7, 2, 0, 0, 7, tzinfo=UTC)
    finally:
        db.dispose()
