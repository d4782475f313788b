"""A delivery or a write's answer that brings nothing newer than the stored record costs almost
nothing inside the write transaction: no packing of the record, no read-back of the stored one.
Under load many deliveries are echoes of our own writes or redeliveries, and on SQLite every
write transaction waits its turn behind every other (docs/performance.md, issue 17)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import func, select

from config.settings import ServiceNowSettings
from connectors.base import FIELD_CHANGES_KEY, FieldChange, field_changes_of
from connectors.servicenow import ServiceNowConnector
from sync import store
from sync.ingest import ingest_webhook
from sync.store import packed

SECRET = "hook-secret"


def _delivery(mod_count: int, title: str, delivery: str) -> tuple[dict[str, str], bytes]:
    record = {
        "sys_id": "a" * 32,
        "number": "INC0010001",
        "sys_mod_count": str(mod_count),
        "sys_updated_on": f"2026-12-07 05:00:{mod_count:02d}",
        "short_description": title,
    }
    body = json.dumps({"table": "incident", "record": record}).encode()
    return {"X-ServiceNow-Secret": SECRET, "X-ServiceNow-Delivery": delivery}, body


@pytest.fixture
def db(tmp_path: Path) -> Any:
    engine = store.make_engine(f"sqlite:///{tmp_path / 'echo.db'}")
    store.migrate(engine)
    return engine


def _packs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = packed.pack

    def counting(value: Any) -> bytes:
        calls.append(1)
        return real(value)

    monkeypatch.setattr(packed, "pack", counting)
    return calls


def test_an_observation_that_is_not_newer_is_neither_packed_nor_written(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = {"system": "jira", "instance": "default", "object_type": "issue", "remote_id": "10001"}
    issue = {"summary": "Checkout fails", "padding": "x" * 9000}
    with store.session_scope(db) as s:
        assert store.record_observation(s, **key, version=[2], fields=issue, source="webhook")
    packs = _packs(monkeypatch)
    with store.session_scope(db) as s:
        assert not store.record_observation(s, **key, version=[2], fields=issue, source="webhook")
        assert not store.record_observation(s, **key, version=[1], fields=issue, source="poll")
    assert packs == []  # the old code packed 9 KB to offer an INSERT that could only conflict
    with store.session_scope(db) as s:
        newer = {**issue, "summary": "Checkout fails again"}
        assert store.record_observation(s, **key, version=[3], fields=newer, source="webhook")
        stored = store.latest_observation(s, **key)
        assert stored is not None and stored.version == [3]
        assert stored.fields["summary"] == "Checkout fails again"
    assert len(packs) == 1  # the update only


def test_a_delivery_with_nothing_newer_packs_nothing_and_queues_nothing(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    connector = ServiceNowConnector(ServiceNowSettings(webhook_secret=SECRET))  # type: ignore[arg-type]
    ref = {"system": "servicenow", "instance": connector.instance, "object_type": "incident"}
    assert ingest_webhook(db, connector, *_delivery(4, "Checkout fails", "d-1")).status == 202
    packs = _packs(monkeypatch)
    with store.session_scope(db) as s:
        queued = s.exec(select(func.count()).select_from(store.Dirty)).one()
    # The echo of our own write, delivered after its answer was stored; an older redelivery.
    assert ingest_webhook(db, connector, *_delivery(4, "Checkout fails", "d-2")).status == 202
    assert ingest_webhook(db, connector, *_delivery(3, "Checkout", "d-3")).status == 202
    assert packs == []  # the old code packed the record for each, inside the write lock
    with store.session_scope(db) as s:
        assert s.exec(select(func.count()).select_from(store.Dirty)).one() == queued
        delivered = s.exec(select(func.count()).select_from(store.WebhookDelivery)).one()
    assert delivered == 3  # each delivery is still known (a redelivery of it is a duplicate)
    # Anything newer is stored (packed once: the update).
    assert (
        ingest_webhook(db, connector, *_delivery(5, "Checkout fails for EU", "d-4")).status == 202
    )
    assert len(packs) == 1
    with store.session_scope(db, readonly=True) as s:
        stored = store.latest_observation(s, **ref, remote_id="a" * 32)
        assert stored is not None and stored.version == [5]
        assert stored.fields["short_description"] == "Checkout fails for EU"


def _change(update: str, value: str, at: str, author: str) -> dict[str, Any]:
    return FieldChange(
        id=f"{update}-summary", field="summary", value=value, at=dt.datetime.fromisoformat(at),
        author=author, update=update,
    ).to_json()  # fmt: skip


def test_the_answer_of_a_write_keeps_the_edit_it_shows_when_its_echo_came_first(db: Any) -> None:
    """Seen in a chaos run (seed 7): an engineer retitled the issue (j6) between our read and
    our write (s5). The write's answer showed their edit in its changelog and the pass left it
    to the next one; but the echo of our write, same version, carrying only our update, was
    stored first, the answer was "not newer" and dropped, and the next pass never saw j6."""
    key = {"system": "jira", "instance": "default", "object_type": "issue", "remote_id": "10013"}
    ours = _change("10381", "s5", "2026-12-07T05:17:08.301+00:00", "svc")
    theirs = _change("10368", "j6", "2026-12-07T05:17:02.775+00:00", "engineer")
    version = [1796620628301]
    with store.session_scope(db) as s:
        echo = {"summary": "s5", FIELD_CHANGES_KEY: [ours]}
        assert store.record_observation(s, **key, version=version, fields=echo, source="webhook")
    with store.session_scope(db) as s:
        answer = {"summary": "s5", FIELD_CHANGES_KEY: [theirs, ours]}
        # The record is to be weighed again: the history it holds grew.
        assert store.record_observation(
            s, **key, version=version, fields=answer, source="poll", join_history=True
        )
    with store.session_scope(db, readonly=True) as s:
        stored = store.latest_observation(s, **key)
        assert stored is not None
        assert [c.value for c in field_changes_of(stored.fields)] == ["j6", "s5"]
        assert stored.fields["summary"] == "s5" and stored.version == version
    # The same history again (a redelivery of the echo) changes nothing.
    with store.session_scope(db) as s:
        again = {"summary": "s5", FIELD_CHANGES_KEY: [ours]}
        assert not store.record_observation(
            s, **key, version=version, fields=again, source="webhook"
        )
