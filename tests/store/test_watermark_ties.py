"""Watermark ties: 500 ServiceNow records stamped in one second are all read, a record of the
same second made after the poll is not lost, and once the second is settled none of them is
read again (the old watermark stayed on that second, so every poll re-read all 500)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import httpx

from connectors.servicenow import ServiceNowConnector
from simulators.runner import SimulatorCluster
from sync import store
from sync.poller import SETTLE_SECONDS, poll_once
from sync.store import make_engine, migrate
from tests.systems import sn_settings


def _count(db: object) -> int:
    from sqlmodel import func, select

    with store.session_scope(db, readonly=True) as s:  # type: ignore[arg-type]
        return int(
            s.exec(
                select(func.count())
                .select_from(store.Observation)
                .where(store.Observation.object_type == "incident")
            ).one()
        )


def test_500_records_in_one_second_are_read_once(sims: SimulatorCluster, tmp_path: Path) -> None:
    url = sims.urls["servicenow"]
    tick = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    stamp = tick.strftime("%Y-%m-%d %H:%M:%S")
    db = make_engine(f"sqlite:///{tmp_path / 'ties.db'}")
    migrate(db)
    connector = ServiceNowConnector(sn_settings(url))
    with httpx.Client(base_url=url, auth=("admin", "admin"), timeout=10) as sn:
        sn.post("/_sim/clock", json={"now": stamp}).raise_for_status()
        try:
            _create(sn, [f"tie {i}" for i in range(500)])
            since = tick - dt.timedelta(minutes=1)  # leaves out the seeded fixtures

            def poll(at: dt.timedelta) -> tuple[int, int]:
                result = poll_once(db, connector, "incident", since=since, clock=lambda: tick + at)
                assert not result.error
                return result.read, result.newer

            # The poll begins in the same second as the records: all 500, each once.
            assert poll(dt.timedelta(milliseconds=500)) == (500, 500)
            assert _count(db) == 500
            # One more record in that same second, committed after the poll: not lost.
            _create(sn, ["late tie"])
            read, newer = poll(dt.timedelta(seconds=1))
            assert newer == 1 and read == 501  # the boundary is read again within settling
            assert _count(db) == 501
        finally:
            sn.delete("/_sim/clock").raise_for_status()
    # The first poll after the settling time reads the boundary a last time (its lower bound
    # is the previous poll's), stores nothing; every poll after it reads nothing at all: the
    # ties are not read at every poll.
    later = dt.timedelta(seconds=SETTLE_SECONDS + 10)
    assert poll(later) == (501, 0)
    assert poll(later + dt.timedelta(seconds=60)) == (0, 0)
    assert poll(later + dt.timedelta(seconds=120)) == (0, 0)
    assert _count(db) == 501


def _create(sn: httpx.Client, titles: list[str]) -> None:
    """Create incidents in one batch request (the Batch API), so the test stays fast."""
    requests = [
        {
            "id": str(i),
            "method": "POST",
            "url": "/api/now/table/incident",
            "headers": [{"name": "Content-Type", "value": "application/json"}],
            "body": base64.b64encode(json.dumps({"short_description": t}).encode()).decode(),
        }
        for i, t in enumerate(titles)
    ]
    answer = sn.post("/api/now/v1/batch", json={"batch_request_id": "1", "rest_requests": requests})
    answer.raise_for_status()
    codes = {r["status_code"] for r in answer.json()["serviced_requests"]}
    assert codes == {201}, codes
