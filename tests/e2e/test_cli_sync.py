"""`itsm-sync sync --once | backfill | status | parked | history` as an admin runs them: real
processes against the simulators, on a SQLite file of their own."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.harness import WEBHOOK_SECRETS
from simulators.runner import SimulatorCluster
from tests.systems import Systems, people_only

CLI = [sys.executable, "-m", "service"]
JIRA_CREATE = "POST /rest/api/{version}/issue"


_people_only = people_only


class Admin(Systems):
    """The CLI with settings for the simulators, plus clients for what people see."""

    def __init__(self, sims: SimulatorCluster, folder: Path) -> None:
        self.sims = sims
        self.folder = folder
        creds = sims.config.credentials
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_SYNC_")}
        self.env.update(
            {
                "ITSM_SYNC_SERVICENOW__URL": sims.urls["servicenow"],
                "ITSM_SYNC_SERVICENOW__USERNAME": creds.servicenow_username,
                "ITSM_SYNC_SERVICENOW__PASSWORD": creds.servicenow_password,
                "ITSM_SYNC_SERVICENOW__WEBHOOK_SECRET": WEBHOOK_SECRETS["servicenow"],
                "ITSM_SYNC_JIRA__URL": sims.urls["jira"],
                "ITSM_SYNC_JIRA__EMAIL": creds.jira_email,
                "ITSM_SYNC_JIRA__API_TOKEN": creds.jira_api_token,
                "ITSM_SYNC_JIRA__WEBHOOK_SECRET": WEBHOOK_SECRETS["jira"],
                "ITSM_SYNC_STATUSPAGE__URL": sims.urls["statuspage"] + "/v1",
                "ITSM_SYNC_STATUSPAGE__API_KEY": creds.statuspage_api_key,
                "ITSM_SYNC_STATUSPAGE__PAGE_ID": creds.statuspage_page_id,
                "ITSM_SYNC_STATUSPAGE__WEBHOOK_SECRET": WEBHOOK_SECRETS["statuspage"],
                "ITSM_SYNC_STATUSPAGE__REQUESTS_PER_SECOND": "50",
                "ITSM_SYNC_DATABASE_URL": f"sqlite:///{folder / 'itsm-sync.db'}",
                "ITSM_SYNC_SYNC__WORKERS": "4",
                "COLUMNS": "250",  # rich tables on whole lines, so they can be searched
            }
        )
        super().__init__(sims)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            env=self.env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*CLI, *args],
            env=self.env,
            cwd=self.folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def issues(self) -> list[dict[str, Any]]:
        """Every incident issue in OPS (not the postmortem tracker's reviews)."""
        return self.jira_issues(
            "project = OPS AND issuetype = Incident ORDER BY created ASC", "summary,labels,status"
        )

    def fault(self, system: str, **rule: Any) -> None:
        httpx.post(
            f"{self.sims.urls[system]}/_sim/faults", json={"rules": [rule]}
        ).raise_for_status()

    def clear_faults(self) -> None:
        for url in self.sims.urls.values():
            httpx.delete(f"{url}/_sim/faults").raise_for_status()


@pytest.fixture
def admin(sims: SimulatorCluster, tmp_path: Path) -> Iterator[Admin]:
    with httpx.Client(timeout=10) as client:
        for name, url in sims.urls.items():  # start from empty systems: only the people
            client.post(f"{url}/_sim/reset").raise_for_status()
            client.post(f"{url}/_sim/seed", json=_people_only(name)).raise_for_status()
        client.post(
            f"{sims.urls['statuspage']}/_sim/ratelimit", json={"requests_per_minute": 6000}
        ).raise_for_status()
    a = Admin(sims, tmp_path)
    try:
        yield a
    finally:
        a.clear_faults()
        httpx.delete(f"{sims.urls['statuspage']}/_sim/ratelimit")
        a.close()


def _ok(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == code, f"exit {result.returncode}, wanted {code}:\n{out}"
    assert "Traceback" not in out, out
    return result.stdout


def _rows(table: str) -> dict[str, str]:
    """The two-column body rows of a rich table, as {first: second}."""
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def _one_issue_per_title(admin: Admin, titles: list[str]) -> list[dict[str, Any]]:
    issues = admin.issues()
    summaries = collections.Counter(i["fields"]["summary"] for i in issues)
    labels = collections.Counter(
        label for i in issues for label in i["fields"]["labels"] if label.startswith("itsm-")
    )
    assert sorted(summaries) == sorted(titles), "missing or unexpected issues"
    assert [s for s, n in summaries.items() if n > 1] == [], "duplicate issues"
    assert [x for x, n in labels.items() if n > 1] == [], "two issues carry one correlation key"
    assert len(labels) == len(titles)
    return issues


def test_sync_once_links_a_p1_and_a_second_run_writes_nothing(admin: Admin) -> None:
    inc = admin.open_p1("Checkout fails for all customers")
    out = _ok(admin.run("sync", "--once"))
    assert "servicenow/default incident: read 1, 1 new" in out
    assert "parked 0, still queued 0" in out
    [issue] = _one_issue_per_title(admin, ["Checkout fails for all customers"])
    assert issue["fields"]["status"]["name"] == "Open"

    admin.reset_stats()
    out = _ok(admin.run("sync", "--once"))
    assert "wrote 0" in out and "parked 0" in out
    assert admin.writes() == {"servicenow": 0, "jira": 0, "statuspage": 0}
    assert len(admin.issues()) == 1
    assert admin.sn.get(f"/api/now/table/incident/{inc['sys_id']}").json()["result"]["state"] == "1"


def test_a_fatal_write_is_parked_listed_and_replayed(admin: Admin) -> None:
    admin.fault("jira", route=JIRA_CREATE, error_rate=1.0, error_status=400)
    inc = admin.open_p1("Payments declined")
    out = _ok(admin.run("sync", "--once"), 3)
    assert "parked 1" in out
    [line] = [x for x in out.splitlines() if x.strip().startswith("parked #")]
    assert "jira:default" in line and "400" in line, line
    assert admin.issues() == []

    listed = _ok(admin.run("parked", "list"))
    assert "1 parked" in listed
    assert inc["number"] in listed and "jira:default" in listed
    assert "Simulated server error" in listed  # what Jira said, for the admin

    admin.clear_faults()
    assert "replaying 1" in _ok(admin.run("parked", "replay", "--all"))
    out = _ok(admin.run("sync", "--once"))
    assert "parked 0, still queued 0" in out
    _one_issue_per_title(admin, ["Payments declined"])
    assert "nothing is parked" in _ok(admin.run("parked", "list"))
    # Nothing left to replay: said so, not a silent success.
    again = admin.run("parked", "replay", "--all")
    assert again.returncode == 1 and "no open parked item" in again.stderr


def test_history_shows_what_was_done_to_an_incident(admin: Admin) -> None:
    inc = admin.open_p1("Login page times out")
    _ok(admin.run("sync", "--once"))
    [issue] = admin.issues()
    table = _ok(admin.run("history", inc["number"]))
    assert "Login page times out" in table and issue["key"] in table
    assert f"created {issue['key']} for the incident" in table
    assert f"new incident from servicenow {inc['number']}" in table
    # The Jira key finds the same incident; --json is the same trail, machine-readable.
    entries = json.loads(_ok(admin.run("history", issue["key"], "--json")))
    creates = [(e["action"], e["system"]) for e in entries if e["action"] == "create"]
    assert ("create", "servicenow") in creates and ("create", "jira") in creates
    unknown = admin.run("history", "INC9999999")
    assert unknown.returncode == 1 and "no incident INC9999999" in unknown.stderr


def test_a_resolve_in_jira_leaves_its_close_notes_in_servicenow(admin: Admin) -> None:
    inc = admin.open_p1("Checkout down")
    _ok(admin.run("sync", "--once"))
    [issue] = admin.issues()
    admin.transition(issue["key"], "In Progress")
    admin.transition(issue["key"], "Resolved", resolution={"name": "Done"})
    _ok(admin.run("sync", "--once"))
    resolved = admin.sn.get(f"/api/now/table/incident/{inc['sys_id']}").json()["result"]
    assert resolved["state"] == "6" and resolved["close_code"] == "Done"
    assert resolved["close_notes"], "ServiceNow wants close notes on a resolved incident"
    # The next pass must not "bring them in line" with an incident that had none (blank them).
    admin.reset_stats()
    _ok(admin.run("sync", "--once"))
    assert admin.writes()["servicenow"] == 0
    again = admin.sn.get(f"/api/now/table/incident/{inc['sys_id']}").json()["result"]
    assert again["close_notes"] == resolved["close_notes"]


def test_status_shows_queue_parked_and_links(admin: Admin) -> None:
    admin.open_p1("Search is slow")
    admin.open_p1("Search is down")
    admin.fault("jira", route=JIRA_CREATE, error_rate=1.0, error_status=400, count=1)
    _ok(admin.run("sync", "--once"), 3)
    rows = _rows(_ok(admin.run("status")))
    assert rows["queued"] == "0"
    assert rows["parked"] == "1"
    assert rows["linked servicenow records"] == "2"
    assert rows["linked jira records"] == "1"
    assert "watermark servicenow/default incident" in rows


def test_backfill_links_existing_incidents_once(admin: Admin) -> None:
    titles = [f"Existing outage {n}" for n in range(5)]
    for title in titles:
        admin.open_p1(title)
    out = _ok(admin.run("backfill", "--since", "2000-01-01"))
    assert "backfill: reconciled" in out and "parked 0" in out
    _one_issue_per_title(admin, titles)
    # Running it again finds everything linked: no new issue, no write.
    admin.reset_stats()
    out = _ok(admin.run("backfill", "--since", "2000-01-01"))
    assert "backfill: reconciled" in out
    assert admin.writes() == {"servicenow": 0, "jira": 0, "statuspage": 0}
    _one_issue_per_title(admin, titles)
    bad = admin.run("backfill", "--since", "last tuesday")
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


def test_a_backfill_reconciles_in_worker_processes_as_run_does(admin: Admin) -> None:
    """``sync.worker_processes: 2``: the backfill's reconcile runs in two processes (one
    process's interpreter lock bounds a backfill the rate limits would let go faster), each
    with its share of the threads and budgets; every record is linked once, and the summary
    adds both up."""
    titles = [f"Backfilled in two processes {n}" for n in range(8)]
    for title in titles:
        admin.open_p1(title)
    admin.env["ITSM_SYNC_SYNC__WORKER_PROCESSES"] = "2"
    admin.env["ITSM_SYNC_SYNC__WORKERS"] = "4"
    admin.env["ITSM_SYNC_LOG_LEVEL"] = "INFO"
    result = admin.run("backfill", "--since", "2000-01-01")
    out = _ok(result)
    assert "backfill: reconciled" in out and "parked 0" in out
    reconciled = int(out.split("backfill: reconciled ")[1].split(",")[0])
    assert reconciled >= len(titles), out
    _one_issue_per_title(admin, titles)
    started = [line for line in result.stderr.splitlines() if "backfill worker process" in line]
    assert len(started) == 2, result.stderr[-2000:]
    assert "process 1 of 2" in started[0] + started[1] and "process 2 of 2" in "".join(started)
    assert all("2 worker threads" in line for line in started), started


def test_backfill_dry_run_prints_what_it_would_create_and_link(admin: Admin) -> None:
    admin.open_p1("Dry outage one")
    admin.open_p1("Dry outage two")
    minor = admin.open_p1("Dry minor thing", impact="3", urgency="3")
    r = admin.jira.post(
        "/rest/api/2/issue",
        json={"fields": {"project": {"key": "OPS"}, "issuetype": {"name": "Incident"},
                         "summary": "Dry outage from Jira", "priority": {"name": "Highest"}}},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    issues_before = len(admin.issues())
    admin.reset_stats()
    out = _ok(admin.run("backfill", "--since", "2000-01-01", "--dry-run"))
    lines = out.splitlines()

    def line_for(title: str) -> str:
        [line] = [x for x in lines if title in x]
        return line

    assert line_for("Dry outage one").endswith("would create: jira issue")
    assert line_for("Dry outage two").startswith("create  servicenow INC")
    assert line_for("Dry minor thing").endswith("would create: no other record")
    assert line_for(minor["number"]).startswith("create")
    assert line_for("Dry outage from Jira").endswith("would create: servicenow incident")
    assert "4 new incidents (3 records to create), 0 pairs to link" in out
    assert "nothing was written" in out
    # Nothing was written: no remote write, no record made, and the store holds no incident.
    assert admin.writes() == {"servicenow": 0, "jira": 0, "statuspage": 0}
    assert len(admin.issues()) == issues_before
    assert _rows(_ok(admin.run("status")))["queued"] == "0"
    # The real backfill then does what the dry run said.
    out = _ok(admin.run("backfill", "--since", "2000-01-01"))
    assert "parked 0" in out
    assert len(admin.issues()) == issues_before + 2


def test_a_backfill_reads_in_pages_of_a_thousand(admin: Admin) -> None:
    """A backfill reads everything since its start: 1,000 records a list call, not a poll's
    100 (a real instance takes 0.3-1 s a page; bench.backfill reads 10,000)."""
    for n in range(120):
        admin.open_p1(f"Old minor thing {n}", impact="3", urgency="3")  # no Jira issue
    admin.clear_requests()
    out = _ok(admin.run("backfill", "--since", "2000-01-01", "--dry-run"))
    assert "120 new incidents" in out
    assert admin.service_calls()["servicenow"].count("GET /api/now/table/incident") == 1
    admin.clear_requests()
    _ok(admin.run("backfill", "--since", "2000-01-01"))
    assert admin.service_calls()["servicenow"].count("GET /api/now/table/incident") == 1


def test_a_killed_backfill_resumes_without_duplicates(admin: Admin) -> None:
    titles = [f"Old outage {n:02d}" for n in range(40)]
    for title in titles:
        admin.open_p1(title)
    # Slow creates down, so the kill lands while issues are being made.
    admin.fault("jira", route=JIRA_CREATE, latency_ms=150)
    first = admin.start("backfill", "--since", "2000-01-01")
    try:
        deadline = time.monotonic() + 60
        while len(admin.issues()) < 8:
            assert first.poll() is None, f"backfill ended before the kill:\n{first.stdout}"
            assert time.monotonic() < deadline, "the backfill made no issues"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    made = len(admin.issues())
    assert 8 <= made < len(titles), f"the kill came too late to test anything ({made} made)"

    out = _ok(admin.run("backfill", "--since", "2000-01-01"))
    assert "backfill: reconciled" in out and "parked 0" in out
    _one_issue_per_title(admin, titles)
    assert _rows(_ok(admin.run("status")))["queued"] == "0"
