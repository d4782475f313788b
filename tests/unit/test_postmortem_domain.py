"""The postmortem service layer on its own (SQLite, a change system that only knows its
people): overrides with who, why and at which severity; revoking them; bad input refused
before anything is written."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from typer.testing import CliRunner

from config.settings import PostmortemSettings, Settings
from connectors.base import Capability, Person
from connectors.errors import NotFound
from mapping.model import Incident
from postmortem_tracker.models import ActionItem, GateEvent, Postmortem, Requirement
from postmortem_tracker.tracker import Tracker
from service.app import create_app
from service.cli import app
from service.domain import postmortems
from service.domain.errors import Conflict, Forbidden, Invalid
from service.domain.errors import NotFound as Unknown
from service.domain.roles import Actor
from service.runtime import Runtime
from sync import store

CM = Actor.token("cab-sam", "change-manager")
TODAY = dt.date(2026, 12, 6)


class People:
    """The change system as far as the service layer asks it: who its users are."""

    system, instance = "servicenow", "default"
    capabilities = frozenset({Capability.CHANGE_REQUESTS, Capability.PEOPLE})
    users = {"bob@example.com": "b0b", "carol@example.com": "ca401"}

    def person_by_email(self, email: str) -> Person:
        if email not in self.users:
            raise NotFound(f"no active ServiceNow user has the email {email!r}", system="sn")
        return Person(id=self.users[email], email=email)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database file, copied for each test (migrating takes a second)."""
    path = tmp_path_factory.mktemp("pm") / "template.db"
    engine = store.make_engine(f"sqlite:///{path}")
    store.migrate(engine)
    engine.dispose()
    return path


@pytest.fixture
def db(migrated: Path, tmp_path: Path) -> Iterator[Engine]:
    shutil.copy(migrated, tmp_path / "pm.db")
    engine = store.make_engine(f"sqlite:///{tmp_path / 'pm.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def tracker(db: Engine) -> Tracker:
    return Tracker(db, {("servicenow", "default"): People()}, PostmortemSettings())  # type: ignore[dict-item]


def incident(tracker: Tracker, severity: str, *, ident: str = "inc1", **data: Any) -> Incident:
    """Store (or update) the incident and latch its requirement as the engine does."""
    body = {"title": "Checkout fails", "severity": severity, "state": "resolved", **data}
    with store.session_scope(tracker.db) as s:
        row = store.get_incident(s, ident)
        if row is None:
            store.create_incident(s, body, incident_id=ident)
            store.add_link(
                s, incident_id=ident, system="servicenow", instance="default",
                object_type="incident", remote_id=f"sys-{ident}", remote_key=f"INC-{ident}",
            )  # fmt: skip
        else:
            store.save_incident(s, row, {**row.data, **body})
    inc = Incident.model_validate({**body, "id": ident})
    tracker.note(inc)
    return inc


def test_an_override_given_at_sev2_does_not_carry_over_to_sev1(tracker: Tracker) -> None:
    incident(tracker, "SEV2")
    assert not postmortems.gate(tracker, ident="inc1")["can_close"]
    done = postmortems.override(tracker, ident="INC-inc1", reason="vendor tracks it", actor=CM)
    assert done["by"] == "token:cab-sam" and done["severity"] == "SEV2"
    gate = postmortems.gate(tracker, ident="inc1")
    assert gate["can_close"] and gate["override"]["by"] == "token:cab-sam"
    assert gate["override"]["reason"] == "vendor tracks it"
    incident(tracker, "SEV1")  # raised: the override was not given for this
    gate = postmortems.gate(tracker, ident="inc1")
    assert not gate["can_close"] and gate["override"]["in_force"] is False
    assert any("given at SEV2" in m and "SEV1" in m for m in gate["missing"])
    incident(tracker, "SEV3")  # and lowered again: the latch keeps SEV1
    assert not postmortems.gate(tracker, ident="inc1")["can_close"]
    postmortems.override(tracker, ident="inc1", reason="CAB agreed at SEV1", actor=CM)
    assert postmortems.gate(tracker, ident="inc1")["can_close"]


def test_revoking_an_override_rearms_the_gate_and_is_audited(tracker: Tracker) -> None:
    incident(tracker, "SEV1")
    postmortems.override(tracker, ident="inc1", reason="first", actor=CM)
    postmortems.override(tracker, ident="inc1", reason="second", actor=CM)
    assert postmortems.gate(tracker, ident="inc1")["can_close"]
    out = postmortems.revoke_override(
        tracker, ident="inc1", reason="the vendor backed out", actor=Actor.cli("dana")
    )
    assert out["revoked"] and out["override_by"] == "token:cab-sam"
    gate = postmortems.gate(tracker, ident="inc1")
    assert not gate["can_close"] and gate["override"] is None  # no older one comes back
    with store.session_scope(tracker.db, readonly=True) as s:
        events = s.exec(select(GateEvent).order_by(col(GateEvent.id))).all()
        history = store.history(s, "inc1")
    assert [(e.revoked_by, e.revoke_reason) for e in events] == [
        ("cli:dana", "the vendor backed out")
    ] * 2
    revoked = [h for h in history if h.action == "override" and h.after == "revoked"]
    assert revoked and revoked[0].actor == "cli:dana" and "backed out" in revoked[0].reason
    with pytest.raises(Conflict, match="no override in force"):
        postmortems.revoke_override(tracker, ident="inc1", reason="again", actor=CM)


@pytest.mark.parametrize("reason", ["", "   ", "x"])
def test_an_override_without_a_reason_is_refused(tracker: Tracker, reason: str) -> None:
    incident(tracker, "SEV1")
    with pytest.raises(Invalid) as caught:
        postmortems.override(tracker, ident="inc1", reason=reason, actor=CM)
    assert caught.value.field == "reason" and caught.value.status == 422
    with pytest.raises(Invalid):
        postmortems.revoke_override(tracker, ident="inc1", reason=reason, actor=CM)
    assert postmortems.gate(tracker, ident="inc1")["override"] is None


def test_a_viewer_may_not_override(tracker: Tracker) -> None:
    incident(tracker, "SEV1")
    with pytest.raises(Forbidden):
        postmortems.override(
            tracker, ident="inc1", reason="because", actor=Actor.token("v", "viewer")
        )


def _items(db: Engine) -> list[ActionItem]:
    with store.session_scope(db, readonly=True) as s:
        return list(s.exec(select(ActionItem)).all())


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"ident": "INC-nope"}, "incident", "no incident INC-nope"),
        ({"due": dt.date(2026, 12, 5)}, "due", "in the past"),
        ({"owner": "mallory@example.com"}, "owner", "no active ServiceNow user"),
        ({"owner": "bob"}, "owner", "email"),
        ({"title": "  "}, "title", "needs a title"),
    ],
)
def test_bad_input_to_add_names_the_field_and_writes_nothing(
    tracker: Tracker, change: dict[str, Any], field: str, words: str
) -> None:
    incident(tracker, "SEV1")
    args: dict[str, Any] = {
        "ident": "inc1", "title": "Add a disk alert", "owner": "bob@example.com",
        "due": dt.date(2026, 12, 24), **change,
    }  # fmt: skip
    with pytest.raises((Invalid, Unknown)) as caught:
        postmortems.add_action(tracker, actor=CM, today=TODAY, **args)
    assert caught.value.field == field and words in caught.value.message
    assert caught.value.status in (404, 422)
    assert _items(tracker.db) == []
    with store.session_scope(tracker.db, readonly=True) as s:
        assert s.exec(select(store.Dirty)).first() is None


def test_a_due_date_of_today_and_no_owner_are_accepted(tracker: Tracker) -> None:
    incident(tracker, "SEV1")
    out = postmortems.add_action(
        tracker, ident="inc1", title="Add a disk alert", owner="", due=TODAY, actor=CM,
        today=TODAY,
    )  # fmt: skip
    assert out["created"] and out["still_needs"] == ["an owner"]


@pytest.fixture
def cli(db: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """``itsm-sync`` on the test's database (the remote systems are never called here)."""
    for key in [k for k in os.environ if k.startswith("ITSM_SYNC_")]:
        monkeypatch.delenv(key)
    env = {
        "DATABASE_URL": str(db.url), "SERVICENOW__URL": "http://127.0.0.1:9",
        "SERVICENOW__USERNAME": "u", "SERVICENOW__PASSWORD": "p",
        "JIRA__URL": "http://127.0.0.1:9", "JIRA__EMAIL": "e@example.com",
        "JIRA__API_TOKEN": "t", "STATUSPAGE__URL": "http://127.0.0.1:9",
        "STATUSPAGE__API_KEY": "k", "STATUSPAGE__PAGE_ID": "p",
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(f"ITSM_SYNC_{key}", value)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def test_override_and_revoke_from_the_cli(tracker: Tracker, cli: CliRunner) -> None:
    incident(tracker, "SEV1")
    args = ["gate", "INC-inc1", "--override", "--reason", "vendor change", "--as", "Sam (CAB)"]
    done = cli.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "may close" in done.output
    revoked = cli.invoke(
        app, ["gate", "INC-inc1", "--revoke", "--reason", "backed out", "--as", "Dana"]
    )
    assert revoked.exit_code == 0, revoked.output
    assert "revoked" in revoked.output and "may NOT close" in revoked.output
    again = cli.invoke(app, ["gate", "INC-inc1", "--revoke", "--reason", "again", "--as", "D"])
    assert again.exit_code != 0 and "no override in force" in again.output
    bare = cli.invoke(app, ["gate", "INC-inc1", "--override", "--as", "Sam"])
    assert bare.exit_code == 2 and "--reason" in bare.output


def _add(tracker: Tracker, title: str, **more: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"owner": "bob@example.com", "due": dt.date(2026, 12, 24), **more}
    return postmortems.add_action(tracker, ident="inc1", title=title, actor=CM, today=TODAY, **args)


def test_a_withdrawn_item_no_longer_blocks_and_is_audited(tracker: Tracker) -> None:
    incident(tracker, "SEV1")
    postmortems.complete(tracker, ident="inc1", actor=CM)
    item = _add(tracker, "Add a disk alert")
    gate = postmortems.gate(tracker, ident="inc1")
    assert not gate["can_close"] and "'Add a disk alert'" in gate["missing"][0]
    with pytest.raises(Invalid) as caught:
        postmortems.withdraw_action(tracker, ident="inc1", item=item["key"], reason="", actor=CM)
    assert caught.value.field == "reason"
    out = postmortems.withdraw_action(
        tracker, ident="inc1", item=item["key"], reason="duplicate of the vendor's fix", actor=CM
    )
    assert out["status"] == "withdrawn" and out["status_by"] == "token:cab-sam"
    assert postmortems.gate(tracker, ident="inc1")["can_close"]
    with store.session_scope(tracker.db, readonly=True) as s:
        history = store.history(s, "inc1")
    assert any("withdrawn: duplicate of the vendor's fix" in h.reason for h in history)
    with pytest.raises(Conflict):
        postmortems.edit_action(tracker, ident="inc1", item=item["key"], title="x", actor=CM)


def test_edits_are_checked_like_adds_and_leave_nothing_half_written(tracker: Tracker) -> None:
    incident(tracker, "SEV1")
    item = _add(tracker, "Add a disk alert")
    with pytest.raises(Unknown) as caught:
        postmortems.edit_action(tracker, ident="inc1", item="itsm-ai-nope", title="x", actor=CM)
    assert caught.value.field == "item" and caught.value.status == 404
    for change, field in (
        ({"title": "New title", "due": dt.date(2026, 1, 1)}, "due"),
        ({"title": "New title", "owner": "mallory@example.com"}, "owner"),
    ):
        with pytest.raises(Invalid) as bad:
            postmortems.edit_action(
                tracker, ident="inc1", item=item["key"], actor=CM, today=TODAY, **change
            )
        assert bad.value.field == field
    [row] = _items(tracker.db)
    assert (row.title, row.owner, row.due_date) == (
        "Add a disk alert", "bob@example.com", dt.date(2026, 12, 24),
    )  # fmt: skip
    out = postmortems.edit_action(
        tracker, ident="INC-inc1", item=item["key"], title="Alert on disk usage",
        owner="carol@example.com", due=None, actor=CM, today=TODAY,
    )  # fmt: skip
    assert (out["title"], out["owner"], out["due"]) == (
        "Alert on disk usage",
        "carol@example.com",
        "",
    )
    with store.session_scope(tracker.db, readonly=True) as s:
        assert s.exec(select(store.Dirty)).first() is not None  # the change request follows


def test_withdraw_and_edit_from_the_cli(tracker: Tracker, cli: CliRunner) -> None:
    incident(tracker, "SEV1")
    item = _add(tracker, "Add a disk alert")
    edited = cli.invoke(
        app,
        [
            "postmortem",
            "edit-action",
            "INC-inc1",
            item["key"],
            "--due",
            "2099-01-31",
            "--as",
            "dana",
        ],
    )
    assert edited.exit_code == 0, edited.output
    assert "due 2099-01-31" in edited.output
    bare = cli.invoke(app, ["postmortem", "withdraw-action", "INC-inc1", item["key"]])
    assert bare.exit_code != 0 and "reason" in bare.output
    done = cli.invoke(
        app,
        [
            "postmortem",
            "withdraw-action",
            "INC-inc1",
            item["key"],
            "--reason",
            "not needed",
            "--as",
            "dana",
        ],
    )
    assert done.exit_code == 0, done.output
    [row] = _items(tracker.db)
    assert (row.status, row.status_by, row.due_date) == (
        "withdrawn",
        "cli:dana",
        dt.date(2099, 1, 31),
    )
    unknown = cli.invoke(
        app, ["postmortem", "withdraw-action", "INC-inc1", "nope", "--reason", "abc"]
    )
    assert unknown.exit_code != 0 and "no action item 'nope'" in unknown.output


def test_the_tracker_names_no_system() -> None:
    """Quirks live behind the connector protocol (capabilities, IssueLinks, Mentions) or in
    settings, never in a system name or connector class the tracker tests for."""
    folder = Path(__file__).parents[2] / "postmortem_tracker"
    banned = ("JiraConnector", "ServiceNowConnector", "Connector)", 'system == "', "system == '")
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(folder.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if any(b in line for b in banned)
    ]
    assert found == []


# -- the change manager's questions, from /api/kpis and /api/audit.csv alone -----------------


def _month_before(today: dt.date) -> tuple[dt.date, dt.date]:
    end = today.replace(day=1) - dt.timedelta(days=1)
    return end.replace(day=1), end


def _at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)


@pytest.fixture
def api(db: Engine, tmp_path: Path) -> Iterator[TestClient]:
    """The HTTP API on the test's database (no remote system is called)."""
    settings = Settings.model_validate(
        {
            "servicenow": {"url": "http://127.0.0.1:9", "username": "u", "password": "p"},
            "jira": {"url": "http://127.0.0.1:9", "email": "e@example.com", "api_token": "t"},
            "statuspage": {"url": "http://127.0.0.1:9", "api_key": "k", "page_id": "p"},
            "database_url": str(db.url),
            "api_tokens": [
                {"name": "cab", "token": "tok-cm", "role": "change-manager"},
                {"name": "view", "token": "tok-v", "role": "viewer"},
            ],
        }
    )
    runtime = Runtime(settings)
    with TestClient(create_app(runtime), headers={"Authorization": "Bearer tok-cm"}) as client:
        yield client


def _ended_incident(
    tracker: Tracker, ident: str, severity: str, ended: dt.date, *, items: list[str],
    lowered_to: str = "", override_by: str = "", state: str = "closed",
) -> None:  # fmt: skip
    """An incident that needed a postmortem and ended on ``ended``; ``items`` are the statuses
    of its action items (created a week before, due three days before it ended)."""
    incident(tracker, severity, ident=ident)
    if lowered_to:
        incident(tracker, lowered_to, ident=ident)
    postmortems.complete(tracker, ident=ident, actor=CM)
    for n, status in enumerate(items):
        out = postmortems.add_action(
            tracker, ident=ident, title=f"Fix {n}", owner="bob@example.com",
            due=ended - dt.timedelta(days=3), actor=CM, today=ended - dt.timedelta(days=7),
        )  # fmt: skip
        with store.session_scope(tracker.db) as s:
            row = s.exec(select(ActionItem).where(col(ActionItem.key) == out["key"])).one()
            row.created_at = _at(ended - dt.timedelta(days=7))
            row.status, row.status_at = status, _at(ended - dt.timedelta(days=4))
            s.add(row)
    if override_by:
        postmortems.override(
            tracker, ident=ident, reason="tracked by the vendor",
            actor=Actor.token(override_by, "change-manager"),
        )  # fmt: skip
    final = {"state": state, "closed_at": _at(ended).isoformat()}
    incident(tracker, lowered_to or severity, ident=ident, **final)
    with store.session_scope(tracker.db) as s:
        req = s.get(Requirement, ident)
        assert req is not None
        req.since = _at(ended - dt.timedelta(days=10))
        s.add(req)
        for pm in s.exec(select(Postmortem).where(col(Postmortem.incident_id) == ident)):
            pm.created_at = _at(ended - dt.timedelta(days=9))
            s.add(pm)
        for event in s.exec(select(GateEvent).where(col(GateEvent.incident_id) == ident)):
            event.at = _at(ended - dt.timedelta(days=1))
            s.add(event)


def test_which_sev1_sev2_incidents_last_month_closed_with_open_items_and_who_overrode(
    tracker: Tracker, api: TestClient
) -> None:
    first, last = _month_before(dt.datetime.now(dt.UTC).date())
    mid = first + dt.timedelta(days=12)
    _ended_incident(tracker, "a", "SEV1", mid, items=["open", "done"], override_by="sam")
    # Lowered to SEV4 before closing: still counted as the SEV2 it was.
    _ended_incident(tracker, "b", "SEV2", last, items=["open"], lowered_to="SEV4")
    _ended_incident(tracker, "c", "SEV1", mid, items=["done", "withdrawn"])  # nothing open
    _ended_incident(tracker, "d", "SEV1", first - dt.timedelta(days=2), items=["open"])  # before
    _ended_incident(tracker, "e", "SEV2", mid, items=["open"], state="canceled", override_by="jo")
    window = {"since": str(first), "until": str(last)}

    figures = api.get("/api/kpis", params=window).json()
    by = {f["severity"]: f for f in figures}
    assert by["SEV1"]["ended_with_open_items"] == 1 and by["SEV2"]["ended_with_open_items"] == 2
    assert "SEV4" not in by  # the downgrade hid nothing
    assert by["SEV1"]["overrides"] == 1 and by["SEV2"]["overrides"] == 1
    assert by["SEV1"]["items_created"] == 4  # a's two and c's two; d's was the month before
    assert by["SEV1"]["done"] == 2 and by["SEV1"]["on_time"] == 2 and by["SEV1"]["withdrawn"] == 1

    text = api.get("/api/audit.csv", params=window)
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text.text)))
    answer = sorted(
        {
            (r["incident"], r["highest_severity"], r["state"], r["overridden_by"])
            for r in rows
            if r["highest_severity"] in ("SEV1", "SEV2")
            and r["state"] in ("closed", "canceled")
            and first <= dt.date.fromisoformat(r["ended"]) <= last
            and r["item_status"] == "open"
        }
    )
    assert answer == [
        ("INC-a", "SEV1", "closed", "token:sam"),
        ("INC-b", "SEV2", "closed", ""),
        ("INC-e", "SEV2", "canceled", "token:jo"),
    ]
    by_team = api.get("/api/kpis", params={**window, "group_by": "team"}).json()
    assert [f["team"] for f in by_team] == ["-"] and by_team[0]["ended_with_open_items"] == 3


def test_kpis_and_audit_csv_refuse_bad_input_and_viewers(api: TestClient) -> None:
    r = api.get("/api/kpis", params={"group_by": "colour"})
    assert r.status_code == 422 and r.json()["field"] == "group_by"
    r = api.get("/api/audit.csv", params={"since": "2026-12-01", "until": "2026-11-01"})
    assert r.status_code == 422 and r.json()["field"] == "until"
    r = api.get("/api/kpis", params={"since": "last month"})
    assert r.status_code == 422 and r.json()["field"] == "since"
    viewer = {"Authorization": "Bearer tok-v"}
    assert api.get("/api/kpis", headers=viewer).status_code == 403
    assert api.get("/api/audit.csv", headers=viewer).status_code == 403


def test_a_latched_requirement_is_not_read_again_by_the_process_that_latched_it(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every reconcile notes the requirement; once latched (here or read back), the next notes
    at that severity or a milder one read nothing (each incident's second reconcile read it
    again: ~2 ms of the worker's CPU). A more severe one is still written."""
    incident(tracker, "SEV2")
    reads: list[str] = []
    scope = store.session_scope

    def counting(db: Any, **kw: Any) -> Any:
        reads.append("readonly" if kw.get("readonly") else "write")
        return scope(db, **kw)

    monkeypatch.setattr(store, "session_scope", counting)

    def at(severity: str) -> Incident:
        return Incident.model_validate(
            {"id": "inc1", "title": "x", "severity": severity, "state": "new"}
        )

    tracker.note(at("SEV2"))
    tracker.note(at("SEV3"))
    assert reads == []  # the old code read the requirement back on the first of these
    tracker.note(at("SEV1"))
    # One transaction, the write, which reads the row itself (the old code read it first in a
    # transaction of its own: one more for every new incident of a backfill).
    assert reads == ["write"]
    monkeypatch.undo()
    with store.session_scope(tracker.db, readonly=True) as s:
        row = s.get(Requirement, "inc1")
        assert row is not None and row.severity == "SEV1"


def test_the_incident_of_a_record_is_found_by_index_whatever_the_record_is(
    tracker: Tracker,
) -> None:
    """Every unlinked record the engine meets (each one of a backfill) is looked up as a change
    request, a review or problem, and an action item's source: by index (0013), not by reading
    the postmortem and action item tables whole each time."""
    with store.session_scope(tracker.db) as s:
        s.add(Postmortem(incident_id="inc-r", jira_id="10500", problem_id="prb-sys"))
        s.add(ActionItem(key="k1", incident_id="inc-cr", title="Fix", change_request_id="cr-sys"))
        s.add(ActionItem(key="k2", incident_id="inc-src", title="Fix", source_id="10600"))
    assert tracker.owner_of("servicenow", "change_request", "cr-sys") == "inc-cr"
    assert tracker.owner_of("jira", "issue", "10500") == "inc-r"
    assert tracker.owner_of("servicenow", "problem", "prb-sys") == "inc-r"
    assert tracker.owner_of("jira", "issue", "10600") == "inc-src"
    assert tracker.owner_of("servicenow", "incident", "unrelated") is None
    with tracker.db.connect() as c:
        for table, column in (
            ("action_item", "change_request_id"), ("action_item", "source_id"),
            ("postmortem", "jira_id"), ("postmortem", "problem_id"),
        ):  # fmt: skip
            plan = c.exec_driver_sql(
                f"EXPLAIN QUERY PLAN SELECT incident_id FROM {table} WHERE {column} = 'x'"
            ).all()
            assert any(f"ix_{table}_{column}" in str(row) for row in plan), plan
