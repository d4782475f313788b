"""Incident communications (issue 18): the status page follows the incident through every
stage, is closed when the incident stops being public, never shows an empty update, and only
the roles that may publish can."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest

from service.domain import incidents
from service.domain.errors import Conflict, Invalid
from service.domain.roles import Actor
from sync import cadence, store
from tests.e2e.conftest import TOKENS, Desk, World

JIRA_COMMS = "customfield_10020"


def _publish(desk: Desk, number: str, message: str, **kwargs: Any) -> dict[str, Any]:
    return incidents.set_public(
        desk.rt.db, ident=number, message=message, public=kwargs.pop("public", True),
        actor=Actor.cli(), mappings=desk.rt.mappings, **kwargs,
    )  # fmt: skip


def _page(desk: Desk) -> dict[str, Any]:
    [incident] = desk.sp.get("/incidents").json()  # the simulators start empty
    return dict(incident)


def _checkout(desk: Desk) -> str:
    return next(c["status"] for c in desk.sp.get("/components").json() if c["name"] == "Checkout")


def _updates(desk: Desk) -> list[tuple[str, str]]:
    return [(u["status"], u["body"]) for u in reversed(_page(desk)["incident_updates"])]


def test_the_page_walks_every_stage_and_never_posts_an_empty_update(desk: Desk) -> None:
    inc = desk.open_p1("Checkout down")
    desk.patch(inc["sys_id"], state="2")
    desk.sync(rounds=1)
    _publish(desk, inc["number"], "Some customers cannot check out.")
    desk.sync()
    assert _page(desk)["status"] == "investigating" and _checkout(desk) == "major_outage"
    desk.patch(inc["sys_id"], u_comms_status="identified")  # the desk: cause found
    desk.sync()
    key = desk.incident_issue()["key"]
    assert desk.issue(key)["fields"][JIRA_COMMS]["value"] == "Identified"
    desk.edit(key, **{JIRA_COMMS: {"value": "Monitoring"}})  # the engineer: fix deployed
    desk.sync()
    assert desk.sn_record(inc["sys_id"])["u_comms_status"] == "monitoring"
    desk.patch(inc["sys_id"], state="6", close_code="Solution provided", close_notes="rolled back")
    desk.sync()
    assert desk.sn_record(inc["sys_id"])["u_comms_status"] == ""  # cleared once resolved
    assert _updates(desk) == [
        ("investigating", "Some customers cannot check out."),
        ("identified", "The cause has been identified and a fix is being implemented."),
        ("monitoring", "A fix has been implemented and we are monitoring the results."),
        ("resolved", "This incident has been resolved."),
    ]
    assert _checkout(desk) == "operational"


@pytest.mark.parametrize("how", ["downgrade", "private"])
def test_a_downgrade_or_making_it_private_closes_the_page_incident(desk: Desk, how: str) -> None:
    inc = desk.open_p1("Checkout down")
    desk.sync(rounds=1)
    _publish(desk, inc["number"], "Some customers cannot check out.")
    desk.sync()
    assert _page(desk)["status"] == "investigating" and _checkout(desk) == "major_outage"
    if how == "downgrade":  # SEV1 -> SEV3: below what the page shows
        desk.patch(inc["sys_id"], impact="2", urgency="2")
    else:
        _publish(desk, inc["number"], "", public=False)
    desk.sync()
    page = _page(desk)
    assert page["status"] == "resolved"
    assert page["incident_updates"][0]["body"].startswith("We are no longer seeing an impact")
    assert _checkout(desk) == "operational"
    with store.session_scope(desk.rt.db, readonly=True) as s:
        row = store.find_incident(s, inc["number"])
        assert row is not None
        why = [e.reason for e in store.history(s, row.id) if e.system == "statuspage"]
    assert any("no longer matches the status page's rule" in r for r in why), why


def test_publishing_below_the_threshold_is_refused_unless_forced_with_a_reason(
    desk: Desk,
) -> None:
    inc = desk.open_p1("Search is slow", impact="2", urgency="2")  # SEV3
    desk.sync(rounds=1)
    with pytest.raises(Invalid, match=r"is SEV3, below what the status page shows"):
        _publish(desk, inc["number"], "Search results may be slow.")
    desk.sync()
    assert desk.sp.get("/incidents").json() == []
    result = _publish(
        desk, inc["number"], "Search results may be slow.", force="customers are asking on X"
    )
    assert result["forced"] is True
    desk.sync()
    assert _page(desk)["status"] == "investigating"
    with store.session_scope(desk.rt.db, readonly=True) as s:
        row = store.find_incident(s, inc["number"])
        assert row is not None
        reasons = [e.reason for e in store.history(s, row.id)]
    assert "published below the status page's threshold: customers are asking on X" in reasons


def _comms_and_an_incident(world: World) -> tuple[httpx.Client, dict[str, Any]]:
    """An API client with the comms role, and a P1 the service has synced."""
    comms = httpx.Client(
        base_url=world.service.url, headers={"Authorization": f"Bearer {TOKENS['comms']}"},
        timeout=10,
    )  # fmt: skip
    inc = world.open_p1("Checkout down")
    world.quiet()
    return comms, inc


def test_the_comms_role_publishes_and_does_nothing_else(world: World) -> None:
    comms, inc = _comms_and_an_incident(world)
    number = inc["number"]
    ok = comms.post(f"/api/incidents/{number}/public", json={"message": "Checkout is failing."})
    assert ok.status_code == 200, ok.text
    assert comms.get(f"/api/incidents/{number}").status_code == 200
    for method, path, body in (
        ("POST", f"/api/incidents/{number}/gate/override", {"reason": "because"}),
        ("POST", f"/api/incidents/{number}/actions", {"title": "x"}),
        ("GET", "/api/audit", None),
        ("POST", "/api/parked/replay-all", None),
        ("POST", "/api/links", {"first": number, "second": "OPS-1"}),
    ):
        r = comms.request(method, path, json=body)
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert "comms" in r.json()["detail"]


CHECKOUT_SN = "5e000000000000000000000000000001"


def test_a_planned_change_is_scheduled_maintenance_that_follows_the_change(desk: Desk) -> None:
    def change(**fields: Any) -> dict[str, Any]:
        r = desk.sn.post("/api/now/table/change_request", json=fields)
        assert r.status_code == 201, r.text
        return dict(r.json()["result"])

    planned = change(
        type="normal", short_description="Swap the checkout DB to the new cluster (internal)",
        business_service=CHECKOUT_SN, start_date="2026-12-20 22:00:00",
        end_date="2026-12-20 23:30:00",
    )  # fmt: skip
    change(type="normal", short_description="An action item, no window", due_date="2026-12-30")
    desk.sync()
    [page] = desk.sp.get("/incidents").json()
    assert page["status"] == "scheduled" and page["name"] == "Planned maintenance: Checkout"
    assert (page["scheduled_for"], page["scheduled_until"]) == (
        "2026-12-20T22:00:00.000Z", "2026-12-20T23:30:00.000Z",
    )  # fmt: skip
    assert [c["id"] for c in page["components"]] == ["cmpcheckout1"]
    assert page["scheduled_auto_in_progress"] and page["scheduled_auto_completed"]
    assert "internal" not in page["incident_updates"][0]["body"]  # never the change's own text
    # The window moves: the page follows.
    r = desk.sn.patch(
        f"/api/now/table/change_request/{planned['sys_id']}",
        json={"start_date": "2026-12-21 22:00:00", "end_date": "2026-12-21 23:00:00"},
    )
    assert r.status_code == 200, r.text
    desk.sync()
    [page] = desk.sp.get("/incidents").json()
    assert page["scheduled_for"] == "2026-12-21T22:00:00.000Z"
    # The change is canceled: so is the maintenance.
    r = desk.sn.patch(f"/api/now/table/change_request/{planned['sys_id']}", json={"state": "4"})
    assert r.status_code == 200, r.text
    desk.sync()
    [page] = desk.sp.get("/incidents").json()
    assert page["status"] == "completed"
    assert "has been cancelled" in page["incident_updates"][0]["body"]


def test_a_missed_update_reminds_both_sides_internally_then_escalates(desk: Desk) -> None:
    inc = desk.open_p1("Checkout down")
    desk.sync()
    key = desk.incident_issue()["key"]
    comms = desk.rt.settings.comms.model_copy(update={"escalate_to": "incident-managers"})
    with store.session_scope(desk.rt.db, readonly=True) as s:
        detail = incidents.detail(s, ident=inc["number"], comms=comms)
        row = store.find_incident(s, inc["number"])
        assert row is not None
    due = dt.datetime.fromisoformat(detail["next_update_due"])
    opened = row.data["started_at"] or row.created_at.isoformat()
    assert due - dt.datetime.fromisoformat(str(opened).replace("Z", "+00:00")) == dt.timedelta(
        minutes=15
    )
    assert cadence.check(desk.rt.db, comms, now=due - dt.timedelta(seconds=1)) == 0
    assert cadence.check(desk.rt.db, comms, now=due + dt.timedelta(minutes=16)) == 2
    desk.sync()
    notes = [e for e in desk.journal(inc["sys_id"]) if "Update due" in e["value"]]
    escalations = [e for e in desk.journal(inc["sys_id"]) if "escalating to" in e["value"]]
    assert [n["element"] for n in notes + escalations] == ["work_notes", "work_notes"]
    jira = [c for c in desk.comments(key) if "Update due" in c["body"] or "escalat" in c["body"]]
    assert len(jira) == 2 and all(c.get("visibility") for c in jira)  # restricted
    assert desk.sp.get("/incidents").json() == []  # never the status page
    # Checked again later: nothing twice.
    assert cadence.check(desk.rt.db, comms, now=due + dt.timedelta(minutes=40)) == 0


class _SyncSavesMeanwhile:
    """``incidents.find`` as it is, except that the sync saves the incident between comms'
    read and comms' write (the first ``times`` reads): the row comms holds is one version
    behind, as when a worker on PostgreSQL commits in between."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.reads = 0

    def __call__(self, s: Any, *, ident: str) -> store.IncidentRow:
        row = store.find_incident(s, ident)
        assert row is not None
        self.reads += 1
        if self.reads <= self.times:
            store.replace_incident_data(s, row.id, row.version, row.data)  # the sync's save
        return row


def test_publishing_while_the_sync_saves_the_incident_is_applied_to_the_newest_version(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI, two processes on PostgreSQL: `public INC…` failed with "StaleIncident: incident …
    changed since version 5" because a worker saved the incident meanwhile. Comms' approval
    is applied again to the newest version, and audited once."""
    inc = desk.open_p1("Checkout down")
    desk.sync(rounds=1)
    meanwhile = _SyncSavesMeanwhile(times=2)
    monkeypatch.setattr(incidents, "find", meanwhile)
    result = _publish(desk, inc["number"], "Some customers cannot check out.")
    assert result["public"] is True and meanwhile.reads == 3
    with store.session_scope(desk.rt.db, readonly=True) as s:
        row = store.find_incident(s, inc["number"])
        assert row is not None and row.data["public"] is True
        assert row.data["public_message"] == "Some customers cannot check out."
        approvals = [e for e in store.history(s, row.id) if e.field == "public_message"]
    assert [e.reason for e in approvals] == ["public status approved"]
    desk.sync()
    assert _page(desk)["status"] == "investigating"


def test_publishing_an_incident_that_never_stops_changing_is_a_conflict_not_a_crash(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    inc = desk.open_p1("Checkout down")
    desk.sync(rounds=1)
    monkeypatch.setattr(incidents, "find", _SyncSavesMeanwhile(times=10**6))
    with pytest.raises(Conflict, match=r"kept changing while it was being published"):
        _publish(desk, inc["number"], "Some customers cannot check out.")
    with store.session_scope(desk.rt.db, readonly=True) as s:
        row = store.find_incident(s, inc["number"])
        assert row is not None and not row.data.get("public")  # nothing half-written


def test_the_api_publishes_through_a_concurrent_save_and_answers_409_when_it_never_settles(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    comms, inc = _comms_and_an_incident(world)
    path = f"/api/incidents/{inc['number']}/public"
    monkeypatch.setattr(incidents, "find", _SyncSavesMeanwhile(times=1))
    ok = comms.post(path, json={"message": "Checkout is failing."})
    assert ok.status_code == 200, ok.text
    monkeypatch.setattr(incidents, "find", _SyncSavesMeanwhile(times=10**6))
    busy = comms.post(path, json={"message": "Checkout is failing again.", "public": False})
    assert busy.status_code == 409, busy.text
    assert "kept changing while it was being published" in busy.json()["detail"]
    monkeypatch.undo()
    detail = comms.get(f"/api/incidents/{inc['number']}").json()
    assert json.dumps(detail).count("Checkout is failing again.") == 0  # nothing half-written
