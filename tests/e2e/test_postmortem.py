"""The postmortem tracker end to end: action items become change requests, and the incident
cannot close until they have."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.harness import simulator_env
from simulators.runner import SimulatorCluster
from tests.e2e.conftest import TOKENS, World, _people_only, wait_for

BOB_SN = "b0b00000000000000000000000000002"
CAROL_SN = "ca401000000000000000000000000003"


def resolve_in_servicenow(world: World, sys_id: str) -> None:
    r = world.sn.patch(
        f"/api/now/table/incident/{sys_id}",
        json={"state": "6", "close_code": "Solution provided", "close_notes": "failed over db01"},
    )
    assert r.status_code == 200, r.text


def close_in_servicenow(world: World, sys_id: str) -> None:
    r = world.sn.patch(f"/api/now/table/incident/{sys_id}", json={"state": "7"})
    assert r.status_code == 200, r.text


def jira_user(world: World, email: str) -> str:
    return str(
        world.jira.get("/rest/api/2/user/search", params={"query": email}).json()[0]["accountId"]
    )


def new_task(world: World, summary: str, link_to: str, **fields: Any) -> str:
    r = world.jira.post(
        "/rest/api/2/issue",
        json={
            "fields": {
                "project": {"key": "OPS"},
                "issuetype": {"name": "Task"},
                "summary": summary,
                **fields,
            }
        },
    )
    assert r.status_code == 201, r.text
    key = str(r.json()["key"])
    link = world.jira.post(
        "/rest/api/2/issueLink",
        json={
            "type": {"name": "Relates"},
            "inwardIssue": {"key": link_to},
            "outwardIssue": {"key": key},
        },
    )
    assert link.status_code == 201, link.text
    return key


def change_requests(world: World) -> list[dict[str, Any]]:
    return list(
        world.sn.get(
            "/api/now/table/change_request", params={"sysparm_exclude_reference_link": "true"}
        ).json()["result"]
    )


def review_issue(world: World) -> dict[str, Any] | None:
    return world.jira_issue_for("Post-incident review")


def journal(world: World, sys_id: str) -> list[dict[str, Any]]:
    return list(
        world.sn.get(
            "/api/now/table/sys_journal_field", params={"sysparm_query": f"element_id={sys_id}"}
        ).json()["result"]
    )


def test_action_items_become_change_requests_and_gate_the_close(world: World) -> None:
    inc = world.open_p1()
    issue = wait_for(lambda: world.jira_issue_for("Checkout fails"), "the incident's Jira issue")
    resolve_in_servicenow(world, inc["sys_id"])
    review = wait_for(lambda: review_issue(world), "the post-incident review issue")
    fixed = new_task(
        world, "Add a disk alert on db01", review["key"],
        assignee={"accountId": jira_user(world, "bob@example.com")}, duedate="2026-12-01",
    )  # fmt: skip
    unowned = new_task(world, "Automate the failover", review["key"])
    crs = wait_for(lambda: change_requests(world), "the first change request")
    [cr] = crs
    assert cr["short_description"] == "Add a disk alert on db01"
    assert cr["assigned_to"] == BOB_SN and cr["due_date"] == "2026-12-01 00:00:00"
    assert cr["parent"] == inc["sys_id"] and cr["correlation_id"].startswith("itsm-ai-jira-")
    links = wait_for(
        lambda: world.jira.get(f"/rest/api/2/issue/{fixed}/remotelink").json(), "the back-link"
    )
    assert links[0]["object"]["title"] == f"{cr['number']}: Add a disk alert on db01"
    # Overdue (due 2026-12-01): the reminder names the owner as each system knows them.
    [sn_note] = wait_for(
        lambda: [n for n in journal(world, cr["sys_id"]) if n["value"].startswith("Reminder")],
        "the reminder on the change request",
    )
    assert f"sys_user {BOB_SN}" in sn_note["value"] and sn_note["element"] == "work_notes"
    bob = jira_user(world, "bob@example.com")
    wait_for(
        lambda: [c for c in world.jira_comments(fixed) if f"[~accountid:{bob}]" in c["body"]],
        "the reminder on the Jira action item, naming its assignee",
    )

    # The service desk closes: refused, with a note that says exactly what is missing.
    close_in_servicenow(world, inc["sys_id"])
    notes = wait_for(
        lambda: [n for n in journal(world, inc["sys_id"]) if "cannot be closed yet" in n["value"]],
        "the gate's work note",
    )
    assert notes[0]["element"] == "work_notes"
    text = notes[0]["value"]
    assert f"'Automate the failover' (jira:{unowned}): no owner; no due date" in text
    assert f"the postmortem (Jira {review['key']}) is not complete" in text
    wait_for(lambda: world.sn_record(inc["sys_id"])["state"] == "6", "ServiceNow back to Resolved")
    jira_note = wait_for(
        lambda: [
            c for c in world.jira_comments(issue["key"]) if "cannot be closed yet" in c["body"]
        ],
        "the gate's note in Jira",
    )
    assert jira_note[0]["visibility"]["value"] == "Developers"  # internal

    # The owner and the date arrive, the review is done: the close goes through.
    world.jira.put(
        f"/rest/api/2/issue/{unowned}",
        json={
            "fields": {
                "assignee": {"accountId": jira_user(world, "carol@example.com")},
                "duedate": "2026-12-15",
            }
        },
    ).raise_for_status()
    world.transition(review["key"], "In Progress")
    world.transition(review["key"], "Resolved", resolution={"name": "Done"})
    both = wait_for(
        lambda: (c := change_requests(world)) and len(c) == 2 and c, "the second change request"
    )
    second = next(c for c in both if c["short_description"] == "Automate the failover")
    assert second["assigned_to"] == CAROL_SN and second["due_date"] == "2026-12-15 00:00:00"
    gate = wait_for(
        lambda: (
            (g := world.api.get(f"/api/incidents/{inc['number']}/gate").json())["can_close"] and g
        ),
        "the gate to open",
    )
    assert gate["missing"] == []
    close_in_servicenow(world, inc["sys_id"])
    wait_for(
        lambda: (
            world.jira.get(f"/rest/api/2/issue/{issue['key']}").json()["fields"]["status"]["name"]
            == "Closed"
        ),
        "Jira closed",
    )
    world.quiet()
    assert world.sn_record(inc["sys_id"])["state"] == "7"
    assert len(change_requests(world)) == 2  # no duplicates

    # The audit: one row per action item, as CSV a spreadsheet opens.
    csv_text = world.api.get(
        "/api/audit",
        params={"format": "csv"},
        headers={"Authorization": f"Bearer {TOKENS['change-manager']}"},
    ).text
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert sorted(r["action_item"] for r in rows) == [
        "Add a disk alert on db01",
        "Automate the failover",
    ]
    assert {r["change_request"] for r in rows} == {c["number"] for c in both}
    assert all(r["incident"] == inc["number"] and r["owner"] for r in rows)
    assert "blocked" in rows[0]["gate"]  # the refused close is on the record


def test_a_change_manager_override_is_audited(world: World) -> None:
    inc = world.open_p1()
    wait_for(lambda: world.jira_issue_for("Checkout fails"), "the incident's Jira issue")
    resolve_in_servicenow(world, inc["sys_id"])
    wait_for(lambda: review_issue(world), "the review issue")
    viewer = world.api.post(
        f"/api/incidents/{inc['number']}/gate/override",
        json={"reason": "customer agreed"},
        headers={"Authorization": f"Bearer {TOKENS['viewer']}"},
    )
    assert viewer.status_code == 403
    r = world.api.post(
        f"/api/incidents/{inc['number']}/gate/override",
        json={"reason": "fixes tracked in the vendor's change process"},
        headers={"Authorization": f"Bearer {TOKENS['change-manager']}"},
    )
    assert r.status_code == 200, r.text
    world.quiet()
    close_in_servicenow(world, inc["sys_id"])
    world.quiet()
    assert world.sn_record(inc["sys_id"])["state"] == "7"
    history = world.api.get(f"/api/incidents/{inc['number']}/history").json()
    override = [h for h in history if h["action"] == "override"]
    assert override and override[0]["actor"] == "token:change-manager"
    assert "vendor's change process" in override[0]["reason"]


@pytest.mark.crash  # make crash (kills a process; .ci/run runs it)
def test_a_crash_between_creating_the_change_and_recording_it_leaves_one(
    sims: SimulatorCluster, tmp_path: Path
) -> None:
    """kill -9 while the change request's create is in flight (stored, no answer yet)."""
    for name, url in sims.urls.items():
        httpx.post(f"{url}/_sim/reset").raise_for_status()
        httpx.post(f"{url}/_sim/seed", json=_people_only(name)).raise_for_status()
    env = {
        **os.environ,
        **simulator_env(sims, f"sqlite:///{tmp_path / 'crash.db'}"),
        "ITSM_SYNC_POSTMORTEM__REVIEW_ISSUE_TYPE": "",
        "COLUMNS": "200",
    }
    cli = [sys.executable, "-m", "service"]
    sn = httpx.Client(base_url=sims.urls["servicenow"], auth=("admin", "admin"))
    inc = sn.post(
        "/api/now/table/incident",
        json={"short_description": "db down", "impact": "1", "urgency": "1"},
    ).json()["result"]
    first = subprocess.run(
        [*cli, "sync", "--once"], env=env, capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stdout + first.stderr
    sn.patch(
        f"/api/now/table/incident/{inc['sys_id']}",
        json={"state": "6", "close_code": "Solution provided", "close_notes": "ok"},
    )
    added = subprocess.run(
        [*cli, "postmortem", "add-action", inc["number"], "--title", "Add replicas", "--owner", "bob@example.com", "--due", "2099-12-01"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    # The next create of a record is stored, then its answer never comes.
    httpx.post(
        f"{sims.urls['servicenow']}/_sim/faults",
        json={
            "rules": [
                {
                    "route": "POST /api/now/table/{table}",
                    "timeout_rate": 1.0,
                    "timeout_seconds": 60,
                    "count": 1,
                }
            ]
        },
    ).raise_for_status()
    proc = subprocess.Popen(
        [*cli, "sync", "--once"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(
        lambda: sn.get("/api/now/table/change_request").json()["result"],
        "the change request to be stored",
        60,
    )
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    shown = subprocess.run(
        [*cli, "postmortem", "show", inc["number"], "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert '"change_request": ""' in shown.stdout  # the link was never recorded
    httpx.delete(f"{sims.urls['servicenow']}/_sim/faults").raise_for_status()
    again = subprocess.run(
        [*cli, "sync", "--once"], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stdout + again.stderr
    crs = sn.get("/api/now/table/change_request").json()["result"]
    assert len(crs) == 1, [c["number"] for c in crs]
    shown = subprocess.run(
        [*cli, "postmortem", "show", inc["number"], "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f'"change_request": "{crs[0]["number"]}"' in shown.stdout


def test_overdue_changes_are_flagged_and_reminded_once(world: World) -> None:
    inc = world.open_p1()
    wait_for(lambda: world.jira_issue_for("Checkout fails"), "the incident's Jira issue")
    resolve_in_servicenow(world, inc["sys_id"])
    wait_for(lambda: review_issue(world), "the review issue")
    manager = {"Authorization": f"Bearer {TOKENS['change-manager']}"}
    r = world.api.post(
        f"/api/incidents/{inc['number']}/actions",
        json={
            "title": "Rotate the db01 certificates",
            "owner": "bob@example.com",
            "due": "2099-11-01",
        },
        headers=manager,
    )
    assert r.status_code == 200, r.text
    [cr] = wait_for(lambda: change_requests(world), "the change request")
    # A due date in the past is refused on the API; on the change request, it can be moved.
    world.sn.patch(
        f"/api/now/table/change_request/{cr['sys_id']}", json={"due_date": "2026-11-01 00:00:00"}
    ).raise_for_status()
    reminders = wait_for(
        lambda: [
            n for n in journal(world, cr["sys_id"]) if n["value"].startswith("Reminder for @")
        ],
        "the overdue reminder",
    )
    assert "was due on 2026-11-01" in reminders[0]["value"]
    # Another reconcile inside the reminder period sends no second reminder.
    world.api.post(
        f"/api/incidents/{inc['number']}/actions",
        json={"title": "Document the failover", "owner": "carol@example.com", "due": "2099-01-15"},
        headers=manager,
    ).raise_for_status()
    wait_for(lambda: len(change_requests(world)) == 2, "the second change request")
    world.quiet()
    assert (
        len([n for n in journal(world, cr["sys_id"]) if n["value"].startswith("Reminder for @")])
        == 1
    )
    overdue = world.api.get("/api/audit", params={"overdue": "true"}, headers=manager).json()
    assert [row["action_item"] for row in overdue] == ["Rotate the db01 certificates"]
    assert overdue[0]["days_overdue"] > 0 and overdue[0]["change_request"] == cr["number"]
    assert (
        world.api.get(
            "/api/audit", headers={"Authorization": f"Bearer {TOKENS['viewer']}"}
        ).status_code
        == 403
    )
