"""Backfill paced to the configured rate limits: 10,000 existing ServiceNow incidents, each
given its Jira issue and linked, in at most 1.1x the time the rate limits allow.

The simulators run in a process of their own; 10,000 open P1/P2 ServiceNow incidents are
loaded through the simulator's ``/_sim/seed`` (a few bulk calls, not the API). The service is
configured with explicit rate limits and the simulators enforce the same figures
(``/_sim/ratelimit``: ``requests_per_second`` over every API call, a token bucket that holds
0.2 s of calls; a call past it is answered 429 with ``Retry-After``). Then the real
``itsm-sync backfill --since 2000-01-01`` runs as an admin would run it (a subprocess, its own
SQLite file), and this prints, from the simulators' counts (``/_sim/stats?by=status``):

- the **floor**: max over systems of (the calls that system answered / its configured rate):
  no client that makes those calls at those limits can be faster;
- the backfill's elapsed time and its ratio to the floor (target <= 1.1x);
- the share of calls answered 429 (target <= 0.5 %);
- calls per incident on each system (target <= 2.5 on the target system: create + link + at
  most one read; the source's list pages and any write-back count on the source);
- that every incident ended linked exactly once: one Jira issue per ServiceNow incident (no
  duplicate, none missing) and one link per record in the store.

So that ``make bench`` keeps to its time, a backfill still running at ``--deadline`` times the
floor the limits allow for its creates (2 Jira calls per incident; default 2x) is interrupted
(SIGINT, as Ctrl-C) and reported as not finished, with how many incidents it had linked.
``--interrupt-at F`` interrupts it once F of the incidents have their Jira issue and runs it
again to the end (the resumability check: nothing duplicated, nothing missing; the elapsed time
is both runs').

``python -m bench.backfill [--small] [--incidents N] [--jira-rate R] [--servicenow-rate R]
[--workers N] [--worker-processes N] [--deadline X] [--interrupt-at F]``
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from bench.common import (
    ALICE_SN,
    CHECKOUT_SN,
    Row,
    SimulatorProcess,
    finish,
    header,
    load_average,
    parser,
    people_only,
    table,
)
from service.harness import simulator_env

MODULE = "bench.backfill"
GOAL_RATIO = 1.1
GOAL_429 = 0.005
GOAL_CALLS = 2.5
# The limits the service is configured with and the simulators enforce (requests/s). Chosen
# so that the floor for 10,000 incidents is about 150 s (make bench must stay <= 10 minutes):
# Jira needs 2 calls per incident (the create and one read).
JIRA_RATE = 135.0
SERVICENOW_RATE = 100.0
# The simulators' bucket holds this many seconds of calls: it absorbs the client's scheduling
# jitter (a thread that wakes 20 ms late, then the next on time), not a burst: the service's
# bucket holds 1. (With 10 at 135/s, a loaded machine drew 429s.)
BURST_SECONDS = 0.2
WORKERS = 32
# As many as the cores: one process's interpreter lock would bound the reconcile.
WORKER_PROCESSES = 2
DEADLINE = 2.0  # interrupt a backfill still running at this many times the creates' floor
SEED_CHUNK = 1000
SYSTEMS = ("servicenow", "jira", "statuspage")


def _incidents(n: int, run: str) -> list[dict[str, Any]]:
    """n open incidents, P1 and P2 (severities that get a Jira issue), titles unique."""
    return [
        {
            "short_description": f"backfill {run} {i:05d}",
            "impact": "1",
            "urgency": "1" if i % 2 else "2",
            "state": "1",
            "assigned_to": ALICE_SN,
            "business_service": CHECKOUT_SN,
        }
        for i in range(n)
    ]


def _seed(urls: dict[str, str], n: int, run: str) -> float:
    t0 = time.monotonic()
    with httpx.Client(timeout=120) as client:
        for name, url in urls.items():
            client.post(f"{url}/_sim/seed", json=people_only(name)).raise_for_status()
        rows = _incidents(n, run)
        for i in range(0, n, SEED_CHUNK):
            client.post(
                f"{urls['servicenow']}/_sim/seed", json={"incident": rows[i : i + SEED_CHUNK]}
            ).raise_for_status()
    return time.monotonic() - t0


def _burst(rate: float) -> int:
    return max(1, round(rate * BURST_SECONDS))


def _limit(urls: dict[str, str], rates: dict[str, float]) -> None:
    with httpx.Client(timeout=30) as client:
        for system, rate in rates.items():
            client.post(
                f"{urls[system]}/_sim/ratelimit",
                json={"requests_per_second": rate, "requests_burst": _burst(rate)},
            ).raise_for_status()
            client.delete(f"{urls[system]}/_sim/stats").raise_for_status()
        client.delete(f"{urls['statuspage']}/_sim/stats").raise_for_status()


def _stats(urls: dict[str, str]) -> dict[str, collections.Counter[str]]:
    """system -> "METHOD route status" -> count."""
    out: dict[str, collections.Counter[str]] = {}
    with httpx.Client(timeout=30) as client:
        for system in SYSTEMS:
            r = client.get(f"{urls[system]}/_sim/stats", params={"by": "status"})
            r.raise_for_status()
            out[system] = collections.Counter(
                {k: v for k, v in r.json().items() if " /_sim/" not in k}
            )
    return out


def _env(
    sims: SimulatorProcess, folder: Path, rates: dict[str, float], workers: int, processes: int
) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_SYNC_")}
    env.update(simulator_env(sims, f"sqlite:///{folder / 'itsm-sync.db'}"))
    env.update(
        {
            "ITSM_SYNC_SERVICENOW__REQUESTS_PER_SECOND": str(rates["servicenow"]),
            "ITSM_SYNC_JIRA__REQUESTS_PER_SECOND": str(rates["jira"]),
            "ITSM_SYNC_SYNC__WORKERS": str(workers),
            "ITSM_SYNC_SYNC__WORKER_PROCESSES": str(processes),
            "COLUMNS": "120",
        }
    )
    return env


def _verify(urls: dict[str, str], db: Path, n: int, run: str) -> dict[str, int]:
    """Every seeded incident linked exactly once: counts of what is wrong (all 0 when not)."""
    with httpx.Client(timeout=300) as client:
        issues = client.get(f"{urls['jira']}/_sim/state").json()["issues"]
    summaries = collections.Counter(str(i["fields"].get("summary", "")) for i in issues.values())
    titles = {f"backfill {run} {i:05d}" for i in range(n)}
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        links = conn.execute(text("SELECT incident_id, system, remote_id FROM link")).all()
    engine.dispose()
    by_incident: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for incident_id, system, _ in links:
        by_incident[incident_id][system] += 1
    jira_ids = {str(i["id"]) for i in issues.values()}
    linked_jira = {remote for _, system, remote in links if system == "jira"}
    sn_links = collections.Counter(remote for _, system, remote in links if system == "servicenow")
    pairs = [c for c in by_incident.values() if c["servicenow"]]
    return {
        "issues missing": sum(1 for t in titles if summaries[t] == 0),
        "duplicate issues": sum(summaries[t] - 1 for t in titles if summaries[t] > 1),
        "incidents without a Jira link": sum(1 for c in pairs if c["jira"] == 0),
        "records linked twice": sum(v - 1 for v in sn_links.values() if v > 1)
        + sum(c["jira"] - 1 for c in pairs if c["jira"] > 1),
        "links to no issue": len(linked_jira - jira_ids),
        "incidents not linked": max(0, n - len(sn_links)),
    }


class Backfill:
    """``itsm-sync backfill`` in a subprocess: its elapsed time, CPU time and output."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env, self.folder = env, folder
        self.elapsed = 0.0
        self.cpu = 0.0
        self.interrupted = False
        self.returncode = 0
        self.output = ""

    def run(self, stop_when: Any = None, check_every: float = 1.0) -> None:
        """Run to the end, or until ``stop_when()`` holds: then SIGINT (SIGKILL 20 s later)."""
        out_file = self.folder / f"backfill-{time.monotonic_ns()}.out"
        t0 = time.monotonic()
        killed_at = math.inf
        self.interrupted = False
        with out_file.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "service", "backfill", "--since", "2000-01-01"],
                env=self.env, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            # os.wait4, not Popen.wait: it also tells the child's CPU time.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            while pid == 0:
                if (
                    stop_when is not None
                    and not self.interrupted
                    and stop_when(time.monotonic() - t0)
                ):
                    self.interrupted = True
                    proc.send_signal(signal.SIGINT)
                    killed_at = time.monotonic() + 20
                if self.interrupted and time.monotonic() > killed_at:
                    proc.kill()
                time.sleep(check_every if not self.interrupted else 0.1)
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        self.elapsed += time.monotonic() - t0
        self.cpu += usage.ru_utime + usage.ru_stime
        self.returncode = os.waitstatus_to_exitcode(status)
        self.output += out_file.read_text(errors="replace")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _issues_made(url: str) -> int:
    counts = httpx.get(f"{url}/_sim/stats", params={"by": "status"}, timeout=30).json()
    return int(counts.get("POST /rest/api/{version}/issue 201", 0))


def main() -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--incidents", type=int, help="how many (default 10,000; --small 1,000)")
    p.add_argument("--jira-rate", type=float, default=JIRA_RATE, help="requests/s")
    p.add_argument("--servicenow-rate", type=float, default=SERVICENOW_RATE, help="requests/s")
    p.add_argument("--workers", type=int, default=WORKERS, help="sync.workers")
    p.add_argument(
        "--worker-processes", type=int, default=WORKER_PROCESSES,
        help="sync.worker_processes: the reconcile's processes",
    )  # fmt: skip
    p.add_argument(
        "--deadline", type=float, default=DEADLINE,
        help="interrupt a backfill still running at this many times the creates' floor",
    )  # fmt: skip
    p.add_argument(
        "--interrupt-at", type=float, metavar="F",
        help="interrupt once this fraction of the incidents has its issue, then run it again",
    )  # fmt: skip
    args = p.parse_args()
    n = args.incidents or (1000 if args.small else 10_000)
    rates = {"servicenow": args.servicenow_rate, "jira": args.jira_rate}
    extra = []
    for flag, value, default in (
        ("--incidents", args.incidents, None),
        ("--jira-rate", args.jira_rate, JIRA_RATE),
        ("--servicenow-rate", args.servicenow_rate, SERVICENOW_RATE),
        ("--workers", args.workers, WORKERS),
        ("--worker-processes", args.worker_processes, WORKER_PROCESSES),
        ("--deadline", args.deadline, DEADLINE),
        ("--interrupt-at", args.interrupt_at, None),
    ):
        if value is not None and value != default:
            extra += [flag, f"{value:g}"]
    # The least the creates need: a create and one read per incident on Jira.
    creates_floor = 2 * n / rates["jira"]
    deadline = args.deadline * creates_floor
    header("Backfill paced to the rate limits", MODULE, args.small, {
        "incidents": f"{n:,} open ServiceNow P1/P2 incidents, state New (each gets a Jira "
        "issue; seeded through /_sim/seed)",
        "rate limits": f"ServiceNow {rates['servicenow']:g}/s, Jira {rates['jira']:g}/s "
        "(the service's requests_per_second, burst 1; the simulators enforce the same rates, "
        f"buckets of {_burst(rates['servicenow'])} and {_burst(rates['jira'])}: "
        f"{BURST_SECONDS:g} s of calls); Statuspage 1/s (its real budget)",
        "sync.workers": args.workers,
        "sync.worker_processes": f"{args.worker_processes} (the reconcile's processes, "
        "sharing the workers and the rate limits)",
        "command": "itsm-sync backfill --since 2000-01-01 (a subprocess, SQLite)",
        "deadline": f"{deadline:.0f} s ({args.deadline:g} x the creates' floor of "
        f"{creates_floor:.0f} s: 2 Jira calls per incident)",
        **({"interrupted": f"once {args.interrupt_at:.0%} have their issue, then run again"}
           if args.interrupt_at else {}),
    }, extra)  # fmt: skip
    run = dt.datetime.now(dt.UTC).strftime("%H%M%S")
    children_before = _children_cpu()
    sims = SimulatorProcess()
    sims.start()
    try:
        with tempfile.TemporaryDirectory(prefix="itsm-bench-backfill-") as tmp:
            folder = Path(tmp)
            seeded = _seed(sims.urls, n, run)
            print(f"seeded {n:,} incidents in {seeded:.1f} s (/_sim/seed)", flush=True)
            _limit(sims.urls, rates)
            load0 = load_average()
            backfill = Backfill(
                _env(sims, folder, rates, args.workers, args.worker_processes), folder
            )
            if args.interrupt_at:
                at = math.ceil(n * args.interrupt_at)
                backfill.run(lambda _: _issues_made(sims.urls["jira"]) >= at, check_every=0.2)
                made = _issues_made(sims.urls["jira"])
                print(f"interrupted after {backfill.elapsed:.1f} s with {made:,} issues made; "
                      "running it again", flush=True)  # fmt: skip
                backfill.run(lambda t: t > deadline)
            else:
                backfill.run(lambda t: t > deadline)
            load1 = load_average()
            lines = [ln for ln in backfill.output.splitlines() if ln.strip()]
            ok = backfill.returncode == 0 and not backfill.interrupted
            print("\n".join(f"  | {ln}" for ln in (lines[-6:] if ok else lines[-40:])))
            stats = _stats(sims.urls)
            wrong = _verify(sims.urls, folder / "itsm-sync.db", n, run)
    finally:
        sims.stop()
    elapsed, cpu = backfill.elapsed, backfill.cpu
    # The simulators' process has ended and been waited for: its CPU time is the children's
    # less the backfill's (seeding and counting included).
    sims_cpu = _children_cpu() - children_before - cpu
    answered: dict[str, int] = {}
    refused: dict[str, int] = {}
    for system, counts in stats.items():
        refused[system] = sum(v for k, v in counts.items() if k.endswith((" 429", " 420")))
        answered[system] = sum(counts.values()) - refused[system]
    floors = {s: answered[s] / rates[s] for s in rates}
    floors["statuspage"] = answered["statuspage"] / 1.0
    floor = max(floors.values())
    bound = max(floors, key=lambda s: floors[s])
    ratio = elapsed / floor if floor else math.nan
    total = sum(answered.values()) + sum(refused.values())
    limited = sum(refused.values())
    # Per incident: per issue made (all n when it finished; fewer when interrupted).
    made = max(1, stats["jira"].get("POST /rest/api/{version}/issue 201", 0))
    share = limited / total if total else 0.0
    print(
        table(
            ["system", "rate/s", "calls", "429s", "calls/incident", "floor s"],
            [
                [s, rates.get(s, 1.0), answered[s], refused[s], answered[s] / made, floors[s]]
                for s in SYSTEMS
            ],
            "Calls the backfill made (the simulators' counts)",
        )
    )
    print()
    by_route = [
        [f"{system} {key}", v] for system, counts in stats.items() for key, v in counts.items()
    ]
    print(table(["route and answer", "calls"], sorted(by_route)))
    print()
    state = "finished" if ok else (
        f"INTERRUPTED at the deadline ({deadline:.0f} s)" if backfill.interrupted
        else f"FAILED (exit status {backfill.returncode})"
    )  # fmt: skip
    print(
        f"backfill {state}: floor {floor:.1f} s ({bound}), elapsed {elapsed:.1f} s = "
        f"{ratio:.2f}x the floor; 429s {limited} of {total} calls ({share:.2%}); load average "
        f"{load0:.1f} at start, {load1:.1f} at the end"
    )
    print(
        f"the backfill process and its {args.worker_processes} reconcile process(es) used "
        f"{cpu:.1f} CPU-seconds ({cpu / made * 1000:.1f} ms per incident made, {made:,}; to "
        f"keep up with a floor of {2 * 1000 / rates['jira']:.1f} ms per incident, each "
        "process needs less than that times the processes, on a core of its own); the "
        "simulators "
        f"{sims_cpu:.1f} CPU-seconds ({sims_cpu / made * 1000:.1f} ms per incident, seeding "
        "included)"
    )
    print("linked exactly once: " + ", ".join(f"{k} {v}" for k, v in wrong.items()))
    linked = n - wrong["incidents not linked"] - wrong["incidents without a Jira link"]
    jira_calls = answered["jira"] / made
    rows = [
        Row("backfill", f"{n:,} incidents: elapsed / floor ({floor:.0f} s, {bound})",
            f"<= {GOAL_RATIO}x",
            f"{ratio:.2f}x ({elapsed:.0f} s, load {load0:.1f}-{load1:.1f})" if ok else
            f"not finished: {state}, {linked:,} of {n:,} linked after {elapsed:.0f} s",
            ok and ratio <= GOAL_RATIO),
        Row("backfill", "calls answered 429", f"<= {GOAL_429:.1%}",
            f"{share:.2%} ({limited} of {total})", share <= GOAL_429),
        Row("backfill", "Jira calls per incident (create + link + reads)", f"<= {GOAL_CALLS}",
            f"{jira_calls:.2f}" + ("" if ok else f" over the {made:,} made before the run "
                                   "stopped (graded on a finished run only)"),
            ok and jira_calls <= GOAL_CALLS),
        Row("backfill", "ServiceNow calls per incident (its list pages, comment reads)", "-",
            f"{answered['servicenow'] / made:.2f}", None),
        Row("backfill", "backfill process CPU per incident made", "-",
            f"{cpu / made * 1000:.1f} ms ({cpu:.0f} s for {made:,})", None),
        Row("backfill", "incidents linked exactly once (no duplicate, none missing)",
            f"{n:,}", "all" if not any(wrong.values()) else
            ", ".join(f"{k} {v}" for k, v in wrong.items() if v),
            ok and not any(wrong.values())),
    ]  # fmt: skip
    finish(rows, args.json)


if __name__ == "__main__":
    main()
