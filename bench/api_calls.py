"""API calls per propagated change: itsm-sync against the minimum and a naive baseline.

Scenario: N incidents already synced (a ServiceNow incident, its Jira issue, and every third one
public on Statuspage), then M changes made straight on the simulators, as people make them, in
rounds (each round changes a fifth of the incidents, one change each): ServiceNow title,
assignee, severity and work-note edits, Jira title edits, transitions and comments, and no-op
edits of fields no mapping reads.

The *minimum* of a change is one write per target whose mapped value it changes (a no-op needs
none; a severity change needs the Jira priority, and on a public incident also the Statuspage
component status if the page shows another status because of it: a component is page-wide and
shows the worst of the open public incidents that affect it, all of them here). Every remote
call is counted from the simulators' request logs (the benchmark's own edits carry their own
User-Agent and are left out), split into reads (GET) and writes (POST/PUT/PATCH/DELETE).

Phases on the same incidents, one after the other:

- **itsm-sync**: the service as it runs (webhooks, dirty queue, workers, shadows).
- **fair baseline** (:class:`FairNaive`): webhooks switched off; after each round of changes,
  the loop a competent team would write: poll what changed since the last run on both sides,
  and write each changed field set once (see the class). The ratios are against it.
- **straw man** (``--straw-man`` only; the "naive" of earlier reports): after each round of
  changes, one "poll every record, write every mapped field" pass, a small loop over the same
  connectors and the same mappings: for every incident GET the ServiceNow incident and the
  Jira issue, take the newer one as the source, PUT/PATCH every mapped field to the other one
  and to Statuspage (public incidents) unconditionally (a Jira transition only when the status
  differs: Jira refuses a transition to the status an issue is in), and copy comments missing
  on the other side.

``python -m bench.api_calls [--small] [--straw-man]``
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.common import (
    PEOPLE_JIRA,
    PEOPLE_SN,
    WRITE_METHODS,
    Rig,
    Row,
    finish,
    header,
    parser,
    table,
    wait_for,
)
from connectors.base import Connector, RemoteComment, RemoteRecord, RemoteRef
from mapping.engine import build_incident, from_canonical, get_path, to_canonical
from mapping.model import Incident
from mapping.registry import MappingSet
from mapping.transforms import TransformContext
from sync.people import context_for
from sync.reconcile import correlation_key

MODULE = "bench.api_calls"
PUBLIC_MESSAGE = "Some customers cannot check out; we are working on it."
KINDS = (
    "sn_title",
    "jira_title",
    "jira_transition",
    "sn_work_note",
    "sn_assignee",
    "jira_comment",
    "sn_severity",
    "noop_sn",
    "noop_jira",
)


@dataclass
class Tracked:
    """One incident as the benchmark knows it."""

    incident_id: str
    sys_id: str
    number: str
    jira_id: str
    jira_key: str
    public: bool
    sp_id: str = ""
    in_progress: bool = False
    sev1: bool = True
    person: int = 0  # index into PEOPLE_*: who is assigned
    edits: int = 0


@dataclass
class Calls:
    """Remote calls made by one side in one phase, per system, split reads/writes."""

    reads: Counter[str] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    # per change kind: the calls about the incident that change was made on (in its round)
    kind_reads: Counter[str] = field(default_factory=Counter)
    kind_writes: Counter[str] = field(default_factory=Counter)

    def add(
        self,
        log: Mapping[str, Iterable[Mapping[str, Any]]],
        kind_of: Mapping[str, str] | None = None,
    ) -> None:
        """Count a round's requests; ``kind_of`` maps the remote ids and keys of each incident
        changed in the round to the kind of its change."""
        for system, requests in log.items():
            for r in requests:
                write = r["method"] in WRITE_METHODS
                (self.writes if write else self.reads)[system] += 1
                route = str(r["route"])
                if "{table}" in route:  # ServiceNow: which table (incident, journal, users)
                    route = route.replace("{table}", str(r["path"]).split("/")[4])
                self.routes[f"{system} {r['method']} {route}"] += 1
                if kind_of is not None:
                    kind = _attribute(r, kind_of)
                    (self.kind_writes if write else self.kind_reads)[kind] += 1

    @property
    def total_reads(self) -> int:
        return sum(self.reads.values())

    @property
    def total_writes(self) -> int:
        return sum(self.writes.values())


def _attribute(request: Mapping[str, Any], kind_of: Mapping[str, str]) -> str:
    """The kind of change whose incident a request is about ("other" for none, e.g. a user
    look-up)."""
    words = re.split(r"[/?=&^,]", request["path"] + "?" + "&".join(v for _, v in request["query"]))
    for word in words:
        if word in kind_of:
            return kind_of[word]
    return "other"


# --------------------------------------------------------------------------------------------
# Changes, as people make them
# --------------------------------------------------------------------------------------------


def _page_worst(tracked: Iterable[Tracked]) -> str:
    """The status Statuspage shows for the component every public incident here affects: the
    worst of theirs (SEV1 major outage, SEV2 partial outage)."""
    public = [t for t in tracked if t.public]
    if not public:
        return "operational"
    return "major_outage" if any(t.sev1 for t in public) else "partial_outage"


def apply_change(rig: Rig, inc: Tracked, kind: str, tracked: Sequence[Tracked] = ()) -> int:
    """Make one change on a simulator; returns its minimum number of target writes."""
    inc.edits += 1
    n = inc.edits
    if kind == "sn_title":
        rig.sn_patch(inc.sys_id, short_description=f"Checkout fails ({inc.number} edit {n})")
        return 1  # Jira summary
    if kind == "jira_title":
        rig.jira_edit(inc.jira_key, summary=f"Checkout fails ({inc.jira_key} edit {n})")
        return 1  # ServiceNow short_description
    if kind == "jira_transition":
        rig.transition(inc.jira_key, "Open" if inc.in_progress else "In Progress")
        inc.in_progress = not inc.in_progress
        return 1  # ServiceNow state; Statuspage shows "investigating" for both
    if kind == "sn_work_note":
        rig.sn_patch(inc.sys_id, work_notes=f"note {n}: looking at db01")
        return 1  # an internal comment on the Jira issue
    if kind == "sn_assignee":
        inc.person = (inc.person + 1) % len(PEOPLE_SN)
        rig.sn_patch(inc.sys_id, assigned_to=PEOPLE_SN[inc.person])
        return 1  # Jira assignee
    if kind == "jira_comment":
        rig.jira_comment(inc.jira_key, f"comment {n} from the on-call engineer")
        return 1  # a ServiceNow comment
    if kind == "sn_severity":
        shown = _page_worst(tracked)
        inc.sev1 = not inc.sev1
        rig.sn_patch(inc.sys_id, urgency="1" if inc.sev1 else "2")
        # Jira priority, + the Statuspage component if what the page shows changes
        return 1 + (inc.public and _page_worst(tracked) != shown)
    if kind == "noop_sn":
        rig.sn_patch(inc.sys_id, contact_type="phone" if n % 2 else "email")
        return 0  # no mapping reads contact_type
    if kind == "noop_jira":
        rig.jira_edit(inc.jira_key, environment=f"prod-{n}")
        return 0  # no mapping reads environment
    raise ValueError(kind)


def plan(n_incidents: int, rounds: int) -> list[list[tuple[int, str]]]:
    """Rounds of (incident index, change kind): a fifth of the incidents per round, one change
    each, kinds cycling so that every kind is made about as often."""
    per_round = max(1, n_incidents // 5)
    out: list[list[tuple[int, str]]] = []
    k = 0
    for r in range(rounds):
        start = (r * per_round) % n_incidents
        out.append(
            [
                ((start + i) % n_incidents, KINDS[(k := k + 1) % len(KINDS)])
                for i in range(per_round)
            ]
        )
    return out


# --------------------------------------------------------------------------------------------
# The naive baseline
# --------------------------------------------------------------------------------------------


class Naive:
    """Poll every record, write every mapped field: one pass per poll round."""

    def __init__(self, connectors: Mapping[tuple[str, str], Connector], mappings: MappingSet):
        self.sn = connectors[("servicenow", "default")]
        self.jira = connectors[("jira", "default")]
        self.sp = connectors[("statuspage", "default")]
        self.maps = {s: mappings.get(s, "default") for s in ("servicenow", "jira", "statuspage")}
        self.ctx: dict[str, TransformContext] = {
            "servicenow": context_for(self.sn),
            "jira": context_for(self.jira),
            "statuspage": context_for(self.sp),
        }

    def poll_round(self, incidents: Iterable[Tracked]) -> None:
        for inc in incidents:
            sn_ref = RemoteRef("servicenow", "default", "incident", inc.sys_id, inc.number)
            jira_ref = RemoteRef("jira", "default", "issue", inc.jira_id, inc.jira_key)
            sn = self.sn.get("incident", inc.sys_id)
            jira = self.jira.get("issue", inc.jira_id)
            source, record = (
                ("jira", jira) if jira.updated_at > sn.updated_at else ("servicenow", sn)
            )
            values = to_canonical(self.maps[source], record.fields, self.ctx[source])
            values.pop("labels", None)
            values.pop("parent", None)
            incident = build_incident(
                values, id=inc.incident_id, public=inc.public, public_message=PUBLIC_MESSAGE
            )
            if source == "servicenow":
                self._write_jira(jira_ref, incident, str(jira.fields["status"]["name"]))
            else:
                self.sn.update(sn_ref, self._patch("servicenow", incident))
            if inc.public:
                patch = self._patch("statuspage", incident)
                # Writing the body would post a new customer-visible update every round: even
                # the naive loop only writes it when the message changes (never, here).
                patch.pop("body", None)
                sp_ref = RemoteRef("statuspage", "default", "incident", inc.sp_id)
                self.sp.update(sp_ref, patch)
            self._copy_comments(sn_ref, jira_ref)

    def _patch(self, system: str, incident: Incident) -> dict[str, Any]:
        return from_canonical(self.maps[system], incident, self.ctx[system])

    def _write_jira(self, ref: RemoteRef, incident: Incident, status: str) -> None:
        fields = self._patch("jira", incident)
        wanted = get_path(fields, "status.name")
        fields.pop("status", None)
        fields["labels"] = sorted({*(fields.get("labels") or []), correlation_key(incident.id)})
        self.jira.update(ref, fields)
        if wanted and wanted != status:
            self.jira.transition(ref, str(wanted))

    def _copy_comments(self, sn_ref: RemoteRef, jira_ref: RemoteRef) -> None:
        on_sn = self.sn.comments(sn_ref)
        on_jira = self.jira.comments(jira_ref)
        for source, src_ref, comments, target, tgt_ref, there in (
            ("servicenow", sn_ref, on_sn, self.jira, jira_ref, on_jira),
            ("jira", jira_ref, on_jira, self.sn, sn_ref, on_sn),
        ):
            bodies = {c.body for c in there}
            for c in _own(comments):
                if c.body not in bodies:
                    target.add_comment(
                        tgt_ref,
                        c.body,
                        visibility=c.visibility,
                        origin=f"{source}:{src_ref.key or src_ref.id}",
                    )


class FairNaive(Naive):
    """The fair baseline a competent team would write without webhooks: after each round, poll
    what changed since the last run on both sides (``changes_since``, the same list calls the
    service's poller makes), skip records whose version it has seen, and write each changed
    field set once: the mapped values a record changed (against what the baseline last saw of
    that record) go to the other systems, only where they differ from what it last wrote there
    (so its own writes do not echo back), in one update per target (and a Jira transition when
    the status moves). Comments: the changed record's comments are read and those missing on
    the other side copied."""

    def __init__(
        self,
        connectors: Mapping[tuple[str, str], Connector],
        mappings: MappingSet,
        tracked: Sequence[Tracked],
    ) -> None:
        super().__init__(connectors, mappings)
        self.by_id = {t.sys_id: t for t in tracked} | {t.jira_id: t for t in tracked}
        self.seen: dict[tuple[str, str], dict[str, Any]] = {}  # (incident, system) -> values
        self.versions: dict[tuple[str, str], tuple[int, ...]] = {}
        self.canon: dict[str, dict[str, Any]] = {}
        self.written: dict[tuple[str, str], dict[str, Any]] = {}  # (incident, target) -> patch
        self.copied: dict[str, set[str]] = {}
        self.since = dt.datetime.now(dt.UTC)
        for inc in tracked:  # in sync at the start (read before the measured phase)
            sn = self.sn.get("incident", inc.sys_id)
            jira = self.jira.get("issue", inc.jira_id)
            for system, record in (("servicenow", sn), ("jira", jira)):
                self.seen[(inc.incident_id, system)] = self._values(system, record.fields)
                self.versions[(system, record.ref.id)] = record.version
            self.canon[inc.incident_id] = {
                **self.seen[(inc.incident_id, "jira")],
                **self.seen[(inc.incident_id, "servicenow")],
            }
            incident = self._incident(inc)
            for target in self._targets(inc):
                self.written[(inc.incident_id, target)] = self._target_patch(target, incident)
            self.copied[inc.incident_id] = {
                c.body
                for ref in self._refs(inc)
                for c in (self.sn if ref.system == "servicenow" else self.jira).comments(ref)
            }

    def _values(self, system: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        values = to_canonical(self.maps[system], fields, self.ctx[system])
        values.pop("labels", None)
        values.pop("parent", None)
        return values

    def _incident(self, inc: Tracked) -> Incident:
        return build_incident(
            self.canon[inc.incident_id], id=inc.incident_id, public=inc.public,
            public_message=PUBLIC_MESSAGE,
        )  # fmt: skip

    @staticmethod
    def _targets(inc: Tracked) -> tuple[str, ...]:
        return ("servicenow", "jira", "statuspage") if inc.public else ("servicenow", "jira")

    @staticmethod
    def _refs(inc: Tracked) -> tuple[RemoteRef, RemoteRef]:
        return (
            RemoteRef("servicenow", "default", "incident", inc.sys_id, inc.number),
            RemoteRef("jira", "default", "issue", inc.jira_id, inc.jira_key),
        )

    def _target_patch(self, target: str, incident: Incident) -> dict[str, Any]:
        patch = self._patch(target, incident)
        if target == "statuspage":
            patch.pop("body", None)  # a new customer-visible update: only with a new message
        return patch

    def poll_round(self, incidents: Iterable[Tracked]) -> None:
        started = dt.datetime.now(dt.UTC)
        changed: list[tuple[Tracked, str, RemoteRecord]] = []
        for system, connector, object_type in (
            ("servicenow", self.sn, "incident"),
            ("jira", self.jira, "issue"),
        ):
            for record in connector.changes_since(object_type, self.since):
                inc = self.by_id.get(record.ref.id)
                key = (system, record.ref.id)
                if inc is None or self.versions.get(key) == record.version:
                    continue  # not ours, or seen already (the poll's overlap)
                self.versions[key] = record.version
                changed.append((inc, system, record))
        self.since = started
        for inc, source, record in sorted(changed, key=lambda c: c[2].updated_at):
            values = self._values(source, record.fields)
            before = self.seen.get((inc.incident_id, source), {})
            self.seen[(inc.incident_id, source)] = values
            moved = {k: v for k, v in values.items() if before.get(k) != v}
            self.canon[inc.incident_id].update(moved)
            incident = self._incident(inc)
            for target in self._targets(inc):
                if target == source:
                    continue
                patch = self._target_patch(target, incident)
                last = self.written[(inc.incident_id, target)]
                diff = {k: v for k, v in patch.items() if last.get(k) != v}
                if diff:
                    self._write(inc, target, diff)
                    last.update(diff)
            self._copy_new_comments(inc, source)

    def _write(self, inc: Tracked, target: str, diff: dict[str, Any]) -> None:
        sn_ref, jira_ref = self._refs(inc)
        if target == "servicenow":
            self.sn.update(sn_ref, diff)
        elif target == "jira":
            status = get_path(diff, "status.name")
            fields = {k: v for k, v in diff.items() if k != "status"}
            if fields:
                self.jira.update(jira_ref, fields)
            if status:
                self.jira.transition(jira_ref, str(status))
        else:
            self.sp.update(RemoteRef("statuspage", "default", "incident", inc.sp_id), diff)

    def _copy_new_comments(self, inc: Tracked, source: str) -> None:
        sn_ref, jira_ref = self._refs(inc)
        src, ref, other, other_ref = (
            (self.sn, sn_ref, self.jira, jira_ref)
            if source == "servicenow"
            else (self.jira, jira_ref, self.sn, sn_ref)
        )
        copied = self.copied[inc.incident_id]
        for c in _own(src.comments(ref)):
            if c.body not in copied:
                other.add_comment(
                    other_ref, c.body, visibility=c.visibility,
                    origin=f"{source}:{ref.key or ref.id}",
                )  # fmt: skip
                copied.add(c.body)


def _own(comments: Iterable[RemoteComment]) -> list[RemoteComment]:
    return [c for c in comments if not c.origin]


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def setup(rig: Rig, n: int) -> list[Tracked]:
    """N P1 incidents opened in ServiceNow; the service makes their Jira issues; every third
    is made public (the service makes its Statuspage incident)."""
    sys_ids = [rig.open_p1(f"Checkout fails ({i})")["sys_id"] for i in range(n)]
    wait_for(lambda: sum(1 for x in rig.links().values() if "jira" in x) >= n, "Jira issues", 120)
    rig.quiet()
    by_sys = {x["servicenow"].remote_id: (i, x) for i, x in rig.links().items()}
    tracked: list[Tracked] = []
    for k, sys_id in enumerate(sys_ids):
        incident_id, x = by_sys[sys_id]
        tracked.append(
            Tracked(
                incident_id=incident_id,
                sys_id=sys_id,
                number=x["servicenow"].remote_key,
                jira_id=x["jira"].remote_id,
                jira_key=x["jira"].remote_key,
                public=k % 3 == 0,
            )
        )
    for inc in tracked:
        if inc.public:
            rig.publish(inc.number, PUBLIC_MESSAGE)
    wait_for(
        lambda: (
            sum(1 for x in rig.links().values() if "statuspage" in x)
            >= sum(1 for t in tracked if t.public)
        ),
        "Statuspage incidents",
        120,
    )
    rig.quiet()
    links = rig.links()
    for inc in tracked:
        if inc.public:
            inc.sp_id = links[inc.incident_id]["statuspage"].remote_id
    return tracked


def consistent(rig: Rig, tracked: Iterable[Tracked]) -> tuple[int, list[str]]:
    """How many incidents look the same everywhere (title, state, assignee, priority, comment
    counts; the Statuspage incident's status for public ones), and what differs."""
    ok, problems = 0, []
    status_of = {True: "In Progress", False: "Open"}
    state_of = {True: "2", False: "1"}
    for inc in tracked:
        sn = rig.sn_record(inc.sys_id)
        jira = rig.jira_issue(inc.jira_key)["fields"]
        diffs = []
        if sn["short_description"] != jira["summary"]:
            diffs.append(f"title {sn['short_description']!r} vs {jira['summary']!r}")
        if (sn["state"], jira["status"]["name"]) != (
            state_of[inc.in_progress],
            status_of[inc.in_progress],
        ):
            diffs.append(f"state {sn['state']} / {jira['status']['name']}")
        if (jira.get("assignee") or {}).get("accountId") != PEOPLE_JIRA[inc.person]:
            diffs.append("assignee")
        if jira["priority"]["name"] != ("Highest" if inc.sev1 else "High"):
            diffs.append(f"priority {jira['priority']['name']}")
        notes = rig.sn.get(
            "/api/now/table/sys_journal_field",
            params={"sysparm_query": f"element_id={inc.sys_id}"},
        ).json()["result"]
        comments = rig.jira.get(f"/rest/api/2/issue/{inc.jira_key}/comment").json()["comments"]
        if len(notes) != len(comments):
            diffs.append(f"{len(notes)} journal entries vs {len(comments)} Jira comments")
        if inc.public:
            # A component's status is page-wide on Statuspage: every public incident here
            # affects Checkout, so the last one written decides it; check the incident only.
            page = rig.sp.get(f"/incidents/{inc.sp_id}").json()
            if page["status"] != "investigating":
                diffs.append(f"statuspage status {page['status']}")
        if diffs:
            problems.append(f"{inc.number}/{inc.jira_key}: " + "; ".join(diffs))
        else:
            ok += 1
    return ok, problems


@dataclass
class Phase:
    name: str
    changes: int = 0
    propagated: int = 0  # changes that need at least one target write
    minimum: int = 0  # writes the changes need
    calls: Calls = field(default_factory=Calls)
    seconds: float = 0.0
    consistent: int = 0
    problems: list[str] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    min_by_kind: Counter[str] = field(default_factory=Counter)

    def rows(self) -> list[list[Any]]:
        c = self.calls
        total = c.total_reads + c.total_writes
        return [
            [
                self.name,
                self.changes,
                self.propagated,
                self.minimum,
                c.total_writes,
                c.total_reads,
                total,
                c.total_writes / self.minimum if self.minimum else float("nan"),
                total / self.minimum if self.minimum else float("nan"),
                total / self.propagated if self.propagated else float("nan"),
            ]
        ]


def _total(phase: Phase) -> int:
    return phase.calls.total_writes + phase.calls.total_reads


def run_phase(
    rig: Rig, phase: Phase, tracked: list[Tracked], rounds: list[list[tuple[int, str]]],
    after_round: Any,
) -> None:  # fmt: skip
    rig.service_calls(clear=True)
    started = time.monotonic()
    for changes in rounds:
        kind_of: dict[str, str] = {}
        for index, kind in changes:
            inc = tracked[index]
            need = apply_change(rig, inc, kind, tracked)
            phase.changes += 1
            phase.minimum += need
            phase.propagated += need > 0
            phase.by_kind[kind] += 1
            phase.min_by_kind[kind] += need
            for token in (inc.sys_id, inc.jira_id, inc.jira_key, inc.sp_id):
                if token:
                    kind_of[token] = kind
        after_round()
        phase.calls.add(rig.service_calls(clear=True), kind_of)
    phase.seconds = time.monotonic() - started
    phase.consistent, phase.problems = consistent(rig, tracked)


def main() -> None:
    ap = parser(__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument(
        "--straw-man",
        action="store_true",
        help="also the old naive loop (every field of every incident each round)",
    )
    args = ap.parse_args()
    straw = bool(args.straw_man)
    n = 10 if args.small else 50
    rounds = 10
    settings = {
        "incidents (N)": f"{n} (every third public on Statuspage)",
        "rounds": f"{rounds}, {max(1, n // 5)} changes each (M = {rounds * max(1, n // 5)})",
        "change kinds": ", ".join(KINDS),
        "service": "webhooks on, 2 workers in the worker process (as itsm-sync run),"
        " coalesce_seconds 0.2 (default), poll once at start",
        "statuspage budget": "the real one: 1 request/s (client bucket; simulator 60/min)",
        "baselines": "fair (changes since the last run, each changed field set once)"
        + (", and the straw man (every field of every incident each round)" if straw else ""),
    }
    header("API calls per propagated change", MODULE, args.small, settings)
    with Rig(worker_process=True) as rig:  # as itsm-sync run: the workers in a worker process
        t0 = time.monotonic()
        tracked = setup(rig, n)
        setup_calls = Calls()
        setup_calls.add(rig.service_calls(clear=True))
        print(
            f"setup: {n} incidents synced in {time.monotonic() - t0:.1f}s "
            f"({setup_calls.total_writes} writes, {setup_calls.total_reads} reads by the service)"
        )
        schedule = plan(n, rounds)

        engine = Phase("itsm-sync")
        run_phase(rig, engine, tracked, schedule, rig.quiet)

        # The naive loop: the service hears nothing any more (no webhooks, no poll due).
        for url in rig.sims.urls.values():
            httpx.delete(f"{url}/_sim/webhooks").raise_for_status()
        # The fair baseline (changes since the last run, each changed field set written once),
        # on the same incidents, left in sync by the service.
        fair_loop = FairNaive(rig.runtime.connectors, rig.runtime.mappings, tracked)
        fair = Phase("fair baseline")
        run_phase(rig, fair, tracked, schedule, lambda: fair_loop.poll_round(tracked))
        naive = Phase("straw man")
        if straw:  # the old "naive" loop: it writes every field of every incident each round
            naive_loop = Naive(rig.runtime.connectors, rig.runtime.mappings)
            run_phase(rig, naive, tracked, schedule, lambda: naive_loop.poll_round(tracked))

    head = [
        "", "changes", "propagated", "min writes", "writes", "reads", "calls",
        "writes/min", "calls/min", "calls/propagated",
    ]  # fmt: skip
    print()
    print(
        table(head, engine.rows() + fair.rows() + naive.rows(), "Remote calls (all three systems)")
    )
    print()
    per_system = [
        [p.name, s, p.calls.writes[s], p.calls.reads[s]]
        for p in (engine, fair, *([naive] if straw else []))
        for s in ("servicenow", "jira", "statuspage")
    ]
    print(table(["", "system", "writes", "reads"], per_system, "Per system"))
    print()
    print(
        table(
            ["route", "itsm-sync", "fair", "naive"],
            [
                [
                    route,
                    engine.calls.routes[route],
                    fair.calls.routes[route],
                    naive.calls.routes[route],
                ]
                for route in sorted(
                    set(engine.calls.routes) | set(fair.calls.routes) | set(naive.calls.routes)
                )
            ],
            "Per route",
        )
    )
    print()
    by_kind = [
        [
            kind, engine.by_kind[kind], engine.min_by_kind[kind],
            engine.calls.kind_writes[kind], engine.calls.kind_reads[kind],
            naive.calls.kind_writes[kind], naive.calls.kind_reads[kind],
        ]
        for kind in (*KINDS, "other")
    ]  # fmt: skip
    print(
        table(
            ["change kind", "changes", "min writes", "writes", "reads", "naive w", "naive r"],
            by_kind,
            "Per change kind (calls about the incident changed; naive: its share of the pass)",
        )
    )
    for p in (engine, fair, *([naive] if straw else [])):
        print(
            f"{p.name}: {p.consistent}/{n} incidents consistent everywhere after the phase"
            f" ({p.seconds:.1f}s)"
        )
        for problem in p.problems[:5]:
            print(f"  {problem}")
    print()
    print(
        "min writes: one write per target whose mapped value a change alters; propagated: "
        "changes that need at least one write (no-op edits need none but their reads count)."
    )
    w_ratio = engine.calls.total_writes / engine.minimum
    c_ratio = (engine.calls.total_writes + engine.calls.total_reads) / engine.minimum
    nw_ratio = naive.calls.total_writes / naive.minimum if naive.minimum else float("nan")
    rows = [
        Row("api_calls", "itsm-sync writes / minimum", "<= 1.05", f"{w_ratio:.2f}",
            w_ratio <= 1.05),
        Row("api_calls", "itsm-sync all calls (reads too) / minimum", "<= 1.05 if reads count",
            f"{c_ratio:.2f}", c_ratio <= 1.05),
        Row(
            "api_calls", "consistent after the run", f"{n}/{n}",
            f"{engine.consistent}/{n} (fair baseline {fair.consistent}/{n})",
            engine.consistent == n,
        ),
        Row("api_calls", "fair baseline writes / itsm-sync writes (in our favour)", "-",
            f"{fair.calls.total_writes / max(1, engine.calls.total_writes):.2f}x", None),
        Row("api_calls", "fair baseline calls / itsm-sync calls (in our favour)", "-",
            f"{_total(fair) / max(1, _total(engine)):.2f}x", None),
        Row("api_calls", "fair baseline consistent after the run", "-",
            f"{fair.consistent}/{n}", None),
    ]  # fmt: skip
    if straw:
        rows.append(Row("api_calls", "straw man writes / minimum", "-", f"{nw_ratio:.2f}", None))
    finish(rows, args.json)


if __name__ == "__main__":
    main()
