"""Crash safety with real processes: ``itsm-sync run`` is killed with SIGKILL at seeded random
moments while people keep working on all three systems, and restarted on the same database.

After it converges nothing may be duplicated (one Jira issue per P1, one status page incident
per public incident, every comment once on each side), nothing lost (the last ServiceNow title
is the Jira summary, the last Jira status reached ServiceNow, every comment crossed over) and
nothing internal public (no work note, comment or title text on the status page).

The small versions run in ``make test``; the large ones (``-m slow``) in ``make chaos``.
Reproduce a failure with the seed in its message (``CHAOS_SEED=<seed> pytest tests/chaos``): the
plan (edits and kill points) is fixed by the seed; where each SIGKILL lands inside the service is
not, which is the point.
"""

from __future__ import annotations

import collections
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.http import reset_buckets
from service.harness import settings_for, wait_for
from service.runtime import Runtime
from simulators.runner import SimulatorCluster
from sync.poller import poll_all
from sync.worker import drain
from tests.chaos.conftest import (
    ADMIN_TOKEN,
    ServiceProcess,
    run_cli,
    service_env,
)
from tests.systems import Systems as SharedSystems

# ServiceNow state for the last Jira status we set (the default mappings' round trip).
SN_STATE = {"Open": "1", "In Progress": "2", "Resolved": "6"}
REVIEW = "Post-incident review:"  # the postmortem tracker's Jira issue for a resolved P1


@dataclass
class P1:
    """One incident and everything the test did to it (what the systems must end up showing)."""

    index: int
    sys_id: str
    number: str
    token: str  # in every title the incident ever has: finds its Jira issue
    title: str  # the last title set in ServiceNow
    status: str = "Open"  # the last status set in Jira
    jira_key: str = ""
    public: bool = False
    work_notes: list[str] = field(default_factory=list)  # internal: never on the page
    sn_comments: list[str] = field(default_factory=list)
    jira_comments: list[tuple[str, bool]] = field(default_factory=list)  # (text, internal)


class Systems(SharedSystems):
    """The three simulators as people use them (straight on each API)."""

    def transition(self, key: str, status: str, **fields: Any) -> None:
        if status == "Resolved":
            fields.setdefault("resolution", {"name": "Done"})
        super().transition(key, status, **fields)

    def sn_patch(self, sys_id: str, **fields: str) -> None:
        r = self.sn.patch(f"/api/now/table/incident/{sys_id}", json=fields)
        assert r.status_code == 200, r.text

    def sn_incidents(self) -> dict[str, dict[str, Any]]:
        rows = self.sn.get("/api/now/table/incident", params={"sysparm_limit": 10000}).json()[
            "result"
        ]
        return {row["sys_id"]: row for row in rows}

    def sn_journal(self) -> dict[str, list[str]]:
        """Work notes and comments per incident sys_id, as their text."""
        rows = self.sn.get(
            "/api/now/table/sys_journal_field", params={"sysparm_limit": 100000}
        ).json()["result"]
        out: dict[str, list[str]] = collections.defaultdict(list)
        for row in rows:
            out[row["element_id"]].append(str(row["value"]))
        return out

    # -- Jira ---------------------------------------------------------------------------------

    def jira_comment(self, key: str, text: str, internal: bool) -> None:
        body: dict[str, Any] = {"body": text}
        if internal:
            body["visibility"] = {"type": "role", "value": "Developers"}
        r = self.jira.post(f"/rest/api/2/issue/{key}/comment", json=body)
        assert r.status_code == 201, r.text

    def jira_comments(self, key: str) -> list[str]:
        page = self.jira.get(f"/rest/api/2/issue/{key}/comment").json()
        return [str(c["body"]) for c in page["comments"]]

    # -- Statuspage ---------------------------------------------------------------------------

    def sp_incidents(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            rows = self.sp.get("/incidents", params={"page": page, "per_page": 100}).json()
            out.extend(rows)
            if len(rows) < 100:
                return out
            page += 1

    # -- the simulators' own state ------------------------------------------------------------

    def webhooks_idle(self) -> bool:
        return all(
            httpx.get(f"{url}/_sim/webhooks/log?limit=0", timeout=10).json()["idle"]
            for url in self.sims.urls.values()
        )


# --------------------------------------------------------------------------------------------
# The plan: what people do, and when the service dies
# --------------------------------------------------------------------------------------------


@dataclass
class Step:
    what: str
    run: Callable[[], None]


def seed(default: int) -> int:
    """The plan's seed: ``CHAOS_SEED`` replays (or explores) another one."""
    return int(os.environ.get("CHAOS_SEED", default))


@dataclass
class Scenario:
    n: int  # P1s opened in ServiceNow
    seed: int
    kills: int  # SIGKILLs over the run
    processes: int = 1  # `itsm-sync run` processes sharing the database
    timeout: float = 120.0  # for convergence


class Chaos:
    """Plays a seeded plan of edits against the systems while killing and restarting the
    service processes, then checks what the systems show."""

    def __init__(
        self,
        scenario: Scenario,
        systems: Systems,
        services: list[ServiceProcess],
        env: dict[str, str],
        cwd: Path,
    ) -> None:
        self.s = scenario
        self.rng = random.Random(scenario.seed)
        self.systems = systems
        self.services = services
        self.env = env
        self.cwd = cwd
        self.p1s: list[P1] = []
        self.log: list[str] = []
        self.restart_at: dict[int, list[ServiceProcess]] = {}

    # -- the edits ----------------------------------------------------------------------------

    def _open(self, p: P1) -> None:
        record = self.systems.open_p1(p.title)
        p.sys_id, p.number = record["sys_id"], record["number"]

    def _retitle(self, p: P1) -> None:
        version = int(p.title.rsplit("v", 1)[1]) + 1
        p.title = f"{p.token} checkout fails v{version}"
        self.systems.sn_patch(p.sys_id, short_description=p.title)

    def _work_note(self, p: P1) -> None:
        text = f"WN{p.index:03d}n{len(p.work_notes)} internal: db01 password rotated"
        p.work_notes.append(text)
        self.systems.sn_patch(p.sys_id, work_notes=text)

    def _sn_comment(self, p: P1) -> None:
        text = f"SC{p.index:03d}n{len(p.sn_comments)} we are looking into it"
        p.sn_comments.append(text)
        self.systems.sn_patch(p.sys_id, comments=text)

    def _jira_comment(self, p: P1, internal: bool) -> None:
        text = f"JC{p.index:03d}n{len(p.jira_comments)} rolled back build 431"
        p.jira_comments.append((text, internal))
        self.systems.jira_comment(p.jira_key, text, internal)

    def _transition(self, p: P1, status: str) -> None:
        self.systems.transition(p.jira_key, status)
        p.status = status

    def _publish(self, p: P1, via_api: bool) -> None:
        message = f"Some customers cannot check out ({p.index})."
        live = [svc for svc in self.services if svc.ready()]
        if via_api and live:
            r = httpx.post(
                f"{live[0].url}/api/incidents/{p.number}/public",
                json={"message": message},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=30,
            )
            if r.status_code == 200:
                p.public = True
                return
            self.log.append(f"API publish of {p.number} answered {r.status_code}: {r.text}")
        result = run_cli(["public", p.number, "--message", message], self.env, self.cwd)
        assert result.returncode == 0, f"public {p.number}: {result.stdout}{result.stderr}"
        p.public = True

    # -- the plan -----------------------------------------------------------------------------

    def _interleave(self, per_incident: list[list[Step]]) -> list[Step]:
        """All steps, shuffled across incidents, each incident's own in order."""
        queues = [collections.deque(q) for q in per_incident if q]
        out: list[Step] = []
        while queues:
            q = self.rng.choice(queues)
            out.append(q.popleft())
            if not q:
                queues.remove(q)
        return out

    def _sn_edits(self, p: P1, rounds: int) -> list[Step]:
        steps: list[Step] = []
        for _ in range(rounds):
            kind = self.rng.choices(["title", "note", "comment"], weights=[3, 2, 1])[0]
            if kind == "title":
                steps.append(Step(f"retitle {p.number}", partial(self._retitle, p)))
            elif kind == "note":
                steps.append(Step(f"work note {p.number}", partial(self._work_note, p)))
            else:
                steps.append(Step(f"comment {p.number}", partial(self._sn_comment, p)))
        return steps

    def _late_edits(self, p: P1) -> list[Step]:
        """After the Jira issues exist: both sides at once, and comms."""
        rng = self.rng
        steps = self._sn_edits(p, rng.randint(0, 2))
        for _ in range(rng.randint(0, 2)):
            internal = rng.random() < 0.5
            steps.append(Step(f"jira comment {p.number}", partial(self._jira_comment, p, internal)))
        if rng.random() < 0.3:
            api = rng.random() < 0.5
            steps.append(Step(f"publish {p.number}", partial(self._publish, p, api)))
        rng.shuffle(steps)
        # The engineer's moves, in workflow order, somewhere among the rest.
        moves = rng.choices([[], ["In Progress"], ["In Progress", "Resolved"]], [1, 3, 1])[0]
        spots = sorted(rng.randint(0, len(steps)) for _ in moves)
        for offset, (spot, status) in enumerate(zip(spots, moves, strict=True)):
            steps.insert(
                spot + offset, Step(f"{p.number} -> {status}", partial(self._transition, p, status))
            )
        steps.append(Step(f"retitle {p.number}", partial(self._retitle, p)))  # a last one
        return steps

    def _play(self, steps: list[Step], kill_points: set[int], offset: int) -> None:
        for n, step in enumerate(steps, start=offset):
            for svc in self.restart_at.pop(n, []):
                self.log.append(f"#{n}: restart {svc.name}")
                svc.start(wait=False)
            if n in kill_points:
                self._kill(n, step.what)
            step.run()

    def _kill(self, n: int, before: str) -> None:
        if not all(svc.running for svc in self.services):
            # Still down from the last kill: back first (several processes: one stays alive).
            self._all_up()
        victim = self.rng.choice(self.services)
        time.sleep(self.rng.uniform(0.0, 0.4))  # land inside whatever the service is doing
        victim.kill()
        back = n + self.rng.randint(1, 8)
        self.log.append(f"#{n} ({before}): SIGKILL {victim.name}, restart before #{back}")
        self.restart_at.setdefault(back, []).append(victim)

    def _all_up(self) -> None:
        for svcs in self.restart_at.values():
            for svc in svcs:
                if not svc.running:
                    svc.start(wait=False)
        self.restart_at.clear()
        for svc in self.services:
            svc.wait_ready()

    def run(self) -> None:
        n, kills = self.s.n, self.s.kills
        for i in range(n):
            token = f"chaos{i:03d}x"
            self.p1s.append(P1(i, "", "", token, f"{token} checkout fails v0"))
        # The desk opens the P1s and keeps editing them (one incident's steps in order).
        early = self._interleave(
            [
                [Step(f"open #{p.index}", partial(self._open, p)),
                 *self._sn_edits(p, self.rng.randint(1, 3))]
                for p in self.p1s
            ]
        )  # fmt: skip
        early_kills = set(self.rng.sample(range(n // 4, len(early)), kills // 3))
        self.log.append(f"seed {self.s.seed}: kills before step {sorted(early_kills)}")
        self._play(early, early_kills, 0)
        # Engineers start once their issue is there (people can't edit what doesn't exist yet).
        self._all_up()
        issues = wait_for(
            lambda: self._issues_by_token(at_least=n),
            f"a Jira issue for each of the {n} P1s",
            timeout=self.s.timeout,
        )
        for p in self.p1s:
            p.jira_key = issues[p.token][0]["key"]
        late = self._interleave([self._late_edits(p) for p in self.p1s])
        offset = len(early)
        late_kills = set(self.rng.sample(range(offset, offset + len(late)), kills - kills // 3))
        self.log.append(f"kills before step {sorted(late_kills)} (of {offset + len(late)})")
        self._play(late, late_kills, offset)
        self._all_up()

    # -- checking -----------------------------------------------------------------------------

    def _issues_by_token(self, at_least: int = 0) -> dict[str, list[dict[str, Any]]] | None:
        """The Jira issues by the token in their summary; None while there are fewer tokens."""
        found: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for issue in self.systems.jira_issues():
            found[str(issue["fields"]["summary"]).split(" ", 1)[0]].append(issue)
        return found if len(found) >= at_least else None

    def problems(self) -> list[str]:
        """Everything that is not (yet) as it must end up; empty when converged."""
        out: list[str] = []
        issues = self.systems.jira_issues()
        by_token: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        by_label: collections.Counter[str] = collections.Counter()
        for issue in issues:
            by_token[str(issue["fields"]["summary"]).split(" ", 1)[0]].append(issue)
            for label in issue["fields"]["labels"]:
                if label.startswith("itsm-"):
                    by_label[label] += 1
        tokens = {p.token for p in self.p1s}
        out += [
            f"Jira issue {i['key']} of no P1: {i['fields']['summary']!r} {i['fields']['labels']}"
            for i in issues
            if str(i["fields"]["summary"]).split(" ", 1)[0] not in tokens
            and not str(i["fields"]["summary"]).startswith(REVIEW)
        ]
        sn = self.systems.sn_incidents()
        journal = self.systems.sn_journal()
        pages = self.systems.sp_incidents()
        page_keys = collections.Counter(
            ((i.get("metadata") or {}).get("itsm_sync") or {}).get("correlation_key") for i in pages
        )
        out += [f"{n} status page incidents for {key}" for key, n in page_keys.items() if n > 1]
        labels = {label for p in self.p1s for label in self._labels(by_token.get(p.token))}
        out += [
            f"status page incident {i['name']!r} of no P1: {i.get('metadata')}"
            for i in pages
            if ((i.get("metadata") or {}).get("itsm_sync") or {}).get("correlation_key")
            not in labels
        ]
        page_text = json.dumps(pages)
        for p in self.p1s:
            mine = by_token.get(p.token, [])
            if len(mine) != 1:
                out.append(f"{p.number}: {len(mine)} Jira issues")
                continue
            issue = mine[0]
            if issue["fields"]["summary"] != p.title:
                out.append(
                    f"{p.number}: Jira summary {issue['fields']['summary']!r} != {p.title!r}"
                )
            if issue["fields"]["status"]["name"] != p.status:
                out.append(
                    f"{p.number}: Jira status {issue['fields']['status']['name']} != {p.status}"
                )
            state = sn[p.sys_id]["state"]
            if state != SN_STATE[p.status]:
                out.append(f"{p.number}: ServiceNow state {state} after Jira {p.status}")
            if sn[p.sys_id]["short_description"] != p.title:
                out.append(
                    f"{p.number}: ServiceNow title changed to {sn[p.sys_id]['short_description']!r}"
                )
            # Comments: each one once on each side.
            in_jira = collections.Counter(
                body.split("] ", 1)[-1] for body in self.systems.jira_comments(p.jira_key)
            )
            in_sn = collections.Counter(text.split("] ", 1)[-1] for text in journal[p.sys_id])
            for text in [*p.work_notes, *p.sn_comments]:
                if in_jira[text] != 1:
                    out.append(f"{p.number}: {text!r} is {in_jira[text]} times in Jira")
            for text, _ in p.jira_comments:
                if in_sn[text] != 1:
                    out.append(f"{p.number}: {text!r} is {in_sn[text]} times in ServiceNow")
            out += [f"{p.jira_key}: comment {t!r} {n} times" for t, n in in_jira.items() if n > 1]
            out += [f"{p.number}: journal {t!r} {n} times" for t, n in in_sn.items() if n > 1]
            if len(in_jira) != len(p.work_notes) + len(p.sn_comments) + len(p.jira_comments):
                out.append(f"{p.jira_key}: unexpected comments {sorted(in_jira)}")
            # The status page: public incidents only, once, nothing internal on it.
            stamps = self._labels(mine)
            if len(stamps) != 1:
                out.append(f"{p.jira_key}: correlation labels {stamps}")
                continue
            shown = [i for i in pages if json.dumps(i.get("metadata")).count(stamps[0])]
            if p.public and p.status != "Resolved" and len(shown) != 1:
                out.append(f"{p.number}: public, {len(shown)} status page incidents")
            # Resolved before the page got it: no page is opened for a finished incident.
            statuses = [i["status"] for i in shown]
            if p.public and p.status == "Resolved" and statuses not in ([], ["resolved"]):
                out.append(f"{p.number}: resolved; on the status page as {statuses}")
            if not p.public and shown:
                out.append(f"{p.number}: not public, yet on the status page")
            secrets = [*p.work_notes, *p.sn_comments, *(t for t, _ in p.jira_comments), p.token]
            out += [f"{p.number}: {t!r} is on the status page" for t in secrets if t in page_text]
        return out

    @staticmethod
    def _labels(issues: list[dict[str, Any]] | None) -> list[str]:
        return [
            label
            for issue in issues or []
            for label in issue["fields"]["labels"]
            if label.startswith("itsm-")
        ]

    def queue_empty(self, db_url: str) -> bool:
        from sqlmodel import select

        from sync import store

        engine = store.make_engine(db_url)
        try:
            with store.session_scope(engine, readonly=True) as s:
                return s.exec(select(store.Dirty)).first() is None
        finally:
            engine.dispose()

    def converge(self, db_url: str) -> None:
        """Wait until the queue is empty, every webhook is out and nothing is left to fix."""
        last: list[str] = []

        def settled() -> bool:
            nonlocal last
            if not (self.systems.webhooks_idle() and self.queue_empty(db_url)):
                return False
            last = self.problems()
            return not last

        try:
            wait_for(settled, "convergence", timeout=self.s.timeout)
        except AssertionError:
            raise AssertionError(self.report(last or self.problems())) from None

    def report(self, problems: list[str]) -> str:
        tails = "\n".join(f"== {svc.name} ==\n{svc.tail(30)}" for svc in self.services)
        return (
            f"seed {self.s.seed}, {len(problems)} problems:\n  "
            + "\n  ".join(problems[:60])
            + "\nplan:\n  "
            + "\n  ".join(self.log)
            + f"\n{tails}"
        )


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


@pytest.fixture
def systems(empty_sims: SimulatorCluster) -> Iterator[Systems]:
    systems = Systems(empty_sims)
    try:
        yield systems
    finally:
        systems.close()


def _crash_and_converge(
    scenario: Scenario,
    sims: SimulatorCluster,
    systems: Systems,
    services: list[ServiceProcess],
    db_url: str,
    cwd: Path,
) -> Chaos:
    env = service_env(sims, db_url)
    for k in range(scenario.processes):
        svc = ServiceProcess(f"svc{k}", env, cwd)
        services.append(svc)
        svc.start(wait=False)
    for svc in services:
        svc.wait_ready()
        svc.register_webhooks(sims)  # several processes: each delivery goes to all of them
    chaos = Chaos(scenario, systems, services, env, cwd)
    chaos.run()
    assert sum(svc.kills for svc in services) == scenario.kills, chaos.report([])
    chaos.converge(db_url)
    for svc in services:
        svc.stop()
    # A last pass after everything stopped: nothing parked, nothing left to write.
    result = run_cli(["sync", "--once"], env, cwd)
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"sync --once: {result.returncode}\n{out}"
    assert "wrote 0," in result.stdout and "still queued 0" in result.stdout, out
    problems = chaos.problems()
    assert not problems, chaos.report(problems)
    return chaos


@pytest.mark.crash
def test_sqlite_service_killed_three_times_converges_without_duplicates_or_losses(
    empty_sims: SimulatorCluster,
    systems: Systems,
    services: list[ServiceProcess],
    tmp_path: Path,
) -> None:
    scenario = Scenario(n=20, seed=seed(20261125), kills=3, timeout=90)
    db = f"sqlite:///{tmp_path / 'itsm-sync.db'}"
    _crash_and_converge(scenario, empty_sims, systems, services, db, tmp_path)


@pytest.mark.crash
def test_two_processes_on_postgresql_one_killed_mid_way(
    empty_sims: SimulatorCluster,
    systems: Systems,
    services: list[ServiceProcess],
    pg_database_url: str,
    tmp_path: Path,
) -> None:
    scenario = Scenario(n=20, seed=seed(4242), kills=1, processes=2, timeout=90)
    _crash_and_converge(scenario, empty_sims, systems, services, pg_database_url, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("plan", [1, 2])
def test_large_sqlite_many_kills(
    empty_sims: SimulatorCluster,
    systems: Systems,
    services: list[ServiceProcess],
    tmp_path: Path,
    plan: int,
) -> None:
    scenario = Scenario(n=200, seed=seed(plan), kills=3, timeout=300)
    db = f"sqlite:///{tmp_path / 'itsm-sync.db'}"
    _crash_and_converge(scenario, empty_sims, systems, services, db, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_large_two_processes_on_postgresql(
    empty_sims: SimulatorCluster,
    systems: Systems,
    services: list[ServiceProcess],
    pg_database_url: str,
    tmp_path: Path,
) -> None:
    scenario = Scenario(n=200, seed=seed(7), kills=4, processes=2, timeout=300)
    _crash_and_converge(scenario, empty_sims, systems, services, pg_database_url, tmp_path)


# --------------------------------------------------------------------------------------------
# The races the chaos runs found, pinned down: an edit made while the engine writes the same
# record (its answer carries the edit, and a version that covers it) must not pass for the
# echo of the engine's own write. In-process, with a slow write instead of a kill.
# --------------------------------------------------------------------------------------------


@pytest.fixture
def runtime(empty_sims: SimulatorCluster, tmp_path: Path) -> Iterator[Runtime]:
    reset_buckets()
    settings = settings_for(
        empty_sims, f"sqlite:///{tmp_path / 'itsm-sync.db'}", statuspage={"requests_per_second": 50}
    )
    rt = Runtime(settings)
    try:
        yield rt
    finally:
        rt.stop()


def _sync(rt: Runtime) -> None:
    poll_all(rt.db, rt.connectors)
    drain(rt.reconciler, threads=1, timeout=60)


def _slow_write_meanwhile(
    rt: Runtime, systems: Systems, system: str, route: str, edit: Callable[[], None]
) -> None:
    """Reconcile while the engine's next ``route`` call on ``system`` takes 1.5 s to be
    applied, and make ``edit`` (a person's) in the middle of it."""
    httpx.post(
        f"{systems.sims.urls[system]}/_sim/faults",
        json={"rules": [{"route": route, "latency_ms": 1500, "count": 1}]},
    ).raise_for_status()
    worker = threading.Thread(target=drain, args=(rt.reconciler,), kwargs={"threads": 1})
    worker.start()
    time.sleep(0.7)
    edit()
    worker.join(timeout=60)
    for _ in range(2):  # any number of later passes
        _sync(rt)


def test_a_title_edited_while_the_engine_writes_servicenow_reaches_jira(
    runtime: Runtime, systems: Systems
) -> None:
    inc = systems.open_p1("Checkout down")
    _sync(runtime)
    [issue] = systems.jira_issues()
    systems.transition(issue["key"], "In Progress")  # the engine will PATCH ServiceNow ...
    poll_all(runtime.db, runtime.connectors)

    def retitle() -> None:  # ... and the desk retitles the incident meanwhile
        systems.sn_patch(inc["sys_id"], short_description="Checkout down in EU only")

    _slow_write_meanwhile(
        runtime, systems, "servicenow", "PATCH /api/now/table/{table}/{sys_id}", retitle
    )
    [issue] = systems.jira_issues()
    assert issue["fields"]["summary"] == "Checkout down in EU only"
    assert systems.sn_incidents()[inc["sys_id"]]["state"] == "2"


def test_a_jira_comment_made_while_the_engine_writes_the_issue_reaches_servicenow(
    runtime: Runtime, systems: Systems
) -> None:
    inc = systems.open_p1("Checkout down")
    _sync(runtime)
    [issue] = systems.jira_issues()
    systems.sn_patch(inc["sys_id"], short_description="Checkout down in EU")  # a Jira PUT ...
    poll_all(runtime.db, runtime.connectors)

    def comment() -> None:  # ... and an engineer comments meanwhile
        systems.jira_comment(issue["key"], "Rolled back build 431", internal=False)

    _slow_write_meanwhile(
        runtime, systems, "jira", "PUT /rest/api/{version}/issue/{issueIdOrKey}", comment
    )
    [issue] = systems.jira_issues()
    assert issue["fields"]["summary"] == "Checkout down in EU"
    journal = [text.split("] ", 1)[-1] for text in systems.sn_journal()[inc["sys_id"]]]
    assert journal == ["Rolled back build 431"]
