"""``make chaos``: the engine under the conditions real desks produce, from outside (issue 13).

One seeded run, as real processes: the three simulators (``itsm-sync simulate``), two
``itsm-sync run`` services (each an HTTP process and a worker process with two worker threads)
sharing a fresh PostgreSQL database, and this program playing the people. It

1. opens ``--incidents`` P1s in ServiceNow (some resolved at once: *quick resolves*), and, once
   each has its Jira issue, edits both sides at random: titles, descriptions, severity,
   comments (public, ServiceNow work notes, Jira role-restricted and JSM internal ones),
   transitions and resolves, reopens, and makes some incidents public (status page);
2. meanwhile about a quarter of the service's API calls fail (5xx, timeouts before the write,
   answers lost after the write was applied, connection resets; the people's own calls are
   spared), webhooks are dropped, duplicated and delayed, and a service is killed with
   SIGKILL (its whole process group: HTTP and worker process) ``--kills`` times and restarted;
3. lets it settle (the faults stay on) until the queue is empty, every webhook is out and the
   pairs agree, or ``--settle-seconds`` pass;
4. checks every pair against the simulators and prints one line per count, then the run's
   figures. The exit status is 0 only if every count is 0.

The counts (each a number of *things*, defined so that a correct engine scores 0):

- **lost creates**: incidents without the Jira issue they must have (every P1, quick resolves
  included), plus incidents made public without a status page incident.
- **duplicates**: Jira incident issues beyond the first per incident, status page incidents
  beyond the first per incident, ServiceNow incidents or Jira incident issues that belong to no
  incident the people opened, and copies beyond the first of a comment on any side.
- **stale fields**: per pair and field (title, description, severity, state), the two sides
  disagree after settling (read through the default mappings); plus status page incidents
  whose resolved-ness differs from their incident's.
- **lost updates**: a field (title, description, severity, state) whose final value on either
  side is not the last value written for it by any side (the people's writes, in the order the
  systems answered them; two writes on different sides less than a second apart are a tie, and
  either may win: ServiceNow keeps time to the second, docs/engine.md), counted once per
  (incident, field); plus every comment written on one side that is missing on the other.
- **false parks**: every incident target parked during the run (open or since resolved): the
  people write only values both systems accept, so each park is one for nothing.
- **leaked internal comments**: an internal comment (a ServiceNow work note, a Jira comment with
  a role/group visibility, a JSM internal comment) that shows as public anywhere: a ServiceNow
  ``comments`` entry, a Jira comment without visibility that JSM would show, or any text on
  the status page.

Reproduce with the seed it prints: ``python -m tests.chaos.run --seed N`` (the plan is fixed by
the seed; where each SIGKILL lands inside the service is not, which is the point).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
from sqlalchemy import create_engine, make_url

from service.harness import WEBHOOK_SECRETS, serving
from simulators.runner import ClusterConfig, SimulatorCluster
from tests.chaos.conftest import ADMIN_TOKEN, PG_MAINTENANCE_URL, free_port, run_cli, service_env
from tests.systems import TEST_AGENT, Systems, people_only

ROOT = Path(__file__).resolve().parents[2]
FIELDS = ("title", "description", "severity", "state")
SN_STATE = {
    "1": "new",
    "2": "investigating",
    "3": "investigating",
    "6": "resolved",
    "7": "closed",
    "8": "canceled",
}
JIRA_STATE = {
    "Open": "new",
    "To Do": "new",
    "In Progress": "investigating",
    "Reopened": "investigating",
    "Resolved": "resolved",
    "Done": "resolved",
    "Closed": "closed",
}
SN_SEVERITY = {"1": "SEV1", "2": "SEV2", "3": "SEV3", "4": "SEV4", "5": "SEV4"}
JIRA_SEVERITY = {"Highest": "SEV1", "High": "SEV2", "Medium": "SEV3", "Low": "SEV4"}
IMPACT_URGENCY = {"SEV1": ("1", "1"), "SEV2": ("1", "2")}
COUNTS = (
    "lost creates",
    "duplicates",
    "stale fields",
    "lost updates",
    "false parks",
    "leaked internal comments",
)
REVIEW = "Post-incident review:"


def fault_rules(rate: float) -> list[dict[str, Any]]:
    """The API fault mix: ``rate`` of the service's calls fail, split 45 % 5xx, 25 % answers
    lost after the write was applied, 15 % timeouts before it, 15 % connection resets."""
    spare = {"route": "*", "except_agent": TEST_AGENT}
    return [
        {**spare, "error_rate": rate * 0.25, "error_status": 503},
        {**spare, "error_rate": rate * 0.12, "error_status": 500},
        {**spare, "error_rate": rate * 0.08, "error_status": 502},
        {**spare, "timeout_rate": rate * 0.25, "timeout_when": "after", "timeout_seconds": 2},
        {**spare, "timeout_rate": rate * 0.15, "timeout_when": "before", "timeout_seconds": 2},
        {**spare, "reset_rate": rate * 0.15},
    ]


WEBHOOK_FAULTS = {
    "drop_rate": 0.15,
    "duplicate_rate": 0.15,
    "delay_rate": 0.2,
    "delay_jitter_seconds": 4.0,
}


@dataclass
class Write:
    """One value a person wrote to one field, and when the system answered."""

    at: float
    side: str  # servicenow | jira
    value: str


@dataclass
class Comment:
    text: str  # unique: found by this on every side
    side: str  # where it was written
    internal: bool
    kind: str  # comment | work_note | restricted | jsm_internal


@dataclass
class Incident:
    index: int
    token: str
    sys_id: str = ""
    number: str = ""
    jira_key: str = ""
    public: bool = False
    quick: bool = False
    writes: dict[str, list[Write]] = field(default_factory=lambda: collections.defaultdict(list))
    comments: list[Comment] = field(default_factory=list)
    n: int = 0  # a counter for unique texts

    def next(self) -> int:
        self.n += 1
        return self.n


@dataclass
class Step:
    what: str
    run: Callable[[], None]


# --------------------------------------------------------------------------------------------
# Processes


class Service:
    """``itsm-sync run`` in its own process group, so a SIGKILL takes the HTTP process and its
    worker process at once (as the OOM killer or a node loss would)."""

    def __init__(self, name: str, env: dict[str, str], cwd: Path) -> None:
        self.name, self.env, self.cwd = name, env, cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"--- start at {time.time():.3f}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service", "run", "--port", str(self.port)],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        return self.running and serving(self.url)  # database answers, worker process runs

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if not self.running or time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not come up; see {self.log}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.kills += 1
            with self.log.open("ab") as out:
                out.write(f"--- SIGKILL at {time.time():.3f}\n".encode())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start_simulators(cwd: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    ports = {"servicenow": free_port(), "jira": free_port(), "statuspage": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_SYNC_")}
    with (cwd / "simulators.log").open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "simulate",
                "--no-seed",
                "--state-file",
                str(cwd / "simulators-state.json"),  # what the systems held, to look into after
                *(a for name, port in ports.items() for a in (f"--{name}-port", str(port))),
            ],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    deadline = time.monotonic() + 30
    for url in urls.values():
        while True:
            try:
                httpx.get(f"{url}/_sim/stats", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"the simulators did not start: {cwd}/simulators.log"
                    ) from None
                time.sleep(0.1)
    with httpx.Client(timeout=10) as client:
        for name, url in urls.items():
            client.post(f"{url}/_sim/seed", json=people_only(name)).raise_for_status()
        client.post(
            f"{urls['statuspage']}/_sim/ratelimit", json={"requests_per_minute": 6000}
        ).raise_for_status()
    return proc, urls


def fresh_database(name: str) -> str:
    url = make_url(PG_MAINTENANCE_URL)
    admin = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


# --------------------------------------------------------------------------------------------
# The people


class People(Systems):
    """Both desks, straight on the simulators' APIs (spared by the faults: their User-Agent)."""

    def __init__(self, sims: SimulatorCluster) -> None:
        super().__init__(sims, timeout=30)
        self.calls: collections.Counter[str] = collections.Counter()
        for name, client in (("servicenow", self.sn), ("jira", self.jira), ("statuspage", self.sp)):
            client.event_hooks["request"].append(partial(self._count, name))

    def _count(self, name: str, request: httpx.Request) -> None:
        self.calls[name] += 1

    def sp_incidents(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            rows = self.sp.get("/incidents", params={"page": page, "per_page": 100}).json()
            out.extend(rows)
            if len(rows) < 100:
                return out
            page += 1

    def sn_patch(self, p: Incident, **fields: str) -> float:
        r = self.sn.patch(f"/api/now/table/incident/{p.sys_id}", json=fields)
        if r.status_code != 200:
            raise RuntimeError(f"PATCH {p.number} {fields}: {r.status_code} {r.text[:300]}")
        return time.time()

    def jira_edit(self, p: Incident, **fields: Any) -> float:
        r = self.jira.put(f"/rest/api/2/issue/{p.jira_key}", json={"fields": fields})
        if r.status_code != 204:
            raise RuntimeError(f"PUT {p.jira_key} {fields}: {r.status_code} {r.text[:300]}")
        return time.time()

    def jira_move(self, p: Incident, status: str) -> float | None:
        """Move the issue to ``status`` if its workflow allows it from where it is now."""
        options = self.jira.get(f"/rest/api/2/issue/{p.jira_key}/transitions").json()
        moves = [t for t in options["transitions"] if t["to"]["name"] == status]
        if not moves:
            return None
        fields = {"resolution": {"name": "Done"}} if status == "Resolved" else {}
        r = self.jira.post(
            f"/rest/api/2/issue/{p.jira_key}/transitions",
            json={"transition": {"id": moves[0]["id"]}, "fields": fields},
        )
        if r.status_code != 204:  # the engine moved it meanwhile
            return None
        return time.time()


class Chaos:
    def __init__(
        self,
        args: argparse.Namespace,
        people: People,
        services: list[Service],
        env: dict[str, str],
        cwd: Path,
    ) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.people = people
        self.services = services
        self.env = env
        self.cwd = cwd
        self.incidents = [Incident(i, f"chaos{i:03d}x") for i in range(args.incidents)]
        self.edits = 0
        self.log: list[str] = []
        self.restarts: list[tuple[float, Service]] = []

    # -- the people's moves -------------------------------------------------------------------

    def write(self, p: Incident, name: str, side: str, value: str, at: float) -> None:
        p.writes[name].append(Write(at, side, value))
        self.edits += 1

    def open(self, p: Incident) -> None:
        title, desc = f"{p.token} checkout fails s0", f"{p.token} first report"
        record = self.people.open_p1(title, description=desc)
        at = time.time()
        p.sys_id, p.number = record["sys_id"], record["number"]
        for name, value in (
            ("title", title),
            ("description", desc),
            ("severity", "SEV1"),
            ("state", "new"),
        ):
            self.write(p, name, "servicenow", value, at)
        if p.quick:  # resolved at once, before the engine looked
            at = self.people.sn_patch(
                p, state="6", close_code="Solution provided", close_notes="blip, gone by itself"
            )
            self.write(p, "state", "servicenow", "resolved", at)

    def sn_title(self, p: Incident) -> None:
        value = f"{p.token} checkout fails s{p.next()}"
        self.write(
            p, "title", "servicenow", value, self.people.sn_patch(p, short_description=value)
        )

    def sn_description(self, p: Incident) -> None:
        value = f"{p.token} desk notes s{p.next()}"
        self.write(
            p, "description", "servicenow", value, self.people.sn_patch(p, description=value)
        )

    def sn_severity(self, p: Incident) -> None:
        last = p.writes["severity"][-1].value
        value = "SEV2" if last == "SEV1" else "SEV1"
        impact, urgency = IMPACT_URGENCY[value]
        self.write(
            p,
            "severity",
            "servicenow",
            value,
            self.people.sn_patch(p, impact=impact, urgency=urgency),
        )

    def sn_state(self, p: Incident) -> None:
        now = SN_STATE[self.people.sn_record(p.sys_id)["state"]]
        if now == "new":
            value, fields = "investigating", {"state": "2"}
        elif now == "investigating":
            value, fields = (
                "resolved",
                {
                    "state": "6",
                    "close_code": "Solution provided",
                    "close_notes": f"fixed {p.token}",
                },
            )
        elif now == "resolved" and self.rng.random() < 0.5:  # reopened: it came back
            value, fields = "investigating", {"state": "2"}
        else:
            return
        self.write(p, "state", "servicenow", value, self.people.sn_patch(p, **fields))

    def sn_comment(self, p: Incident, internal: bool) -> None:
        kind = "work_note" if internal else "comment"
        text = f"{'WN' if internal else 'SC'}{p.index:03d}q{p.next()}z we are looking into it"
        self.people.sn_patch(p, **{"work_notes" if internal else "comments": text})
        p.comments.append(Comment(text, "servicenow", internal, kind))
        self.edits += 1

    def jira_title(self, p: Incident) -> None:
        value = f"{p.token} checkout fails j{p.next()}"
        self.write(p, "title", "jira", value, self.people.jira_edit(p, summary=value))

    def jira_description(self, p: Incident) -> None:
        value = f"{p.token} engineering notes j{p.next()}"
        self.write(p, "description", "jira", value, self.people.jira_edit(p, description=value))

    def jira_move(self, p: Incident, status: str) -> None:
        at = self.people.jira_move(p, status)
        if at is not None:
            self.write(p, "state", "jira", JIRA_STATE[status], at)

    def jira_comment(self, p: Incident, kind: str) -> None:
        text = f"JC{p.index:03d}q{p.next()}z rolled back build 431"
        body: dict[str, Any] = {"body": text}
        if kind == "restricted":
            body["visibility"] = {"type": "role", "value": "Developers"}
        elif kind == "jsm_internal":
            body["properties"] = [{"key": "sd.public.comment", "value": {"internal": True}}]
        r = self.people.jira.post(f"/rest/api/2/issue/{p.jira_key}/comment", json=body)
        if r.status_code != 201:
            raise RuntimeError(f"comment on {p.jira_key}: {r.status_code} {r.text[:300]}")
        p.comments.append(Comment(text, "jira", kind != "comment", kind))
        self.edits += 1

    def publish(self, p: Incident) -> None:
        message = f"Some customers cannot check out ({p.index})."
        for svc in self.services:
            if not svc.ready():
                continue
            try:
                r = httpx.post(
                    f"{svc.url}/api/incidents/{p.number}/public",
                    json={"message": message},
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                    timeout=30,
                )
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                p.public = True
                return
            self.log.append(f"publish {p.number} via {svc.name}: {r.status_code} {r.text[:200]}")
        result = run_cli(["public", p.number, "--message", message], self.env, self.cwd)
        if result.returncode == 0:
            p.public = True
        else:
            self.log.append(f"publish {p.number} via the CLI: {result.stdout}{result.stderr}")

    # -- the plan -----------------------------------------------------------------------------

    def early(self, p: Incident) -> list[Step]:
        steps = [Step(f"open #{p.index}", partial(self.open, p))]
        if p.quick:
            return steps
        for _ in range(self.rng.randint(0, 2)):
            steps.append(self.sn_step(p))
        return steps

    def sn_step(self, p: Incident) -> Step:
        kind = self.rng.choices(
            ["title", "description", "severity", "state", "comment", "work_note"],
            weights=[4, 2, 1, 2, 2, 2],
        )[0]
        moves: dict[str, Callable[[], None]] = {
            "title": partial(self.sn_title, p),
            "description": partial(self.sn_description, p),
            "severity": partial(self.sn_severity, p),
            "state": partial(self.sn_state, p),
            "comment": partial(self.sn_comment, p, False),
            "work_note": partial(self.sn_comment, p, True),
        }
        return Step(f"sn {kind} #{p.index}", moves[kind])

    def jira_step(self, p: Incident) -> Step:
        kind = self.rng.choices(
            [
                "title",
                "description",
                "progress",
                "resolve",
                "comment",
                "restricted",
                "jsm_internal",
            ],
            weights=[4, 2, 2, 2, 2, 1, 1],
        )[0]
        moves: dict[str, Callable[[], None]] = {
            "title": partial(self.jira_title, p),
            "description": partial(self.jira_description, p),
            "progress": partial(self.jira_move, p, "In Progress"),
            "resolve": partial(self.jira_move, p, "Resolved"),
        }
        run = moves.get(kind) or partial(self.jira_comment, p, kind)
        return Step(f"jira {kind} #{p.index}", run)

    def late(self, p: Incident) -> list[Step]:
        steps = []
        for _ in range(self.rng.randint(2, 6)):
            steps.append(self.sn_step(p) if self.rng.random() < 0.5 else self.jira_step(p))
        if not p.quick and self.rng.random() < 0.3:
            steps.insert(
                self.rng.randint(0, 1), Step(f"publish #{p.index}", partial(self.publish, p))
            )
        # The same field from both sides in a row: the conflicts last-writer-wins decides.
        if self.rng.random() < 0.3:
            steps += [
                Step(f"sn title #{p.index}", partial(self.sn_title, p)),
                Step(f"jira title #{p.index}", partial(self.jira_title, p)),
            ]
        return steps

    def interleave(self, per_incident: list[list[Step]]) -> list[Step]:
        queues = [collections.deque(q) for q in per_incident if q]
        out: list[Step] = []
        while queues:
            q = self.rng.choice(queues)
            out.append(q.popleft())
            if not q:
                queues.remove(q)
        return out

    # -- playing it ---------------------------------------------------------------------------

    def play(self, steps: list[Step], kills: set[int], seconds: float) -> None:
        pause = seconds / max(1, len(steps))
        for n, step in enumerate(steps):
            started = time.monotonic()
            self.restart_due()
            if n in kills:
                self.kill(step.what)
            try:
                step.run()
            except (RuntimeError, httpx.HTTPError) as exc:  # a person's write refused: logged
                self.log.append(f"{step.what}: {exc}")
            time.sleep(max(0.0, pause - (time.monotonic() - started)))

    def kill(self, before: str) -> None:
        alive = [svc for svc in self.services if svc.running]
        if not alive:
            self.all_up()
            alive = self.services
        victim = self.rng.choice(alive)
        time.sleep(self.rng.uniform(0.0, 0.5))  # land inside whatever it is doing
        victim.kill()
        back = time.monotonic() + self.rng.uniform(1.0, 6.0)
        self.restarts.append((back, victim))
        self.log.append(f"{time.strftime('%H:%M:%S')} SIGKILL {victim.name} before {before}")

    def restart_due(self) -> None:
        now = time.monotonic()
        for at, svc in list(self.restarts):
            if at <= now:
                self.restarts.remove((at, svc))
                svc.start()

    def all_up(self) -> None:
        for _, svc in self.restarts:
            svc.start()
        self.restarts.clear()
        for svc in self.services:
            svc.wait_ready()

    def run(self) -> None:
        rng, args = self.rng, self.args
        for p in self.incidents:
            p.quick = rng.random() < 0.1
        early = self.interleave([self.early(p) for p in self.incidents])
        early_kills = set(rng.sample(range(len(early) // 4, len(early)), args.kills // 3))
        self.play(early, early_kills, args.edit_seconds * 0.3)
        self.all_up()
        self.find_issues(timeout=args.settle_seconds)
        late = self.interleave([self.late(p) for p in self.incidents if p.jira_key])
        late_kills = set(rng.sample(range(len(late)), args.kills - len(early_kills)))
        self.play(late, late_kills, args.edit_seconds * 0.7)
        self.all_up()

    def find_issues(self, timeout: float) -> None:
        """Wait for every incident's Jira issue (those that never come are lost creates)."""
        deadline = time.monotonic() + timeout
        while True:
            by_token = self.issues_by_token()
            for p in self.incidents:
                if p.token in by_token:
                    p.jira_key = by_token[p.token][0]["key"]
            if all(p.jira_key for p in self.incidents) or time.monotonic() > deadline:
                return
            time.sleep(1)

    def issues_by_token(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for issue in self.people.jira_issues("project = OPS AND issuetype = Incident"):
            out[str(issue["fields"]["summary"]).split(" ", 1)[0]].append(issue)
        return out


# --------------------------------------------------------------------------------------------
# Checking


@dataclass
class Seen:
    """Everything the systems show at the end, read once."""

    sn: dict[str, dict[str, Any]]
    journal: dict[str, list[dict[str, Any]]]
    issues: list[dict[str, Any]]
    comments: dict[str, list[dict[str, Any]]]
    pages: list[dict[str, Any]]
    parks: list[tuple[str, str, str]]
    queued: int
    keys: dict[str, str] = field(default_factory=dict)  # ServiceNow sys_id -> correlation key


def read_all(people: People, db_url: str, keys: list[str]) -> Seen:
    from sqlmodel import select

    from sync import store
    from sync.planner import correlation_key

    sn_rows = people.sn.get("/api/now/table/incident", params={"sysparm_limit": 100000})
    journal: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    rows = people.sn.get("/api/now/table/sys_journal_field", params={"sysparm_limit": 100000})
    for row in rows.json()["result"]:
        journal[row["element_id"]].append(row)
    issues = people.jira_issues("project = OPS ORDER BY created ASC")
    comments = {
        key: people.jira.get(
            f"/rest/api/2/issue/{key}/comment", params={"expand": "properties", "maxResults": 5000}
        ).json()["comments"]
        for key in keys
    }
    engine = store.make_engine(db_url)
    try:
        with store.session_scope(engine, readonly=True) as s:
            parks = [(p.incident_id, p.target, p.error) for p in s.exec(select(store.Parked))]
            queued = len(list(s.exec(select(store.Dirty))))
            links = s.exec(select(store.Link).where(store.Link.system == "servicenow"))
            keys = {link.remote_id: correlation_key(link.incident_id) for link in links}
    finally:
        engine.dispose()
    return Seen(
        {r["sys_id"]: r for r in sn_rows.json()["result"]},
        journal,
        issues,
        comments,
        people.sp_incidents(),
        parks,
        queued,
        keys,
    )


def _jira_internal(comment: dict[str, Any]) -> bool:
    props = {p.get("key"): p.get("value") for p in comment.get("properties") or []}
    jsm = (props.get("sd.public.comment") or {}).get("internal") is True
    return bool(comment.get("visibility")) or comment.get("jsdPublic") is False or jsm


def check(incidents: list[Incident], seen: Seen) -> tuple[dict[str, int], list[str]]:
    """The six counts, and one line per thing counted (what and where)."""
    counts = dict.fromkeys(COUNTS, 0)
    why: list[str] = []

    def count(name: str, line: str) -> None:
        counts[name] += 1
        why.append(f"{name}: {line}")

    tokens = {p.token: p for p in incidents}
    by_token: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for issue in seen.issues:
        summary = str(issue["fields"]["summary"])
        if summary.startswith(REVIEW):
            continue
        token = summary.split(" ", 1)[0]
        if token not in tokens:
            count("duplicates", f"Jira issue {issue['key']} of no incident: {summary!r}")
        by_token[token].append(issue)
    numbers = {p.sys_id for p in incidents}
    for sys_id, row in seen.sn.items():
        if sys_id not in numbers:
            count("duplicates", f"ServiceNow {row['number']} of no incident opened by people")
    pages: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for page in seen.pages:
        key = ((page.get("metadata") or {}).get("itsm_sync") or {}).get("correlation_key")
        pages[str(key)].append(page)
    page_text = json.dumps(seen.pages)
    labelled: set[str] = set()

    for p in incidents:
        if not p.sys_id:
            continue  # never opened: the person's create was refused (in the log)
        mine = by_token.get(p.token, [])
        if not mine:
            count("lost creates", f"{p.number}: no Jira issue")
        for extra in mine[1:]:
            count("duplicates", f"{p.number}: a second Jira issue {extra['key']}")
        sn = seen.sn[p.sys_id]
        issue = mine[0] if mine else None
        f = issue["fields"] if issue else {}
        sides = {
            "servicenow": {
                "title": sn["short_description"],
                "description": sn["description"],
                "severity": SN_SEVERITY.get(sn["priority"], sn["priority"]),
                "state": SN_STATE.get(sn["state"], sn["state"]),
            },
        }
        if issue:
            sides["jira"] = {
                "title": f["summary"],
                "description": f.get("description") or "",
                "severity": JIRA_SEVERITY.get((f.get("priority") or {}).get("name", ""), "?"),
                "state": JIRA_STATE.get(f["status"]["name"], f["status"]["name"]),
            }
        for name in FIELDS:
            values = {side: vals[name] for side, vals in sides.items()}
            if len(set(values.values())) > 1:
                count("stale fields", f"{p.number}/{p.jira_key} {name}: {values}")
            writes = p.writes[name]
            if not writes:
                continue
            last = writes[-1]
            ok = {last.value} | {
                w.value for w in writes if w.side != last.side and last.at - w.at < 1.0
            }
            wrong = {side: v for side, v in values.items() if v not in ok}
            if wrong:
                count(
                    "lost updates",
                    f"{p.number}/{p.jira_key} {name}: {wrong}, last written "
                    f"{last.value!r} on {last.side}",
                )

        # Comments: once on each side, internal ones internal everywhere.
        journal = seen.journal.get(p.sys_id, [])
        jira = seen.comments.get(p.jira_key, []) if p.jira_key else []
        for c in p.comments:
            in_sn = [e for e in journal if c.text in str(e["value"])]
            in_jira = [e for e in jira if c.text in json.dumps(e.get("body"))]
            for side, found in (("servicenow", in_sn), ("jira", in_jira)):
                if not found and issue is not None:
                    count(
                        "lost updates",
                        f"{p.number}/{p.jira_key}: {c.kind} {c.text!r} "
                        f"written on {c.side}, not on {side}",
                    )
                for _ in found[1:]:
                    count(
                        "duplicates",
                        f"{p.number}/{p.jira_key}: {c.text!r} {len(found)} times on {side}",
                    )
            if c.internal:
                leaks = [e for e in in_sn if e["element"] != "work_notes"]
                leaks += [e for e in in_jira if not _jira_internal(e)]
                if c.text in page_text:
                    leaks.append({"on": "status page"})
                for leak in leaks:
                    count(
                        "leaked internal comments",
                        f"{p.number}: {c.kind} {c.text!r} public: {str(leak)[:160]}",
                    )

        # The status page: public ones once, in step with the incident.
        labels = {lb for i in mine for lb in i["fields"]["labels"] if lb.startswith("itsm-")}
        labels |= {seen.keys[p.sys_id]} if p.sys_id in seen.keys else set()
        labelled.update(labels)
        shown = list({page["id"]: page for lb in labels for page in pages.get(lb, [])}.values())
        if p.public and not shown:
            count("lost creates", f"{p.number}: public, no status page incident")
        for extra in shown[1:]:
            count("duplicates", f"{p.number}: a second status page incident {extra['id']}")
        if shown:
            resolved = sides["servicenow"]["state"] in ("resolved", "closed", "canceled")
            if (shown[0]["status"] in ("resolved", "postmortem")) != resolved:
                count(
                    "stale fields",
                    f"{p.number}: status page {shown[0]['status']} while the incident is "
                    f"{sides['servicenow']['state']}",
                )
    for key, found in pages.items():
        if key not in labelled:
            for page in found:
                count("duplicates", f"status page incident {page['id']} of no incident ({key})")
    for incident_id, target, error in seen.parks:
        count("false parks", f"{incident_id} on {target}: {error[:200]}")
    return counts, why


def pairs_agree(chaos: Chaos, seen: Seen) -> bool:
    counts, _ = check(chaos.incidents, seen)
    return counts["stale fields"] == 0 and counts["lost creates"] == 0 and seen.queued == 0


# --------------------------------------------------------------------------------------------
# The run


def injected(urls: dict[str, str], people: People) -> tuple[int, int, dict[str, int]]:
    """(API faults fired, the service's API calls, webhook faults by kind)."""
    faults = calls = 0
    hooks: collections.Counter[str] = collections.Counter()
    for name, url in urls.items():
        faults += sum(r["hits"] for r in httpx.get(f"{url}/_sim/faults").json()["rules"])
        calls += sum(httpx.get(f"{url}/_sim/stats").json().values()) - people.calls[name]
        hooks.update(httpx.get(f"{url}/_sim/webhooks/log").json().get("faults", {}))
    return faults, calls, dict(hooks)


def webhooks_idle(urls: dict[str, str]) -> bool:
    return all(
        httpx.get(f"{u}/_sim/webhooks/log?limit=0", timeout=10).json()["idle"]
        for u in urls.values()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--incidents", type=int, default=120)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", 13)))
    parser.add_argument("--fault-rate", type=float, default=0.25)
    parser.add_argument("--edit-seconds", type=float, default=180.0)
    parser.add_argument("--settle-seconds", type=float, default=240.0)
    parser.add_argument("--database", default="chaos_run")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--verbose", action="store_true", help="print every counted thing")
    parser.add_argument(
        "--worker-processes",
        type=int,
        default=1,
        help="sync.worker_processes of each run (its 2 workers shared between them)",
    )
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error("--kills must be at least 1")

    started = time.monotonic()
    load_before = os.getloadavg()
    cwd = args.workdir or Path(tempfile.mkdtemp(prefix="itsm-chaos-"))
    cwd.mkdir(parents=True, exist_ok=True)
    db_url = fresh_database(args.database)
    sim_proc, urls = start_simulators(cwd)
    sims = cast(SimulatorCluster, SimpleNamespace(config=ClusterConfig(), urls=urls))
    env = service_env(
        sims,
        db_url,
        ITSM_SYNC_SYNC__WORKERS="2",
        ITSM_SYNC_SYNC__WORKER_PROCESSES=str(args.worker_processes),
    )
    services = [Service(f"svc{k}", env, cwd) for k in range(2)]
    people = People(sims)
    try:
        for svc in services:
            svc.start()
        for svc in services:
            svc.wait_ready()
        with httpx.Client(timeout=10) as client:
            for svc in services:
                for system, url in urls.items():
                    target = f"{svc.url}/webhooks/{system}"
                    if system == "statuspage":
                        target += f"?token={WEBHOOK_SECRETS[system]}"
                    body = {"url": target, "secret": WEBHOOK_SECRETS[system], **WEBHOOK_FAULTS}
                    client.post(f"{url}/_sim/webhooks", json=body).raise_for_status()
            for url in urls.values():
                client.post(
                    f"{url}/_sim/faults",
                    json={"seed": args.seed, "rules": fault_rules(args.fault_rate)},
                ).raise_for_status()
        print(
            f"chaos: seed {args.seed}, {args.incidents} incidents, {args.kills} kills, "
            f"work dir {cwd}, database {args.database}",
            flush=True,
        )
        chaos = Chaos(args, people, services, env, cwd)
        chaos.run()
        edited = time.monotonic()
        print(f"chaos: {chaos.edits} edits in {edited - started:.0f} s; settling", flush=True)
        keys = [p.jira_key for p in chaos.incidents if p.jira_key]
        deadline = time.monotonic() + args.settle_seconds
        agreed = 0
        while time.monotonic() < deadline:
            chaos.find_issues(timeout=0)
            keys = [p.jira_key for p in chaos.incidents if p.jira_key]
            if webhooks_idle(urls) and pairs_agree(chaos, read_all(people, db_url, keys)):
                agreed += 1
                if agreed >= 2:  # twice in a row, a few seconds apart: settled
                    break
            else:
                agreed = 0
            time.sleep(3)
        settled = time.monotonic()
        faults, calls, hooks = injected(urls, people)
        seen = read_all(people, db_url, keys)
        counts, why = check(chaos.incidents, seen)
    finally:
        for svc in services:
            svc.stop()
        os.killpg(sim_proc.pid, signal.SIGTERM)
        sim_proc.wait(timeout=30)
        people.close()

    people_json = [
        {
            **{k: v for k, v in vars(p).items() if k not in ("writes", "comments")},
            "writes": {k: [dataclasses.asdict(w) for w in ws] for k, ws in p.writes.items()},
            "comments": [dataclasses.asdict(c) for c in p.comments],
        }
        for p in chaos.incidents
    ]
    (cwd / "people.json").write_text(json.dumps(people_json, indent=1))
    for name in COUNTS:
        print(f"{name}: {counts[name]}")
    kills = sum(svc.kills for svc in services)
    public = sum(p.public for p in chaos.incidents)
    quick = sum(p.quick for p in chaos.incidents)
    print(
        f"incidents {len(chaos.incidents)} ({quick} quick resolves, {public} public), "
        f"edits {chaos.edits}, SIGKILLs {kills}, API faults {faults} of {calls} service calls "
        f"({faults / max(1, calls):.0%}), webhooks {hooks}, edit phase {edited - started:.0f} s, "
        f"settled in {settled - edited:.0f} s, total {settled - started:.0f} s, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, load before {load_before[0]:.1f}, "
        f"after {os.getloadavg()[0]:.1f} (1-min avg, {os.cpu_count()} cores)"
    )
    if args.verbose or any(counts.values()):
        for line in why[:200]:
            print(f"  {line}")
        for line in chaos.log[-60:]:
            print(f"  log: {line}")
    if kills < args.kills:
        print(f"only {kills} of {args.kills} SIGKILLs landed")
        return 1
    return 1 if any(counts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
