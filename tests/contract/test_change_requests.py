"""ServiceNow change requests, as the postmortem tracker will use them."""

from __future__ import annotations

import datetime as dt

import pytest

from connectors.errors import Fatal
from connectors.servicenow import ServiceNowConnector
from simulators.runner import SimulatorCluster
from tests.contract.harness import FAST_RETRY
from tests.systems import sn_settings

ALICE = "a11ce000000000000000000000000001"


def test_change_request_lifecycle(sims: SimulatorCluster) -> None:
    sn = ServiceNowConnector(sn_settings(sims.urls["servicenow"]), retry=FAST_RETRY)
    incident = sn.create(
        "incident", {"short_description": "checkout down"}, correlation_key="inc-1"
    )
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    fields = {
        "type": "normal",
        "short_description": "Add a circuit breaker to checkout",
        "description": f"Action item from the postmortem of {incident.ref.key}",
        "assigned_to": ALICE,
        "due_date": "2026-12-01 00:00:00",
        "parent": incident.ref.id,
    }
    cr = sn.create("change_request", fields, correlation_key="pm-1-ai-1")
    assert cr.ref.key.startswith("CHG")
    assert cr.fields["correlation_id"] == "pm-1-ai-1"
    assert cr.fields["assigned_to"] == ALICE and cr.fields["parent"] == incident.ref.id
    assert cr.fields["due_date"] == "2026-12-01 00:00:00"
    assert sn.create("change_request", fields, correlation_key="pm-1-ai-1").ref == cr.ref
    moved = sn.update(cr.ref, {"due_date": "2026-12-08 00:00:00"})
    assert moved.fields["due_date"] == "2026-12-08 00:00:00" and moved.version > cr.version
    assert cr.ref.id in {r.ref.id for r in sn.changes_since("change_request", start)}
    with pytest.raises(Fatal, match="close_code, close_notes"):
        sn.transition(cr.ref, "3", {})
    closed = sn.transition(cr.ref, "3", {"close_code": "successful", "close_notes": "deployed"})
    assert closed.fields["state"] == "3" and closed.fields["close_code"] == "successful"
    assert sn.get("change_request", cr.ref.key).ref == cr.ref
