"""`itsm-sync demo`: the simulators, the service on SQLite, and a scripted P1 told step by step.

Everything is real: the simulators serve the three APIs over HTTP, the service receives their
webhooks, and every step below is a person's edit on one system followed by what the others
show once the service has synced it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from rich.console import Console

from service.harness import Service, TimedOut, settings_for
from service.harness import wait_for as harness_wait_for
from simulators.runner import SimulatorCluster

T = TypeVar("T")
ALICE = "a11ce000000000000000000000000001"  # alice@example.com in the ServiceNow fixtures
CHECKOUT = "5e000000000000000000000000000001"  # the Checkout business service


class DemoFailed(RuntimeError):
    """A step did not converge: the message says which."""


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    try:
        # Slowly: the demo's own reads share Statuspage's 60 requests a minute with the engine.
        return harness_wait_for(probe, what, timeout, interval=0.25)
    except TimedOut as exc:
        raise DemoFailed(str(exc)) from exc


class Demo:
    def __init__(self, cluster: SimulatorCluster, service: Service, token: str, console: Console):
        self.cluster = cluster
        self.service = service
        self.console = console
        creds = cluster.config.credentials
        self.sn = httpx.Client(
            base_url=cluster.urls["servicenow"],
            auth=(creds.servicenow_username, creds.servicenow_password),
            timeout=10,
        )
        self.jira = httpx.Client(
            base_url=cluster.urls["jira"], auth=(creds.jira_email, creds.jira_api_token), timeout=10
        )
        self.sp = httpx.Client(
            base_url=f"{cluster.urls['statuspage']}/v1/pages/{creds.statuspage_page_id}",
            headers={"Authorization": f"OAuth {creds.statuspage_api_key}"},
            timeout=10,
        )
        self.api = httpx.Client(
            base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def step(self, title: str) -> None:
        self.console.rule(f"[bold]{title}")

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    # -- reading the systems ------------------------------------------------------------------

    def sn_incident(self, sys_id: str) -> dict[str, Any]:
        return dict(self.sn.get(f"/api/now/table/incident/{sys_id}").json()["result"])

    def jira_issue(self, key: str) -> dict[str, Any]:
        return dict(self.jira.get(f"/rest/api/2/issue/{key}").json())

    def jira_issue_titled(self, title: str) -> dict[str, Any] | None:
        found = self.jira.get(
            "/rest/api/2/search/jql",
            params={"jql": f'project = OPS AND summary ~ "{title}"', "fields": "*all"},
        ).json()["issues"]
        return found[0] if found else None

    def page_incident(self, name: str) -> dict[str, Any] | None:
        listed = self.sp.get("/incidents")
        if listed.status_code != 200:  # e.g. 420: over the page's rate limit; look again later
            return None
        return next((i for i in listed.json() if i["name"] == name), None)

    def transition(self, key: str, status: str, **fields: Any) -> None:
        options = self.jira.get(f"/rest/api/2/issue/{key}/transitions").json()["transitions"]
        move = next(t for t in options if t["to"]["name"] == status)
        self.jira.post(
            f"/rest/api/2/issue/{key}/transitions",
            json={"transition": {"id": move["id"]}, "fields": fields},
        ).raise_for_status()

    # -- the story ------------------------------------------------------------------------

    def play(self) -> dict[str, Any]:
        sn_url, jira_url = self.cluster.urls["servicenow"], self.cluster.urls["jira"]
        self.step("1. The service desk opens a P1 in ServiceNow")
        incident = self.sn.post(
            "/api/now/table/incident",
            json={
                "short_description": "Checkout fails for all customers",
                "description": "Customers get an error page when they pay.",
                "impact": "1",
                "urgency": "1",
                "assigned_to": ALICE,
                "business_service": CHECKOUT,
            },
        ).json()["result"]
        number, sys_id = incident["number"], incident["sys_id"]
        self.say(
            f"{number} priority {incident['priority']}: "
            f"{sn_url}/nav_to.do?uri=incident.do?sys_id={sys_id}"
        )
        issue = wait_for(lambda: self.jira_issue_titled("Checkout fails"), "the Jira issue")
        key = issue["key"]
        fields = issue["fields"]
        self.say(
            f"-> Jira {key} ({fields['priority']['name']}, {fields['status']['name']}, assigned to "
            f"{fields['assignee']['emailAddress']}, component {fields['components'][0]['name']}): "
            f"{jira_url}/browse/{key}"
        )

        self.step("2. Comms approves a public message: the status page follows")
        self.api.post(
            f"/api/incidents/{number}/public",
            json={"message": "Some customers cannot complete checkout. We are investigating."},
        ).raise_for_status()
        page = wait_for(
            lambda: self.page_incident("Checkout: service disruption"), "the page incident"
        )
        components = {c["name"]: c["status"] for c in page["components"]}
        self.say(
            f"-> status page: {page['name']!r} {page['status']}, "
            f"components {components}: {page['shortlink']}"
        )

        self.step("3. The engineer takes it in Jira: ServiceNow follows")
        self.transition(key, "In Progress")
        wait_for(lambda: self.sn_incident(sys_id)["state"] == "2", "ServiceNow In Progress")
        self.say(f"-> {number} state 2 (In Progress)")

        self.step("4. A work note stays internal")
        self.sn.patch(
            f"/api/now/table/incident/{sys_id}",
            json={"work_notes": "db01 ran out of disk; failing over"},
        )
        note = wait_for(
            lambda: next(
                (c for c in self.jira.get(f"/rest/api/2/issue/{key}/comment").json()["comments"]
                 if "db01" in c["body"]), None,
            ),
            "the work note in Jira",
        )  # fmt: skip
        page_text = str(
            wait_for(
                lambda: (r := self.sp.get("/incidents")).status_code == 200 and r.text,
                "the status page's incidents",
            )
        )
        self.say(
            f"-> Jira {key}: internal comment (visible to role "
            f"{note['visibility']['value']}); on the status page: "
            f"{'LEAKED' if 'db01' in page_text else 'nothing'}"
        )

        self.step("5. A customer-visible update")
        self.sn.patch(
            f"/api/now/table/incident/{sys_id}", json={"comments": "A fix is being deployed."}
        )
        self.api.post(
            f"/api/incidents/{number}/public",
            json={"message": "A fix is being deployed; checkout is recovering."},
        ).raise_for_status()
        wait_for(
            lambda: any(
                u["body"].startswith("A fix is being deployed")
                for u in (self.page_incident("Checkout: service disruption") or {}).get(
                    "incident_updates", []
                )
            ),
            "the public update on the page",
        )
        self.say(
            "-> the customer comment is a public comment in Jira; the page shows the new message"
        )

        self.step("6. Three duplicate tickets attach to the parent")
        for n in range(3):
            self.sn.post(
                "/api/now/table/incident",
                json={"short_description": f"Customer {n + 1} cannot pay",
                      "impact": "1", "urgency": "1",
                      "parent_incident": sys_id},
            )  # fmt: skip
        wait_for(
            lambda: sum(
                "Duplicate ticket" in c["body"]
                for c in self.jira.get(f"/rest/api/2/issue/{key}/comment").json()["comments"]
            ) == 3,
            "three duplicates on the Jira issue",
        )  # fmt: skip
        for child in ("Customer 1 cannot pay", "Customer 2 cannot pay", "Customer 3 cannot pay"):
            if self.jira_issue_titled(child):
                raise DemoFailed(f"the duplicate {child!r} got a Jira issue of its own")
        self.say(f"-> {key} lists 3 duplicate tickets; none of them got a Jira issue of its own")

        self.step(
            "7. Resolved in Jira: ServiceNow resolved, the page resolved, components operational"
        )
        self.transition(key, "Resolved", resolution={"name": "Done"})
        record = wait_for(
            lambda: (r := self.sn_incident(sys_id))["state"] == "6" and r, "ServiceNow Resolved"
        )
        page = wait_for(
            lambda: (
                (p := self.page_incident("Checkout: service disruption"))
                and p["status"] == "resolved"
                and p
            ),
            "the page resolved",
        )
        components = {c["name"]: c["status"] for c in page["components"]}
        self.say(
            f"-> {number} state 6, close code {record['close_code']!r}; "
            f"page {page['status']}, {components}"
        )
        self.postmortem(number, sys_id, key)
        return {"number": number, "sys_id": sys_id, "key": key}

    # -- the postmortem ---------------------------------------------------------------------

    def account(self, email: str) -> str:
        return str(
            self.jira.get("/rest/api/2/user/search", params={"query": email}).json()[0]["accountId"]
        )

    def task(self, summary: str, review: str, **fields: Any) -> str:
        created = self.jira.post(
            "/rest/api/2/issue",
            json={"fields": {"project": {"key": "OPS"}, "issuetype": {"name": "Task"},
                             "summary": summary, **fields}},
        ).json()  # fmt: skip
        self.jira.post(
            "/rest/api/2/issueLink",
            json={"type": {"name": "Relates"}, "inwardIssue": {"key": review},
                  "outwardIssue": {"key": created["key"]}},
        ).raise_for_status()  # fmt: skip
        return str(created["key"])

    def changes(self) -> list[dict[str, Any]]:
        params = {"sysparm_exclude_reference_link": "true"}
        return list(self.sn.get("/api/now/table/change_request", params=params).json()["result"])

    def postmortem(self, number: str, sys_id: str, key: str) -> None:
        jira_url = self.cluster.urls["jira"]
        self.step("8. A SEV1 needs a postmortem: a review issue opens in Jira")
        review = wait_for(
            lambda: self.jira_issue_titled("Post-incident review"), "the review issue"
        )
        self.say(
            f"-> {review['key']} {review['fields']['summary']!r}: {jira_url}/browse/{review['key']}"
        )

        self.step("9. The postmortem decides two fixes (Jira tasks linked to the review)")
        alert = self.task(
            "Alert on db01 disk usage", review["key"],
            assignee={"accountId": self.account("bob@example.com")}, duedate="2026-12-01",
        )  # fmt: skip
        failover = self.task("Automate the database failover", review["key"])
        wait_for(lambda: len(self.changes()) == 1, "the first change request")
        self.say(f"-> {alert} (bob, due 2026-12-01) and {failover} (no owner, no date yet)")

        self.step("10. The service desk tries to close the incident: refused")
        self.sn.patch(f"/api/now/table/incident/{sys_id}", json={"state": "7"}).raise_for_status()
        note = wait_for(
            lambda: next(
                (n["value"] for n in self.sn.get(
                    "/api/now/table/sys_journal_field",
                    params={"sysparm_query": f"element_id={sys_id}^element=work_notes"},
                ).json()["result"] if "cannot be closed yet" in n["value"]), None,
            ),
            "the gate's work note",
        )  # fmt: skip
        wait_for(lambda: self.sn_incident(sys_id)["state"] == "6", "Resolved again")
        self.say(f"-> {number} is back to Resolved, with this work note:")
        self.say("   " + note.split("] ", 1)[-1].replace("\n", "\n   "))

        self.step("11. The fixes get owners and dates; the review is done: change requests")
        self.jira.put(
            f"/rest/api/2/issue/{failover}",
            json={"fields": {"assignee": {"accountId": self.account("carol@example.com")},
                             "duedate": "2026-12-15"}},
        ).raise_for_status()  # fmt: skip
        self.transition(review["key"], "In Progress")
        self.transition(review["key"], "Resolved", resolution={"name": "Done"})
        wait_for(lambda: len(self.changes()) == 2, "two change requests")
        changes = self.changes()
        for change in sorted(changes, key=lambda c: c["number"]):
            owner = self.sn.get(f"/api/now/table/sys_user/{change['assigned_to']}").json()[
                "result"
            ]["email"]
            self.say(
                f"-> {change['number']} {change['short_description']!r}: owner {owner}, "
                f"due {change['due_date'][:10]}, parent {number}"
            )

        self.step("12. The close goes through now")
        wait_for(
            lambda: self.api.get(f"/api/incidents/{number}/gate").json()["can_close"], "the gate"
        )
        self.sn.patch(f"/api/now/table/incident/{sys_id}", json={"state": "7"}).raise_for_status()
        wait_for(
            lambda: self.jira_issue(key)["fields"]["status"]["name"] == "Closed", "Jira closed"
        )
        self.say(f"-> {number} Closed; {key} Closed")

        self.step("13. What the change manager audits (itsm-sync audit)")
        for row in self.api.get("/api/audit").json():
            self.say(
                f"{row['incident']} {row['severity']} | {row['action_item']} | {row['owner']} | "
                f"due {row['due_date']} | {row['change_request']} ({row['cr_state']}) | "
                f"gate: {row['gate'][:60]}"
            )


def run_demo(
    cluster: SimulatorCluster, console: Console, *, database: Path, hold: bool
) -> dict[str, Any]:
    """Start the service on ``cluster``, play the story, then (with ``hold``) keep running."""
    if database.exists():
        database.unlink()  # every demo starts from an empty store
    # One token per kind of console user; the story itself calls the API as the admin.
    tokens = {role: secrets.token_urlsafe(16) for role in ("viewer", "change-manager", "admin")}
    token = tokens["admin"]
    people = {"viewer": "val", "change-manager": "dana", "admin": "ada"}
    # Where the admin's mapping edits from the console go (emptied each run, like the store).
    mappings = database.with_name(f"{database.stem}-mappings")
    mappings.mkdir(exist_ok=True)
    for old in mappings.glob("*.y*ml"):
        old.unlink()
    settings = settings_for(
        cluster,
        f"sqlite:///{database}",
        sync={"poll_interval_seconds": 10, "workers": 2},
        api_tokens=[
            {"name": people[role], "token": secret, "role": role} for role, secret in tokens.items()
        ],
        mappings_dir=str(mappings),
    )
    with Service(settings) as service:
        service.register_webhooks(cluster)
        console.print(f"itsm-sync is running at {service.url} (SQLite {database})", highlight=False)
        _console_help(console, service.url, tokens)
        demo = Demo(cluster, service, token, console)
        result = demo.play()
        console.rule("[bold]Your turn")
        console.print(
            "Edit anything on the simulators and watch it sync. "
            f"Service API: {service.url}/api/docs "
            f"(Authorization: Bearer {token}), metrics {service.url}/metrics.\n"
            f"The audit trail: itsm-sync history {result['number']} "
            f"(ITSM_SYNC_DATABASE_URL=sqlite:///{database})",
            highlight=False,
        )
        _console_help(console, service.url, tokens)
        if hold:
            console.print("Running until Ctrl-C.")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return result


def _console_help(console: Console, url: str, tokens: dict[str, str]) -> None:
    """Where the web console is, and a token to sign in with for each kind of user."""
    console.print(f"Web console: {url}/ (sign in with one of these tokens)", highlight=False)
    for role, secret in tokens.items():
        console.print(f"  {role + ' token:':22} {secret}", highlight=False)
