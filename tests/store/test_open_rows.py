"""Every open incident, read a page at a time (/metrics, status and the reminder check): holding
50,000 at once grew the process by ~470 MB (bench.memory). Across page boundaries, on both
stores: PostgreSQL's read sessions are autocommit, where a server-side cursor is refused."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from mapping.model import State
from sync import cadence, store
from tests.unit.test_cadence import SETTINGS, minutes, p1


def test_open_incidents_are_read_page_by_page_and_none_is_missed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cadence, "OPEN_PAGE", 2)
    with store.session_scope(engine) as s:
        opened = [store.create_incident(s, p1().model_dump(mode="json")).id for _ in range(5)]
        store.create_incident(s, p1(state=State.RESOLVED).model_dump(mode="json"))
    with store.session_scope(engine, readonly=True) as s:
        assert sorted(i for i, _, _ in cadence.open_rows(s)) == sorted(opened)
        assert cadence.overdue(s, SETTINGS, now=minutes(16)) == 5
    assert cadence.check(engine, SETTINGS, now=minutes(16)) == 5
    assert cadence.check(engine, SETTINGS, now=minutes(17)) == 0
