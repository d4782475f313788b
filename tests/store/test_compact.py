"""Storage per edit, the rest of issue 14 (``python -m bench.storage``): on SQLite the audit's
hex ids are 16 bytes and its repetitive strings small integers, the incident's data is packed
(its state and parent are columns), and packing uses a preset dictionary; every reader gets
back exactly what was written, on both dialects, and migrations 0011 and 0012 convert (and
give back) an existing database."""

from __future__ import annotations

import datetime as dt
import json
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy import select as sa_select
from sqlmodel import col, select

from service.domain import incidents as incident_views
from service.sample import populate
from sync import store
from sync.store import make_engine, migrate, session_scope
from sync.store.db import json_bytes, json_dumps
from sync.store.dictionaries import build
from sync.store.packed import (
    CODEBOOK,
    current_dictionary,
    dictionaries,
    inflate,
    pack,
    unpack,
)

UTC = dt.UTC
T0 = dt.datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
CONTRACTS = Path(__file__).parents[2].parent / "shared" / "api-contracts"
SYS_ID = "c537bae64f411200adf9f8e18110c76e"  # a ServiceNow sys_id: 32 lower-case hex digits


def _audit_rows(incident: str) -> list[dict[str, Any]]:
    """Audit rows as the engine, the tracker and people write them, and the odd ones: ids that
    are not hex (or upper-case hex), strings in the codebook and not, NULL and empty fields."""
    base = {"incident_id": incident, "system": "", "instance": "", "remote_id": "",
            "field": None, "before": None, "after": None, "actor": "itsm-sync", "reason": ""}  # fmt: skip
    return [
        base | {"action": "update", "system": "servicenow", "remote_id": SYS_ID, "field": "title",
                "before": "Checkout fails", "after": "Checkout fails, round 1",
                "reason": "changed in servicenow INC0010002"},
        base | {"action": "update", "system": "jira", "instance": "default", "remote_id": "10001",
                "field": "summary", "before": "Checkout fails", "after": "Checkout fails, round 1",
                "reason": "brought in line with the incident"},
        base | {"action": "create", "system": "jira", "instance": "default",
                "reason": "about to create its record"},
        base | {"action": "override", "actor": "token:dana", "field": "gate",
                "reason": "customer-facing fix shipped; the review meets next week"},
        base | {"action": "conflict", "system": "statuspage", "instance": "status-eu",
                "remote_id": SYS_ID.upper(), "field": "customfield_99", "after": {"x": [1, None]},
                "reason": "both changed state; jira wins (\u00e9\u4e2d)"},
        base | {"action": "park", "remote_id": "0" * 31 + "g", "reason": "itsm-sync"},
        base | {"action": "skip", "incident_id": None, "system": "default", "field": "",
                "actor": "default", "reason": "update"},
    ]  # fmt: skip


def _write_audit(engine: Engine, rows: list[dict[str, Any]]) -> None:
    for n, row in enumerate(rows):
        with session_scope(engine) as s:
            store.audit(s, **row, at=T0 + dt.timedelta(seconds=n))


def test_the_audit_trail_comes_back_as_it_was_written(engine: Engine) -> None:
    """What ``itsm-sync history``, ``/api/audit`` and the console show: the same JSON."""
    with session_scope(engine) as s:
        incident = store.create_incident(s, {"title": "Checkout fails", "state": "new"}).id
    rows = _audit_rows(incident)
    _write_audit(engine, rows)
    with session_scope(engine, readonly=True) as s:
        entries = incident_views.history(s, ident=incident)["entries"]
        everything = s.exec(select(store.AuditEntry).order_by(col(store.AuditEntry.id))).all()
    expected = [
        {
            **row,
            "id": n + 1,
            "at": (T0 + dt.timedelta(seconds=n)).isoformat().replace("+00:00", "Z"),
        }
        for n, row in enumerate(rows)
    ]
    got = [{**e, "at": e["at"].replace("+00:00", "Z")} for e in entries]
    assert got == [e for e in expected if e["incident_id"] == incident]
    assert [e.model_dump() for e in everything][-1] == {
        **rows[-1],
        "id": len(rows),
        "at": T0 + dt.timedelta(seconds=len(rows) - 1),
    }
    # the store's queries on these columns, in SQL
    with session_scope(engine) as s:
        assert store.create_intent(s, incident_id=incident, system="jira", instance="default")
        assert not store.create_intent(s, incident_id=incident, system="jira", instance="eu")
        found = s.exec(
            select(col(store.AuditEntry.id)).where(
                col(store.AuditEntry.incident_id).in_([incident, "nope"]),
                col(store.AuditEntry.remote_id) == SYS_ID.upper(),
                col(store.AuditEntry.reason).startswith("both changed"),
            )
        ).all()
        assert found == [5]


def test_sqlite_keeps_audit_ids_and_repeated_strings_small(tmp_path: Path) -> None:
    """(PostgreSQL keeps its text columns.)"""
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate(engine)
    incident = uuid.uuid4().hex
    _write_audit(engine, _audit_rows(incident)[:2])
    with engine.connect() as c:
        rows = c.execute(
            text(
                "SELECT typeof(incident_id), length(incident_id), typeof(remote_id),"
                " length(remote_id), system, instance, action, field, actor, reason FROM audit"
                " ORDER BY id"
            )
        ).all()
    engine.dispose()
    change, write = rows
    assert change[:4] == ("blob", 16, "blob", 16)  # a uuid4 hex and a ServiceNow sys_id
    assert write[:4] == ("blob", 16, "text", 5)  # Jira's id "10001" stays text
    code = CODEBOOK.index
    assert change[4:] == (code("servicenow"), "", code("update"), code("title"), 0,
                          "changed in servicenow INC0010002")  # fmt: skip
    assert write[4:] == (code("jira"), 1, code("update"), code("summary"), 0,
                         code("brought in line with the incident"))  # fmt: skip


def test_the_codebook_only_grows() -> None:
    """A code's meaning never changes: rows written with it are read with it."""
    assert CODEBOOK[:6] == ("itsm-sync", "default", "servicenow", "jira", "statuspage", "update")
    assert len(set(CODEBOOK)) == len(CODEBOOK) <= 127  # one byte each in an SQLite record


def _jira_issue() -> dict[str, Any]:
    recorded = CONTRACTS / "jira/recorded/atlassian-python-api/rest_api_2_issue_FOO-123_GET.json"
    return dict(json.loads(recorded.read_text())["fields=*all"]["fields"])


def test_packing_uses_the_preset_dictionary_and_reads_every_older_form() -> None:
    issue = _jira_issue()
    packed = pack(issue)
    plain = zlib.compress(json_dumps(issue).encode(), 6)  # as 0008-0011 packed it
    assert packed[0] == 0x78 and packed[1] & 0x20  # FDICT: the dictionary's Adler-32 follows
    assert int.from_bytes(packed[2:6], "big") == zlib.adler32(current_dictionary())
    assert len(packed) < 0.8 * len(plain), (len(packed), len(plain))
    assert unpack(packed) == issue
    assert unpack(plain) == issue  # plain zlib, no dictionary
    assert unpack(json.dumps(issue)) == issue  # JSON text, as before packing
    assert unpack(json.dumps(issue).encode()) == issue
    assert unpack(pack(issue, b"")) == issue
    # a later dictionary: its values name it, and this one's still read
    later = b'{"summary": "a later dictionary", ' + current_dictionary()
    newer = pack(issue, later)
    assert int.from_bytes(newer[2:6], "big") == zlib.adler32(later)
    with pytest.raises(ValueError, match="dictionary"):
        unpack(newer)  # not shipped with this release: said so, not garbage
    dictionaries()[zlib.adler32(later)] = later
    try:
        assert unpack(newer) == issue and unpack(packed) == issue
    finally:
        del dictionaries()[zlib.adler32(later)]


def test_the_shipped_dictionaries_never_change() -> None:
    """Values packed with v1 or v2 name it by Adler-32: changed, they could not be read. v2
    (compact JSON, as the store writes it now) is the one new values take."""
    here = Path(store.__file__).parent / "dictionaries"
    v1, v2 = (here / "v1.zdict").read_bytes(), (here / "v2.zdict").read_bytes()
    assert zlib.adler32(v1) == 0x816B8DE8
    assert zlib.adler32(v2) == 0xAD230BC8
    assert {zlib.adler32(v1), zlib.adler32(v2)} <= set(dictionaries())
    assert current_dictionary() == v2
    assert inflate(zlib.compress(b"{}")) == b"{}"
    # remade from the vendors' recorded payloads, byte for byte
    assert build.build(1) == v1 and build.build(2) == v2


def test_a_value_packed_with_v1_is_still_read() -> None:
    issue = _jira_issue()
    v1 = (Path(store.__file__).parent / "dictionaries" / "v1.zdict").read_bytes()
    old = pack(issue, v1)
    assert int.from_bytes(old[2:6], "big") == zlib.adler32(v1)
    assert unpack(old) == issue
    assert len(pack(issue)) <= len(old)  # compact JSON with v2: no bigger than before


def test_json_for_the_store_is_compact_and_loses_nothing_json_dumps_kept() -> None:
    """orjson writes it; what orjson refuses and json.dumps took (an integer beyond 64 bits, a
    lone surrogate) is still written, exactly, in the same compact form."""
    assert json_bytes({"a": [1, "é"], 2: None}) == '{"a":[1,"é"],"2":null}'.encode()
    big = {"n": 2**70, "m": -(2**64)}
    assert json_bytes(big) == b'{"n":1180591620717411303424,"m":-18446744073709551616}'
    assert json.loads(json_bytes(big)) == big and unpack(pack(big)) == big
    lone = {"t": "a\ud800b"}
    assert json.loads(json_bytes(lone)) == lone and unpack(pack(lone)) == lone
    assert json_bytes({"t": "a\x00b", "u": "\\u0000"}) == b'{"t":"ab","u":"\\\\u0000"}'
    assert json_dumps({"t": "ü"}) == '{"t":"ü"}'
    for refused in (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), object()):
        with pytest.raises(TypeError):  # as json.dumps refused it: not quietly made text
            json_bytes({"at": refused})


def test_sqlite_packs_a_jira_issue_and_an_incident_small(tmp_path: Path) -> None:
    """A recorded Jira issue's fields (3.6 KB of JSON) take < 900 bytes; plain zlib ~1.2 KB."""
    engine = make_engine(f"sqlite:///{tmp_path / 'packed.db'}")
    migrate(engine)
    issue = _jira_issue()
    with session_scope(engine) as s:
        store.record_observation(
            s, system="jira", instance="default", object_type="issue", remote_id="138135",
            version=[1], fields=issue, source="poll", observed_at=T0,
        )  # fmt: skip
        incident = store.create_incident(s, {"title": "Checkout fails", "state": "new"}).id
    with engine.connect() as c:
        size = c.execute(text("SELECT length(fields) FROM observation")).scalar()
        kind, state = c.execute(text("SELECT typeof(data), state FROM incident")).one()
    engine.dispose()
    assert size is not None and size < 900, size
    assert (kind, state) == ("blob", "new")
    assert incident


def test_an_incident_s_state_and_parent_columns_follow_its_data(engine: Engine) -> None:
    """Every way the store writes an incident keeps the columns that queries read in step."""

    def columns(incident_id: str) -> tuple[str | None, str | None]:
        with session_scope(engine, readonly=True) as s:
            row = s.exec(
                sa_select(store.IncidentRow.state, store.IncidentRow.parent).where(
                    col(store.IncidentRow.id) == incident_id
                )
            ).one()
            return row[0], row[1]

    with session_scope(engine) as s:
        parent = store.create_incident(s, {"title": "Checkout fails", "state": "new"}).id
        child = store.create_incident(s, {"state": "new", "parent": parent}).id
        bare = store.create_incident(s, {}).id
    assert columns(parent) == ("new", None) and columns(child) == ("new", parent)
    assert columns(bare) == (None, None)
    with session_scope(engine) as s:
        row = store.get_incident(s, parent)
        assert row is not None
        store.save_incident(s, row, {**row.data, "state": "resolved", "parent": ""})
        store.replace_incident_data(s, child, 1, {"state": "monitoring", "parent": parent})
    assert columns(parent) == ("resolved", "") and columns(child) == ("monitoring", parent)
    with session_scope(engine) as s:  # through the ORM, as reconcile's adoption does
        row = store.get_incident(s, bare)
        assert row is not None
        row.data = {**row.data, "state": "closed", "id": bare}
    assert columns(bare) == ("closed", None)
    with session_scope(engine, readonly=True) as s:
        data = col(store.IncidentRow.data)  # sync.reconcile._children's query
        found = s.exec(
            select(store.IncidentRow.id).where(data["parent"].as_string() == parent)
        ).all()
        assert found == [child]
        open_ = s.exec(
            select(store.IncidentRow.id).where(store.state_of(s).in_(["new", "monitoring"]))
        ).all()
        assert open_ == [child]
        with pytest.raises(NotImplementedError, match="title"):
            data["title"]
        row = store.get_incident(s, child)
        assert row is not None and row.data == {"state": "monitoring", "parent": parent}
        state = store.incident_state(s, child)
        assert state is not None and state.data == row.data


def test_sample_data_fills_the_columns(engine: Engine) -> None:
    populate(engine, count=12, open_every=3)
    with session_scope(engine, readonly=True) as s:
        rows = s.exec(
            sa_select(store.IncidentRow.data, store.IncidentRow.state, store.IncidentRow.parent)
        ).all()
    assert rows and all((d.get("state"), d.get("parent")) == (st, p) for d, st, p in rows)


def _upgrade(db: Engine, revision: str, *, down: bool = False) -> None:
    config = store.alembic_config()
    with db.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


OLD_AUDIT = [  # rows as 0010 stored them: (incident, system, instance, remote_id, action,
    # field, actor, reason)
    ("I", "servicenow", "", SYS_ID, "update", "title", "itsm-sync", "changed in servicenow X"),
    ("I", "jira", "default", "10001", "update", "summary", "itsm-sync",
     "brought in line with the incident"),
    ("I", "jira", "default", "", "create", None, "admin@example.com", "about to create its record"),
    (None, "statuspage", "eu", SYS_ID.upper(), "skip", "summary", "itsm-sync", "update"),
]  # fmt: skip


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_0011_0012_convert_an_existing_database_and_give_it_back(
    dialect: str, fresh_url: Callable[[str], str]
) -> None:
    db = make_engine(fresh_url(dialect))
    sqlite = dialect == "sqlite"
    try:
        _upgrade(db, "0010")
        incident, child = uuid.uuid4().hex, uuid.uuid4().hex
        data = {"title": "Checkout fails \u00e9", "state": "investigating", "parent": ""}
        child_data = {"title": "Checkout again", "state": "new", "parent": incident}
        issue = _jira_issue()
        at = "2026-12-07 02:00:00.000000" if sqlite else T0
        with db.begin() as c:  # as 0010 stored them (0008/0009: plain zlib on SQLite)
            for iid, d in ((incident, data), (child, child_data)):
                c.execute(
                    text(
                        "INSERT INTO incident (id, data, created_at, updated_at, version)"
                        " VALUES (:id, :data, :at, :at, 1)"
                    ),
                    {"id": iid, "data": json.dumps(d), "at": at},
                )
            c.execute(
                text(
                    "INSERT INTO observation (system, instance, object_type, remote_id, version,"
                    " fields, source, observed_at) VALUES ('jira', 'default', 'issue', '138135',"
                    " '[1]', :fields, 'poll', :at)"
                ),
                {"fields": zlib.compress(json.dumps(issue).encode(), 6) if sqlite
                 else json.dumps(issue), "at": at},
            )  # fmt: skip
            for n, (iid, *rest) in enumerate(OLD_AUDIT):
                values = dict(zip(("system", "instance", "remote_id", "action", "field",
                                   "actor", "reason"), rest, strict=True))  # fmt: skip
                c.execute(
                    text(
                        "INSERT INTO audit (at, incident_id, system, instance, remote_id, action,"
                        " field, actor, reason) VALUES (:at, :incident, :system, :instance,"
                        " :remote_id, :action, :field, :actor, :reason)"
                    ),
                    {**values, "incident": incident if iid else None,
                     "at": 1_000_000 * n if sqlite else T0 + dt.timedelta(seconds=n)},
                )  # fmt: skip
        migrate(db)
        expected_audit = [
            (incident if iid else None, *rest) for iid, *rest in OLD_AUDIT
        ]  # fmt: skip
        columns = ("incident_id", "system", "instance", "remote_id", "action", "field",
                   "actor", "reason")  # fmt: skip
        with session_scope(db, readonly=True) as s:
            entries = s.exec(select(store.AuditEntry).order_by(col(store.AuditEntry.id))).all()
            assert [tuple(getattr(e, k) for k in columns) for e in entries] == expected_audit
            assert [e.field for e in store.history(s, incident)] == ["title", "summary", None]
            assert store.get_incident(s, incident).data == data  # type: ignore[union-attr]
            assert store.get_incident(s, child).data == child_data  # type: ignore[union-attr]
            found = s.exec(select(store.IncidentRow.id).where(store.state_of(s) == "new")).all()
            assert found == [child]
            obs = store.latest_observation(
                s, system="jira", instance="default", object_type="issue", remote_id="138135"
            )
            assert obs is not None and obs.fields == issue
        with session_scope(db) as s:  # and it goes on working
            assert store.create_intent(s, incident_id=incident, system="jira", instance="default")
            store.replace_incident_data(s, incident, 1, {**data, "state": "resolved"})
        if sqlite:
            with db.connect() as c:
                kinds = c.execute(
                    text(
                        "SELECT typeof(incident_id), typeof(system), typeof(reason) FROM audit"
                        " ORDER BY id"
                    )
                ).all()
                assert kinds[0] == ("blob", "integer", "text")
                assert kinds[1] == ("blob", "integer", "integer")
                packed = c.execute(text("SELECT data FROM incident WHERE id = :i"), {"i": child})
                blob = packed.scalar()
                observed = c.execute(text("SELECT fields FROM observation")).scalar()
            assert isinstance(blob, bytes) and blob[1] & 0x20  # packed with the dictionary
            assert isinstance(observed, bytes) and observed[1] & 0x20
        _upgrade(db, "0010", down=True)  # and back, as 0010 stored them
        with db.connect() as c:
            rows = c.execute(
                text(f"SELECT {', '.join(columns)} FROM audit ORDER BY id LIMIT 4")
            ).all()
            assert [tuple(r) for r in rows] == expected_audit
            stored = dict(c.execute(text("SELECT id, data FROM incident")).all())
            observed = c.execute(text("SELECT fields FROM observation")).scalar()
        loaded = {k: v if isinstance(v, dict) else json.loads(v) for k, v in stored.items()}
        assert loaded == {incident: {**data, "state": "resolved"}, child: child_data}
        if sqlite:
            assert isinstance(observed, bytes) and not observed[1] & 0x20  # plain zlib
            assert json.loads(zlib.decompress(observed)) == issue
        migrate(db)  # and up again
        with session_scope(db, readonly=True) as s:
            assert store.get_incident(s, child).data == child_data  # type: ignore[union-attr]
    finally:
        db.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_0013_indexes_the_owner_lookups_and_gives_them_back(
    dialect: str, fresh_url: Callable[[str], str]
) -> None:
    from sqlalchemy import inspect

    wanted = {
        ("action_item", "ix_action_item_change_request_id"),
        ("action_item", "ix_action_item_source_id"),
        ("postmortem", "ix_postmortem_jira_id"),
        ("postmortem", "ix_postmortem_problem_id"),
    }

    def indexes() -> set[tuple[str, str]]:
        found = inspect(db)
        return {
            (t, str(i["name"])) for t in ("action_item", "postmortem") for i in found.get_indexes(t)
        }

    db = make_engine(fresh_url(dialect))
    try:
        _upgrade(db, "0012")
        with db.begin() as c:
            c.execute(
                text("INSERT INTO postmortem (incident_id, jira_key, jira_id, created_at,"
                     " completed_by, problem_id, problem_number) VALUES ('inc', 'OPS-9', '10500',"
                     " :at, '', '', '')"),
                {"at": T0},
            )  # fmt: skip
        assert not wanted & indexes()
        _upgrade(db, "0013")
        assert wanted <= indexes()
        _upgrade(db, "0012", down=True)
        assert not wanted & indexes()
    finally:
        db.dispose()
