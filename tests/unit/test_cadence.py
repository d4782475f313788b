"""The update cadence, on a clock the test controls: reminders at the right minute, never twice,
an escalation after two missed updates, nothing once resolved, and updates that count."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from config.settings import CommsSettings
from mapping.model import Comment, Incident, Severity, Stamp, State, Visibility
from sync import cadence, store

OPENED = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)


def minutes(n: float) -> dt.datetime:
    return OPENED + dt.timedelta(minutes=n)


def p1(**changes: object) -> Incident:
    base: dict[str, object] = {
        "id": "i1", "title": "Checkout down", "severity": Severity.SEV1,
        "state": State.INVESTIGATING, "assignee": "alice@example.com", "started_at": OPENED,
    }  # fmt: skip
    return Incident.model_validate({**base, **changes})


SETTINGS = CommsSettings(escalate_to="incident-managers")


def test_a_sev1_owes_an_update_every_15_minutes_and_is_reminded_at_the_minute() -> None:
    incident = p1()
    assert cadence.next_update_due(incident, SETTINGS, OPENED) == minutes(15)
    assert cadence.reminders(incident, SETTINGS, OPENED, minutes(14.9)) == []
    [reminder] = cadence.reminders(incident, SETTINGS, OPENED, minutes(15))
    assert reminder.visibility is Visibility.INTERNAL and reminder.origin == "itsm-sync:cadence"
    assert "alice@example.com, please post an update" in reminder.body
    # Once it is on the incident, the same due time never reminds again.
    reminded = incident.model_copy(update={"comments": (reminder,)})
    assert cadence.reminders(reminded, SETTINGS, OPENED, minutes(20)) == []


def test_two_missed_updates_escalate_once() -> None:
    incident = p1()
    got = cadence.reminders(incident, SETTINGS, OPENED, minutes(30))
    assert [c.id.split(":")[0] for c in got] == ["cadence", "cadence-escalation"]
    assert "escalating to incident-managers" in got[1].body
    escalated = incident.model_copy(update={"comments": tuple(got)})
    assert cadence.reminders(escalated, SETTINGS, OPENED, minutes(90)) == []


def test_an_update_moves_the_next_one_due_and_internal_ones_count_only_if_configured() -> None:
    public = Comment(id="c1", body="We are failing over.", visibility=Visibility.PUBLIC,
                     created_at=minutes(10))  # fmt: skip
    internal = Comment(id="c2", body="db02 is back", created_at=minutes(12))
    assert cadence.next_update_due(p1(comments=(public,)), SETTINGS, OPENED) == minutes(25)
    assert cadence.next_update_due(p1(comments=(internal,)), SETTINGS, OPENED) == minutes(15)
    counting = SETTINGS.model_copy(update={"internal_updates_count": True})
    assert cadence.next_update_due(p1(comments=(internal,)), counting, OPENED) == minutes(27)
    # A status page update (comms approved a public message) counts.
    published = p1(public=True, changed={"public_message": Stamp(at=minutes(14), system="comms")})
    assert cadence.next_update_due(published, SETTINGS, OPENED) == minutes(29)
    # Our own reminders do not.
    [reminder] = cadence.reminders(p1(), SETTINGS, OPENED, minutes(15))
    assert cadence.next_update_due(p1(comments=(reminder,)), SETTINGS, OPENED) == minutes(15)


@pytest.mark.parametrize(
    ("severity", "state", "owed"),
    [
        (Severity.SEV2, State.INVESTIGATING, 30),
        (Severity.SEV3, State.INVESTIGATING, None),
        (Severity.SEV1, State.RESOLVED, None),
        (Severity.SEV1, State.CLOSED, None),
    ],
)
def test_who_owes_updates(severity: Severity, state: State, owed: int | None) -> None:
    due = cadence.next_update_due(p1(severity=severity, state=state), SETTINGS, OPENED)
    assert due == (None if owed is None else minutes(owed))


def test_check_adds_each_reminder_once_and_queues_the_incident(tmp_path: Path) -> None:
    db = store.make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    store.migrate(db)
    with store.session_scope(db) as s:
        row = store.create_incident(s, p1().model_dump(mode="json"))
        resolved = store.create_incident(s, p1(state=State.RESOLVED).model_dump(mode="json"))
    assert cadence.check(db, SETTINGS, now=minutes(16)) == 1
    assert cadence.check(db, SETTINGS, now=minutes(17)) == 0  # not twice
    with store.session_scope(db, readonly=True) as s:
        assert cadence.overdue(s, SETTINGS, now=minutes(17)) == 1
    assert cadence.check(db, SETTINGS, now=minutes(31)) == 1  # the escalation
    with store.session_scope(db, readonly=True) as s:
        fresh = store.get_incident(s, row.id)
        done = store.get_incident(s, resolved.id)
        queued = s.get(store.Dirty, f"incident:{row.id}")
    assert fresh is not None and done is not None
    ids = [c["id"].split(":")[0] for c in fresh.data["comments"]]
    assert ids == ["cadence", "cadence-escalation"]
    assert done.data["comments"] == []  # a resolved incident owes nothing
    assert queued is not None  # the engine posts them (work note, restricted comment)
