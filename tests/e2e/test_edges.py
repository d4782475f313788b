"""The engine at the edges real desks produce (issue 13): per-field last-writer-wins, edits made
while the engine writes, lost answers, hostile text, replays, round trips, quick resolves,
pairs linked by hand and duplicates. In-process against the simulators: one reconcile round
is ``sync`` (poll, then drain the queue), so the order of events is the test's own."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest

from service.domain import incidents as incidents_domain
from service.domain import parked
from service.domain.errors import Conflict
from service.domain.roles import Actor
from service.harness import WEBHOOK_SECRETS
from sync import store
from sync.ingest import ingest_webhook
from sync.pairing import pair_unlinked
from sync.poller import poll_all
from sync.worker import drain
from tests.e2e.conftest import SN_TABLE, Desk


def test_an_older_edit_never_overwrites_a_newer_one_per_field(desk: Desk) -> None:
    """The desk retitles, an engineer retitles a second later, the desk then edits the
    description: judged by whole-record times ServiceNow's record is newer, so its older
    title used to win. Per field, the engineer's title is the newer one."""
    inc, key = desk.linked_p1()
    desk.patch(inc["sys_id"], short_description="Checkout down in EU")
    time.sleep(1.1)
    desk.edit(key, summary="Checkout down for card payments")
    time.sleep(1.1)
    desk.patch(inc["sys_id"], description="Card payments fail with a timeout at the bank.")
    desk.sync()
    assert desk.sn_record(inc["sys_id"])["short_description"] == "Checkout down for card payments"
    issue = desk.issue(key)
    assert issue["fields"]["summary"] == "Checkout down for card payments"
    assert "timeout at the bank" in issue["fields"]["description"]
    # The decision is in the audit, with the times that made it.
    with store.session_scope(desk.rt.db, readonly=True) as s:
        row = store.find_incident(s, inc["number"])
        assert row is not None
        reasons = [e.reason for e in store.history(s, row.id) if e.action == "conflict"]
    assert any("last writer wins" in r and "jira" in r for r in reasons), reasons


def test_an_edit_made_while_the_engine_writes_is_not_lost(desk: Desk) -> None:
    """The engine writes the desk's title to Jira; an engineer retitles the issue after the
    desk did but before the engine's write lands. The engineer's title is the newest: it ends
    up on both sides, not overwritten by the engine's older one."""
    inc, key = desk.linked_p1()
    desk.patch(inc["sys_id"], short_description="Checkout down in EU")
    poll_all(desk.rt.db, desk.rt.connectors)
    desk.during_next_write(
        "jira",
        "PUT /rest/api/{version}/issue/{issueIdOrKey}",
        lambda: desk.edit(key, summary="Checkout down: card payments only"),
    )
    desk.sync()
    assert desk.issue(key)["fields"]["summary"] == "Checkout down: card payments only"
    assert desk.sn_record(inc["sys_id"])["short_description"] == "Checkout down: card payments only"


def test_our_write_whose_answer_never_came_is_not_a_newer_edit(desk: Desk) -> None:
    """The engine writes the desk's title to Jira after an engineer retitled the issue; Jira
    applies it but no answer ever comes (every retry too: the process would have died the
    same way), so nothing of the write is recorded. Its change in Jira's history is ours,
    not a person's newer edit: the engineer's title, the newest edit by a person, wins."""
    inc, key = desk.linked_p1()
    desk.patch(inc["sys_id"], short_description="Checkout down in EU")
    poll_all(desk.rt.db, desk.rt.connectors)
    time.sleep(1.1)
    desk.edit(key, summary="Checkout down: card payments only")  # after the engine's read
    desk.fault(
        "jira", route="PUT /rest/api/{version}/issue/{issueIdOrKey}",
        timeout_rate=1.0, timeout_seconds=0.2, count=5,
    )  # fmt: skip
    drain(desk.rt.reconciler, threads=1, timeout=60)
    assert desk.issue(key)["fields"]["summary"] == "Checkout down in EU"  # applied, unanswered
    time.sleep(2.0)  # the failed target's backoff
    desk.sync()
    assert desk.issue(key)["fields"]["summary"] == "Checkout down: card payments only"
    assert desk.sn_record(inc["sys_id"])["short_description"] == "Checkout down: card payments only"


def test_a_transition_whose_answer_is_lost_is_no_park(desk: Desk) -> None:
    """Jira applies the move but its answer never arrives; the retry would be refused from the
    new status ("not valid for this issue") and used to park the incident."""
    inc, key = desk.linked_p1()
    desk.fault(
        "jira", route="POST /rest/api/{version}/issue/{issueIdOrKey}/transitions",
        timeout_rate=1.0, timeout_seconds=0.3, count=1,
    )  # fmt: skip
    desk.patch(inc["sys_id"], state="2")
    desk.sync()
    assert desk.parked() == []
    assert desk.issue(key)["fields"]["status"]["name"] == "In Progress"


def test_a_record_found_by_its_correlation_key_holds_our_values_not_a_newer_edit(
    desk: Desk,
) -> None:
    """The Jira issue is made, then its create fails (here the correlation property write; in
    the chaos run a SIGKILL right after the POST): a poll finds the issue by its correlation
    label and links it. The status it was created in (Open) is ours, not an engineer's move
    newer than the desk's: it used to send the incident back to New in ServiceNow."""
    inc = desk.open_p1("Checkout down")
    desk.patch(inc["sys_id"], state="2")
    desk.fault(
        "jira", route="PUT /rest/api/{version}/issue/{issueIdOrKey}/properties/{propertyKey}",
        error_rate=1.0, error_status=503, count=5,
    )  # fmt: skip
    desk.sync(rounds=1)
    [issue] = desk.jira_issues()  # made, not linked
    desk.sync(rounds=1)  # the poll finds it and links it
    assert desk.sn_record(inc["sys_id"])["state"] == "2"
    time.sleep(2.0)  # the failed target's backoff (at most BACKOFF_BASE_SECONDS the first time)
    desk.sync()
    assert desk.sn_record(inc["sys_id"])["state"] == "2"
    assert desk.issue(issue["key"])["fields"]["status"]["name"] == "In Progress"


def test_hostile_text_is_cleaned_cut_and_inert_and_parks_nothing(desk: Desk) -> None:
    """A NUL byte, a 5 MB description and markup that the other side would render live."""
    huge = "All card payments fail. " * 220_000  # 5 MB
    r = desk.sn.post(
        SN_TABLE,
        json={
            "short_description": "Payments\x00 failing", "description": huge, "impact": "1",
            "urgency": "1",
        },
    )  # fmt: skip
    assert r.status_code == 201, r.text
    inc = r.json()["result"]
    desk.sync()
    assert desk.parked() == []
    key = desk.incident_issue()["key"]
    fields = desk.issue(key)["fields"]
    assert fields["summary"] == "Payments failing"
    assert len(fields["description"]) <= 32_767 and fields["description"].endswith("[truncated]")
    # Jira -> ServiceNow: a [code] block would be live HTML in a journal entry.
    desk.jira.post(
        f"/rest/api/2/issue/{key}/comment",
        json={"body": "see [code]<a href='https://evil.example'>the fix</a>[/code]"},
    ).raise_for_status()
    # ServiceNow -> Jira: wiki link markup would be a live link in Jira.
    desk.patch(inc["sys_id"], comments="reset it here: [click|https://evil.example]")
    desk.sync()
    [entry] = [e for e in desk.journal(inc["sys_id"]) if "the fix" in e["value"]]
    assert "[code]<a" not in entry["value"] and "[\u200bcode]<a" in entry["value"]
    [comment] = [c for c in desk.comments(key) if "reset it here" in c["body"]]
    assert "\\[click|https://evil.example]" in comment["body"]


def test_a_comment_that_only_looks_like_ours_is_synced_and_jsm_internal_stays_internal(
    desk: Desk,
) -> None:
    inc, key = desk.linked_p1()
    desk.jira.post(
        f"/rest/api/2/issue/{key}/comment",
        json={"body": "[itsm-sync from jira:OPS-9] not an echo: a person typed this"},
    ).raise_for_status()
    desk.jira.post(
        f"/rest/api/2/issue/{key}/comment",
        json={
            "body": "customer's card numbers are in the logs",
            "properties": [{"key": "sd.public.comment", "value": {"internal": True}}],
        },
    ).raise_for_status()
    desk.sync()
    entries = {e["value"].split("] ", 1)[-1]: e["element"] for e in desk.journal(inc["sys_id"])}
    typed = [v for v in entries if "a person typed this" in v]
    assert typed and entries[typed[0]] == "comments"
    assert entries["customer's card numbers are in the logs"] == "work_notes"


def test_a_close_code_set_in_servicenow_survives_the_round_trip(desk: Desk) -> None:
    inc, key = desk.linked_p1()
    desk.patch(
        inc["sys_id"], state="6", close_code="Workaround provided",
        close_notes="Traffic moved to the EU pool",
    )  # fmt: skip
    desk.sync(rounds=3)
    record = desk.sn_record(inc["sys_id"])
    assert record["state"] == "6"
    assert (record["close_code"], record["close_notes"]) == (
        "Workaround provided", "Traffic moved to the EU pool",
    )  # fmt: skip
    assert desk.issue(key)["fields"]["status"]["name"] == "Resolved"


def test_replay_never_moves_an_ended_incident_backwards(desk: Desk) -> None:
    """Jira refuses a write and its target is parked; meanwhile an engineer moves the issue and,
    later, the desk cancels the incident (a P3: no postmortem). Replaying the parked write
    must not reopen the incident with the engineer's older move."""
    # Every incident gets a Jira issue here, a P3 too.
    desk.rt.reconciler.policy = dataclasses.replace(desk.rt.reconciler.policy, create_when={})
    inc = desk.open_p1("Search is slow", impact="2", urgency="3")
    desk.sync()
    key = desk.incident_issue()["key"]
    desk.fault("jira", route="PUT /rest/api/{version}/issue/{issueIdOrKey}", error_rate=1.0,
               error_status=400, count=1)  # fmt: skip
    desk.patch(inc["sys_id"], short_description="Search is slow in EU")
    desk.sync(rounds=1)
    [item] = desk.parked()
    assert item.target == "jira:default"
    desk.transition(key, "In Progress")
    time.sleep(1.1)
    desk.patch(inc["sys_id"], state="8")
    desk.sync()
    with store.session_scope(desk.rt.db) as s:
        assert parked.replay(s, every=True, actor=Actor.cli()) == [item.id]
    desk.sync()
    assert desk.sn_record(inc["sys_id"])["state"] == "8"
    assert desk.issue(key)["fields"]["status"]["name"] == "Closed"
    assert desk.parked() == []


def test_an_incident_resolved_at_once_still_gets_its_records(desk: Desk) -> None:
    """Opened as a public P1 and resolved before the engine looked: its Jira issue and status
    page incident are created, then resolved, so the record of the outage exists."""
    inc = desk.open_p1("Login outage")
    desk.patch(inc["sys_id"], state="2")
    desk.sync(rounds=1)
    incidents_domain.set_public(
        desk.rt.db, ident=inc["number"], message="Login is failing for some customers.",
        public=True, actor=Actor.cli(),
    )  # fmt: skip
    desk.patch(inc["sys_id"], state="6", close_code="Solution provided", close_notes="restarted")
    desk.sync(rounds=3)
    assert desk.incident_issue()["fields"]["status"]["name"] == "Resolved"
    [page] = desk.sp.get("/incidents").json()  # the only one: the sims start empty
    assert page["status"] == "resolved"
    # Created at the resolved stage: its text (the message was approved while it was open).
    assert page["incident_updates"][0]["body"] == "This incident has been resolved."


def test_quick_resolve_before_any_record_existed(desk: Desk) -> None:
    inc = desk.open_p1("Payments blip")
    desk.patch(inc["sys_id"], state="6", close_code="Solution provided", close_notes="blip")
    desk.sync(rounds=3)
    assert desk.incident_issue()["fields"]["status"]["name"] == "Resolved"


def test_a_workflow_walk_cut_short_is_ours_not_someones_move(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a chaos run (seed 13): the desk resolved an incident; on its way to Resolved
    the engine moved the Jira issue Open -> In Progress and the process died before the next
    step. The next pass took "In Progress" for an engineer's move, newer than the desk's
    resolve, and reopened the ServiceNow incident. The step is noted before it is made."""
    inc, key = desk.linked_p1("Payments blip")
    desk.patch(inc["sys_id"], state="6", close_code="Solution provided", close_notes="blip")
    jira = desk.rt.connectors[("jira", "default")]
    post = jira._post_transition  # type: ignore[attr-defined]
    made: list[str] = []

    def dies_after_the_first_step(ref: Any, step: dict[str, Any], given: Any) -> None:
        post(ref, step, given)
        made.append(str(step["to"]["name"]))
        raise RuntimeError("killed between two steps")  # no answer recorded, as a SIGKILL

    monkeypatch.setattr(jira, "_post_transition", dies_after_the_first_step)
    desk.sync(rounds=1)
    monkeypatch.undo()
    assert made == ["In Progress"]
    assert desk.issue(key)["fields"]["status"]["name"] == "In Progress"
    time.sleep(2.5)  # the failed key is due again after its first backoff (2 s)
    desk.sync(rounds=2)
    assert desk.sn_record(inc["sys_id"])["state"] == "6"  # the old code reopened it ("2")
    assert desk.issue(key)["fields"]["status"]["name"] == "Resolved"


def test_pairs_linked_by_hand_are_linked_not_duplicated(desk: Desk) -> None:
    """Three pairs made before itsm-sync: a correlation_id holding the issue key, a Jira
    ServiceNow remote link, and one linked with `itsm-sync link`. Backfill links them."""
    issues = []
    for title in ("Checkout down", "Search down", "Login down"):
        r = desk.jira.post(
            "/rest/api/2/issue",
            json={"fields": {"project": {"key": "OPS"}, "issuetype": {"name": "Incident"},
                             "summary": title, "priority": {"name": "Highest"}}},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        issues.append(r.json()["key"])
    by_correlation = desk.open_p1("Checkout down", correlation_id=issues[0])
    by_remote_link = desk.open_p1("Search down")
    desk.jira.post(
        f"/rest/api/2/issue/{issues[1]}/remotelink",
        json={
            "application": {"type": "com.servicenow", "name": "ServiceNow"},
            "object": {
                "url": f"https://acme.service-now.com/incident.do?sys_id={by_remote_link['sys_id']}",
                "title": by_remote_link["number"],
            },
        },
    ).raise_for_status()
    by_hand = desk.open_p1("Login down")
    result = incidents_domain.link(
        desk.rt.reconciler, first=by_hand["number"], second=issues[2], actor=Actor.cli()
    )
    assert result["linked"] == [by_hand["number"], issues[2]]
    poll_all(desk.rt.db, desk.rt.connectors)
    assert pair_unlinked(desk.rt.reconciler) >= 2
    desk.sync()
    incident_issues = desk.jira_issues("project = OPS AND issuetype = Incident", "summary")
    assert sorted(i["key"] for i in incident_issues) == sorted(issues)  # no second issue
    with store.session_scope(desk.rt.db, readonly=True) as s:
        for sn, key in zip((by_correlation, by_remote_link, by_hand), issues, strict=True):
            sn_row = store.find_incident(s, sn["number"])
            jira_row = store.find_incident(s, key)
            assert sn_row is not None and jira_row is not None and sn_row.id == jira_row.id
    # Two records that belong to two incidents are not merged silently.
    other = desk.open_p1("Other outage")
    desk.sync()
    other_key = next(
        i["key"]
        for i in desk.jira_issues("project = OPS AND issuetype = Incident", "summary")
        if i["fields"]["summary"] == "Other outage"
    )
    with pytest.raises(Conflict, match="unlink one first"):
        incidents_domain.link(
            desk.rt.reconciler, first=other["number"], second=issues[0], actor=Actor.cli()
        )
    assert other_key not in issues


def test_duplicates_follow_their_parent(desk: Desk) -> None:
    parent, key = desk.linked_p1("Checkout down")
    child = desk.open_p1("Checkout broken for me", parent_incident=parent["sys_id"])
    # One opened on its own first (it got its Jira issue), then found to be a duplicate.
    late = desk.open_p1("Checkout 500s")
    desk.sync()
    late_key = next(
        i["key"]
        for i in desk.jira_issues("project = OPS AND issuetype = Incident", "summary")
        if i["fields"]["summary"] == "Checkout 500s"
    )
    desk.patch(late["sys_id"], parent_incident=parent["sys_id"])
    desk.sync()
    notes = [c["body"] for c in desk.comments(key) if "Duplicate ticket" in c["body"]]
    assert len(notes) == 2 and child["number"] in notes[0] and late["number"] in notes[1]
    links = desk.issue(key)["fields"]["issuelinks"]
    assert [(x["type"]["name"], (x.get("inwardIssue") or x.get("outwardIssue"))["key"])
            for x in links] == [("Duplicate", late_key)]  # fmt: skip
    desk.patch(parent["sys_id"], state="6", close_code="Solution provided", close_notes="fixed")
    desk.sync(rounds=3)
    assert desk.sn_record(child["sys_id"])["state"] == "6"
    assert desk.sn_record(late["sys_id"])["state"] == "6"
    assert desk.issue(late_key)["fields"]["status"]["name"] == "Resolved"


def test_a_work_note_made_while_the_engine_writes_is_mirrored(desk: Desk) -> None:
    """Found by a chaos run (seed 21): the desk added a work note between the engine's read
    and its PATCH of the incident; the PATCH's answer showed no one else's field change (a
    note changes no field), so the comments were taken as read up to the answer, and the
    note never reached Jira."""
    inc, key = desk.linked_p1()
    desk.edit(key, summary="Checkout down for card payments")
    poll_all(desk.rt.db, desk.rt.connectors)
    desk.during_next_write(
        "servicenow",
        "PATCH /api/now/table/{table}/{sys_id}",
        lambda: desk.patch(inc["sys_id"], work_notes="WN we are looking into it"),
    )
    desk.sync()
    comments = desk.jira.get(f"/rest/api/2/issue/{key}/comment").json()["comments"]
    assert any("WN we are looking into it" in str(c["body"]) for c in comments), comments


def test_an_edit_made_while_the_engine_writes_survives_a_later_observation(desk: Desk) -> None:
    """Found by a chaos run (seed 21, 2026-12-08): an engineer retitled the Jira issue (j3);
    while the engine wrote j3 to ServiceNow the desk retitled the incident there (s4). The
    write's answer told of s4 ("weighed on the next pass"), but before that pass a newer
    observation of the incident (the desk's next edit, another field) replaced the stored one
    and its history, s4 with it: j3 stayed everywhere, the desk's newer title lost."""
    import threading

    inc, key = desk.linked_p1()
    with store.session_scope(desk.rt.db, readonly=True) as s:
        row = store.find_incident(s, inc["number"])
        assert row is not None
        incident_id = row.id
    time.sleep(1.1)  # ServiceNow keeps whole seconds: the edits below are each newer
    desk.edit(key, summary="Checkout down (j3)")
    poll_all(desk.rt.db, desk.rt.connectors)
    time.sleep(1.1)
    desk.fault(
        "servicenow", route="PATCH /api/now/table/{table}/{sys_id}", latency_ms=1500, count=1
    )
    writing = threading.Thread(target=desk.rt.reconciler.reconcile, args=(incident_id,))
    writing.start()
    time.sleep(0.7)
    desk.patch(inc["sys_id"], short_description="Checkout down (s4)")  # mid-write
    writing.join(timeout=60)
    assert desk.sn_record(inc["sys_id"])["short_description"] == "Checkout down (j3)"
    time.sleep(1.1)
    after = desk.patch(inc["sys_id"], description="Card payments fail at the last step (s5)")
    # Its business-rule delivery (the update's record and its own sys_audit rows), stored
    # before the next pass: the newer observation, whose history holds this update alone.
    audit = desk.sn.get(
        "/api/now/table/sys_audit",
        params={"sysparm_query": f"documentkey={inc['sys_id']}^record_checkpoint="
                f"{after['sys_mod_count']}"},
    ).json()["result"]  # fmt: skip
    record = desk.sn.get(f"{SN_TABLE}/{inc['sys_id']}").json()["result"]
    body = json.dumps(
        {"table": "incident", "operation": "update", "sys_id": inc["sys_id"],
         "record": record, "journal": [], "audit": audit}
    ).encode()  # fmt: skip
    headers = {
        "X-ServiceNow-Secret": WEBHOOK_SECRETS["servicenow"],
        "X-ServiceNow-Delivery": f"{inc['sys_id']}:{after['sys_mod_count']}",
    }
    connector = desk.rt.connectors[("servicenow", "default")]
    assert ingest_webhook(desk.rt.db, connector, headers, body).status == 202
    desk.sync()
    assert desk.sn_record(inc["sys_id"])["short_description"] == "Checkout down (s4)"
    assert desk.issue(key)["fields"]["summary"] == "Checkout down (s4)"
