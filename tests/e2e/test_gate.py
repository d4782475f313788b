"""The closure gate's holes, tried as a hostile service desk would: every terminal state the
mappings know is gated, on either side, and a downgrade before the end is no way around it."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import TOKENS, World, wait_for
from tests.e2e.test_postmortem import close_in_servicenow, journal, resolve_in_servicenow


def _gate_notes(world: World, sys_id: str, word: str) -> list[dict[str, Any]]:
    return [n for n in journal(world, sys_id) if f"cannot be {word} yet" in n["value"]]


def _jira_issue(world: World) -> dict[str, Any]:
    return wait_for(lambda: world.jira_issue_for("Checkout fails"), "the incident's Jira issue")


def test_canceling_a_p1_in_servicenow_is_refused(world: World) -> None:
    inc = world.open_p1()
    _jira_issue(world)
    r = world.sn.patch(f"/api/now/table/incident/{inc['sys_id']}", json={"state": "2"})
    assert r.status_code == 200
    world.quiet()
    r = world.sn.patch(f"/api/now/table/incident/{inc['sys_id']}", json={"state": "8"})
    assert r.status_code == 200, r.text
    [note] = wait_for(lambda: _gate_notes(world, inc["sys_id"], "canceled"), "the gate's note")
    assert "it stays investigating" in note["value"] and note["element"] == "work_notes"
    wait_for(lambda: world.sn_record(inc["sys_id"])["state"] == "2", "ServiceNow back in progress")
    world.quiet()
    issue = world.jira_issue_for("Checkout fails")
    assert issue is not None and issue["fields"]["status"]["name"] != "Closed"
    history = world.api.get(f"/api/incidents/{inc['number']}/history").json()
    assert any(
        e["action"] == "skip" and e["after"] == "canceled" and "refused by the postmortem gate"
        in e["reason"] for e in history
    )  # fmt: skip


def test_resolving_as_wont_do_in_jira_is_a_cancel_and_is_refused(world: World) -> None:
    inc = world.open_p1()
    issue = _jira_issue(world)
    world.transition(issue["key"], "In Progress")
    world.quiet()
    world.transition(issue["key"], "Resolved", resolution={"name": "Won't Do"})
    [note] = wait_for(lambda: _gate_notes(world, inc["sys_id"], "canceled"), "the gate's note")
    assert f"canceled in jira {issue['key']}" in note["value"]
    wait_for(
        lambda: (
            (world.jira_issue_for("Checkout fails") or {})["fields"]["status"]["name"]
            in ("In Progress", "Reopened")
        ),
        "Jira moved back out of Resolved",
    )
    world.quiet()
    assert world.sn_record(inc["sys_id"])["state"] not in ("6", "7", "8")


def test_a_downgrade_before_closing_does_not_lift_the_gate(world: World) -> None:
    inc = world.open_p1()
    _jira_issue(world)
    resolve_in_servicenow(world, inc["sys_id"])
    world.quiet()
    r = world.api.post(
        f"/api/incidents/{inc['number']}/actions",
        json={"title": "Add a disk alert", "due": "2099-12-24"},
    )
    assert r.status_code == 200, r.text
    world.quiet()
    # SEV1 -> SEV4 (P4), then close at once.
    r = world.sn.patch(
        f"/api/now/table/incident/{inc['sys_id']}", json={"impact": "3", "urgency": "3"}
    )
    assert r.status_code == 200, r.text
    world.quiet()
    close_in_servicenow(world, inc["sys_id"])
    [note] = wait_for(lambda: _gate_notes(world, inc["sys_id"], "closed"), "the gate's note")
    assert "'Add a disk alert'" in note["value"]  # the recorded item was not dropped
    wait_for(lambda: world.sn_record(inc["sys_id"])["state"] == "6", "ServiceNow back to Resolved")
    gate = world.api.get(f"/api/incidents/{inc['number']}/gate").json()
    assert gate["required"] is True and gate["can_close"] is False
    items = world.api.get(f"/api/incidents/{inc['number']}/postmortem").json()["action_items"]
    assert [i["title"] for i in items] == ["Add a disk alert"]


def test_an_override_revoked_over_the_api_rearms_the_gate(world: World) -> None:
    inc = world.open_p1()
    _jira_issue(world)
    resolve_in_servicenow(world, inc["sys_id"])
    world.quiet()
    cm = {"Authorization": f"Bearer {TOKENS['change-manager']}"}
    base = f"/api/incidents/{inc['number']}/gate/override"
    empty = world.api.post(base, json={"reason": " "}, headers=cm)
    assert empty.status_code == 422 and "reason" in empty.text
    r = world.api.post(base, json={"reason": "fixes tracked by the vendor"}, headers=cm)
    assert r.status_code == 200 and r.json()["by"] == "token:change-manager", r.text
    gate = world.api.get(f"/api/incidents/{inc['number']}/gate").json()
    assert gate["can_close"] and gate["override"]["severity"] == "SEV1"
    viewer = {"Authorization": f"Bearer {TOKENS['viewer']}"}
    assert (
        world.api.post(f"{base}/revoke", json={"reason": "no"}, headers=viewer).status_code == 403
    )
    r = world.api.post(f"{base}/revoke", json={"reason": "the vendor backed out"}, headers=cm)
    assert r.status_code == 200, r.text
    assert world.api.post(f"{base}/revoke", json={"reason": "again"}, headers=cm).status_code == 409
    world.quiet()
    close_in_servicenow(world, inc["sys_id"])
    wait_for(lambda: _gate_notes(world, inc["sys_id"], "closed"), "the gate's note")
    wait_for(lambda: world.sn_record(inc["sys_id"])["state"] == "6", "ServiceNow back to Resolved")
    history = world.api.get(f"/api/incidents/{inc['number']}/history").json()
    assert any(
        h["action"] == "override" and h["after"] == "revoked" and "backed out" in h["reason"]
        and h["actor"] == "token:change-manager" for h in history
    )  # fmt: skip
