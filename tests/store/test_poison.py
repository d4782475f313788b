"""One hostile record must not stop the store: PostgreSQL keeps no NUL in text or JSONB, and a
batch it refused used to fail every poll at the same place, forever."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import DataError
from sqlmodel import select

from connectors.base import RemoteRecord, RemoteRef
from sync import ingest, store

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def _record(n: int, **fields: Any) -> RemoteRecord:
    return RemoteRecord(
        ref=RemoteRef("servicenow", "default", "incident", f"{n:032x}", f"INC{n:07d}"),
        version=(1,),
        updated_at=T0 + dt.timedelta(seconds=n),
        fields={"short_description": f"incident {n}", **fields},
    )


def test_nul_bytes_are_taken_out_of_everything_stored(engine: Engine) -> None:
    hostile = {
        "short_description": "Payments\x00 failing",
        "nested": {"key\x00": ["a\x00b", "\\u0000 typed literally"]},
    }
    newer, _ = ingest.store_records(engine, [_record(1, **hostile)])
    assert newer == 1
    with store.session_scope(engine) as s:
        store.audit(s, action="park", reason="bad\x00reason", after={"v": "x\x00y"})
    with store.session_scope(engine, readonly=True) as s:
        [obs] = s.exec(select(store.Observation)).all()
        [entry] = s.exec(select(store.AuditEntry)).all()
    assert obs.fields["short_description"] == "Payments failing"
    assert obs.fields["nested"] == {"key": ["ab", "\\u0000 typed literally"]}
    assert (entry.reason, entry.after) == ("badreason", {"v": "xy"})


def test_a_record_the_database_refuses_is_parked_and_the_batch_goes_on(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store.record_observation

    def refuse_one(session: Any, **kwargs: Any) -> bool:
        if kwargs["remote_id"] == f"{2:032x}":
            raise DataError("INSERT ...", {}, Exception("invalid input syntax for type json"))
        return real(session, **kwargs)

    monkeypatch.setattr(store, "record_observation", refuse_one)
    newer, newest = ingest.store_records(engine, [_record(n) for n in (1, 2, 3)])
    assert newer == 2 and newest == T0 + dt.timedelta(seconds=3)  # the watermark moves past it
    with store.session_scope(engine, readonly=True) as s:
        stored = sorted(o.remote_id for o in s.exec(select(store.Observation)).all())
        [parked] = store.open_parked(s)
    assert stored == [f"{1:032x}", f"{3:032x}"]
    assert parked.incident_id == f"remote:servicenow:default:incident:{2:032x}"
    assert "INC0000002 cannot be stored" in parked.error and "invalid input syntax" in parked.error
