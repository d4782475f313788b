"""A store full of plausible history, for the console's browser tests, its benchmark (10,000
incidents) and its screenshots: incidents linked on the three systems, audit trails with
conflicts, comments, parks and replays, postmortems with action items and change requests,
gate overrides, watermarks and a queue.

Rows go in with bulk inserts (the ORM one by one would take a minute for 10,000 incidents).
Everything is derived from the index ``n`` of each incident, so a run is reproducible.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from mapping.model import Incident
from postmortem_tracker.models import ActionItem, GateEvent, Postmortem, Requirement
from sync import store

TEAMS = ("payments", "platform", "identity", "search", "mobile")
SERVICES = ("checkout", "login", "search", "api", "mobile-app")
TITLES = (
    "Checkout fails for {pct}% of customers",
    "Login slow in {region}",
    "Search results delayed in {region}",
    "API returns 502 for {pct}% of calls",
    "Mobile app crashes on start ({region})",
    "Database failover did not complete ({region})",
    "Payment provider timeouts in {region}",
)
REGIONS = ("eu-west", "us-east", "ap-south", "us-west")
OPEN_STATES = ("new", "investigating", "identified", "monitoring")


@dataclass
class Urls:
    """Where the real records live (the simulators' or the vendors' base URLs)."""

    servicenow: str = "https://example.service-now.com"
    jira: str = "https://example.atlassian.net"
    statuspage: str = "https://status.example.com"


@dataclass
class Sample:
    """What :func:`populate` made: ids to find things by in tests."""

    incident_ids: list[str] = field(default_factory=list)
    numbers: list[str] = field(default_factory=list)  # INC numbers, by index
    open_numbers: list[str] = field(default_factory=list)
    gated: list[str] = field(default_factory=list)  # INC numbers whose gate is shut
    parked: list[int] = field(default_factory=list)


def _severity(n: int) -> str:
    """About 3 % SEV1, 16 % SEV2, the rest SEV3 and SEV4 (most incidents are small)."""
    k = n % 32
    return "SEV1" if k == 0 else "SEV2" if k <= 5 else "SEV3" if k <= 18 else "SEV4"


def _state(n: int, count: int, open_every: int) -> str:
    if n >= count - 12 or n % open_every == 0:  # the newest, and a few older, are in flight
        return OPEN_STATES[n % 4]
    return "closed" if n % 5 else "resolved"


def populate(
    db: Engine,
    *,
    count: int = 40,
    urls: Urls | None = None,
    now: dt.datetime | None = None,
    open_every: int = 97,
    spacing: dt.timedelta = dt.timedelta(minutes=90),
) -> Sample:
    """Add ``count`` incidents (one every ``spacing`` up to ``now``) with everything around
    them. The store must be migrated; existing rows are left alone."""
    urls = urls or Urls()
    now = now or store.utcnow()
    start = now - spacing * count
    out = Sample()
    incidents: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    audits: list[dict[str, Any]] = []
    parked: list[dict[str, Any]] = []
    postmortems: list[dict[str, Any]] = []
    requirements: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    gates: list[dict[str, Any]] = []
    for n in range(count):
        iid = uuid.UUID(int=n + 1).hex
        at = start + spacing * n
        severity, state = _severity(n), _state(n, count, open_every)
        team, service = TEAMS[n % len(TEAMS)], SERVICES[n % len(SERVICES)]
        title = TITLES[n % len(TITLES)].format(pct=5 + n % 60, region=REGIONS[n % len(REGIONS)])
        public = severity in ("SEV1", "SEV2")
        incident = Incident.model_validate(
            dict(
                id=iid,
                title=title,
                description=f"{title}. Reported by the service desk.",
                severity=severity,
                state=state,
                assignee="alice@example.com",
                team=team,
                services=(service,),
                public=public,
                public_message="We are investigating reports of errors." if public else "",
                started_at=at,
                resolved_at=at + dt.timedelta(hours=3) if state in ("resolved", "closed") else None,
            )
        )
        data = incident.model_dump(mode="json")
        data.pop("id")
        updated = at + dt.timedelta(minutes=30 + n % 50)
        incidents.append(
            {"id": iid, "data": data, **store.incident_columns(data), "created_at": at,
             "updated_at": updated}
        )  # fmt: skip
        number, key, sys_id = f"INC{10001 + n:07d}", f"OPS-{n + 1}", uuid.UUID(int=10**6 + n).hex
        out.incident_ids.append(iid)
        out.numbers.append(number)
        if state in OPEN_STATES:
            out.open_numbers.append(number)
        sn_url = f"{urls.servicenow}/nav_to.do?uri=incident.do?sys_id={sys_id}"
        refs = [
            ("servicenow", "incident", sys_id, number, sn_url),
            ("jira", "issue", str(20000 + n), key, f"{urls.jira}/browse/{key}"),
        ]
        if public:
            page_id = f"p{n:011d}"
            refs.append(
                ("statuspage", "incident", page_id, "", f"{urls.statuspage}/incidents/{page_id}")
            )
        for system, object_type, remote_id, remote_key, url in refs:
            links.append(
                {
                    "incident_id": iid,
                    "system": system,
                    "instance": "default",
                    "object_type": object_type,
                    "remote_id": remote_id,
                    "remote_key": remote_key,
                    "url": url,
                    "created_at": at,
                }
            )
        audits += _story(iid, n, at, state, severity, sys_id, key)
        if n % 13 == 7:
            parked.append(
                {
                    "incident_id": iid,
                    "target": "jira:default",
                    "status": 400,
                    "attempts": 1,
                    "error": "Jira refused the issue: Field 'components' cannot be set",
                    "remote_message": '{"errors": {"components": "Component \'checkout\' is not '
                    'valid for project OPS"}}',
                    "parked_at": at + dt.timedelta(minutes=40),
                    "resolved_at": None if n > count - 60 else at + dt.timedelta(hours=1),
                }
            )
        if severity in ("SEV1", "SEV2") and state in ("resolved", "closed", "monitoring"):
            requirements.append(
                {
                    "incident_id": iid,
                    "since": at,
                    "severity": severity,
                    "reason": f"severity in (SEV1, SEV2): {severity}",
                }
            )
            done = n % 3 != 0
            postmortems.append(
                {
                    "incident_id": iid,
                    "jira_key": f"OPS-{count + n + 1}",
                    "jira_id": "",
                    "created_at": at + dt.timedelta(hours=4),
                    "completed_at": at + dt.timedelta(days=2) if done else None,
                    "completed_by": "bob" if done else "",
                }
            )
            for k, (what, owner) in enumerate(
                (
                    ("Alert on disk usage", "bob@example.com"),
                    ("Automate the failover", "carol@example.com" if n % 4 else ""),
                )
            ):
                has_cr = bool(owner) and (n + k) % 5 != 0
                cr_state = ("-1", "3", "-2", "3", "0")[(n + k) % 5] if has_cr else ""
                items.append(
                    {
                        "key": f"pm-{n}-{k}",
                        "idem_key": f"jira:OPS-{count * 2 + 2 * n + k}",  # as the tracker keys it
                        "status": "done" if cr_state == "3" else "open",
                        "status_at": at + dt.timedelta(days=8 + (n + k) % 12)
                        if cr_state == "3"
                        else None,
                        "incident_id": iid,
                        "title": what,
                        "owner": owner,
                        "due_date": (at + dt.timedelta(days=10 + 7 * k)).date() if owner else None,
                        "source": f"jira:OPS-{count * 2 + 2 * n + k}",
                        "change_request_number": f"CHG{30001 + 2 * n + k:07d}" if has_cr else "",
                        "change_request_id": uuid.UUID(int=2 * 10**6 + 2 * n + k).hex
                        if has_cr
                        else "",
                        "change_request_state": cr_state,
                        "change_request_close_code": "successful" if cr_state == "3" else "",
                        "blocked": ""
                        if has_cr
                        else (
                            "no owner: assign the Jira task"
                            if not owner
                            else "waiting for approval"
                        ),
                        "created_at": at + dt.timedelta(days=1),
                        "updated_at": at + dt.timedelta(days=2 + (n + 3 * k) % 9),
                    }
                )
                if has_cr:
                    audits.append(
                        {
                            "incident_id": iid,
                            "at": at + dt.timedelta(days=2 + (n + 3 * k) % 9),
                            "system": "servicenow",
                            "instance": "default",
                            "remote_id": uuid.UUID(int=2 * 10**6 + 2 * n + k).hex,
                            "action": "create",
                            "field": "change_request",
                            "before": None,
                            "after": {
                                "number": f"CHG{30001 + 2 * n + k:07d}",
                                "owner": owner,
                                "item": f"pm-{n}-{k}",
                            },
                            "actor": "itsm-sync",
                            "reason": f"action item {what!r} from jira:OPS-{count * 2 + 2 * n + k}",
                        }
                    )
            if not done or n % 4 == 0 or n % 5 in (0, 4):
                out.gated.append(number)
            if n % 11 == 2:
                gates.append(
                    {
                        "incident_id": iid,
                        "kind": "override",
                        "actor": "token:dana",
                        "reason": "customer-facing fix shipped; the review meets next week",
                        "at": at + dt.timedelta(days=3),
                        "severity": severity,
                    }
                )
    watermarks = [
        {
            "system": system,
            "instance": "default",
            "object_type": object_type,
            "value": now - dt.timedelta(seconds=lag),
            "updated_at": now - dt.timedelta(seconds=lag),
        }
        for system, object_type, lag in (
            ("servicenow", "incident", 12),
            ("jira", "issue", 8),
            ("statuspage", "incident", 41),
        )
    ]
    with store.session_scope(db) as s:
        conn = s.connection()
        conn.execute(insert(store.IncidentRow), incidents)
        conn.execute(insert(store.Link), links)
        conn.execute(insert(store.AuditEntry), audits)
        if parked:
            conn.execute(insert(store.Parked), parked)
        for table, rows in (
            (Requirement, requirements),
            (Postmortem, postmortems),
            (ActionItem, items),
            (GateEvent, gates),
        ):
            if rows:
                conn.execute(insert(table), rows)
        conn.execute(insert(store.Watermark), watermarks)
        for iid in out.incident_ids[-3:]:
            conn.execute(
                insert(store.Dirty),
                [
                    {
                        "key": f"incident:{iid}",
                        "due_at": now,
                        "first_marked_at": now - dt.timedelta(seconds=7),
                        "generation": 1,
                        "attempts": 0,
                        "last_error": "",
                        "reason": "webhook",
                    }
                ],
            )
    with store.session_scope(db, readonly=True) as s:
        out.parked = [p.id or 0 for p in store.open_parked(s)]
    return out


def _story(
    iid: str, n: int, at: dt.datetime, state: str, severity: str, sys_id: str, key: str
) -> list[dict[str, Any]]:
    """The audit trail of one incident: created in ServiceNow, mirrored to Jira, a comment each
    way, a conflict decided by policy, a transition, and for some a park and its replay."""

    def row(minutes: int, action: str, **kw: Any) -> dict[str, Any]:
        base = {
            "incident_id": iid,
            "at": at + dt.timedelta(minutes=minutes),
            "system": "",
            "instance": "default",
            "remote_id": "",
            "action": action,
            "field": None,
            "before": None,
            "after": None,
            "actor": "itsm-sync",
            "reason": "",
        }
        return {**base, **kw}

    rows = [
        row(0, "create", system="jira", remote_id=key, reason="mirrored from servicenow"),
        row(
            2,
            "update",
            system="jira",
            remote_id=key,
            field="severity",
            before=None,
            after=severity,
            reason="servicenow owns severity",
        ),
        row(
            6,
            "comment",
            system="servicenow",
            remote_id=sys_id,
            reason="comment from jira copied to servicenow (work note)",
        ),
        row(
            9,
            "comment",
            system="jira",
            remote_id=key,
            reason="comment from servicenow copied to jira",
        ),
        row(
            14,
            "conflict",
            system="jira",
            field="assignee",
            before={"servicenow": "alice@example.com", "jira": "bob@example.com"},
            after="bob@example.com",
            reason="both changed assignee; jira wins (latest: jira changed it 41 s later)",
        ),
        row(
            15,
            "update",
            system="servicenow",
            remote_id=sys_id,
            field="assignee",
            before="alice@example.com",
            after="bob@example.com",
            reason="jira's change wins",
        ),
    ]
    if n % 13 == 7:
        rows += [
            row(
                40,
                "park",
                system="jira",
                remote_id=key,
                reason="Jira refused the issue: Field 'components' cannot be set",
            ),
            row(
                60,
                "replay",
                system="jira",
                actor="token:ada",
                reason="replayed from the newest state: Jira refused the issue",
            ),
        ]
    if state not in OPEN_STATES:
        rows.append(
            row(
                180,
                "transition",
                system="jira",
                remote_id=key,
                field="state",
                before="investigating",
                after=state,
                reason=f"{state} in servicenow",
            )
        )
    return rows
