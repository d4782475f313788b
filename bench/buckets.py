"""The token buckets are never exceeded: 2,000 writes against simulators that enforce the
real limits, and not one 429 (or Statuspage 420).

Limits the simulators enforce during the run (docs/simulators.md): Jira's per-issue write
limit (20 writes per issue in 2 s, ``jira-per-issue-on-write``) and Statuspage's budget
(1 request/s per API key over a rolling 60 s window: 60 per minute). The connectors are built
from the service's default settings (Jira: 5 writes/s per issue, burst 10; Statuspage: 1/s,
burst 1) and driven by 32 threads at once, far faster than the limits allow:

- 1,940 Jira summary edits spread over 20 issues (97 each);
- 60 Statuspage incident edits.

The engine coalesces bursts of edits into one write, so driving it with 2,000 edits would
never reach a bucket; this drives the connectors (buckets, slots, retries) directly. It prints
each system's achieved rate beside the ceiling the limits allow (target: >= 90 % of it).

``python -m bench.buckets [--small]``
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

import httpx

from bench.common import Row, SimulatorProcess, finish, header, parser, people_only, table
from config.settings import JiraSettings, StatuspageSettings
from connectors.base import RemoteRef
from connectors.http import reset_buckets
from connectors.jira import JiraConnector
from connectors.statuspage import StatuspageConnector

MODULE = "bench.buckets"
THREADS = 32
ISSUES = 20


def main() -> None:
    args = parser(__doc__.splitlines()[0] if __doc__ else "").parse_args()
    jira_writes = 388 if args.small else 1940
    sp_writes = 12 if args.small else 60
    header("Buckets never exceeded", MODULE, args.small, {
        "writes": f"{jira_writes} Jira edits over {ISSUES} issues + {sp_writes} Statuspage edits",
        "threads": THREADS,
        "limits enforced": "Jira 20 writes/issue/2 s; Statuspage 60 requests/rolling minute",
        "client": "service defaults: Jira 5/s per issue (burst 10), Statuspage 1/s (burst 1)",
    })  # fmt: skip
    sims = SimulatorProcess()
    sims.start()
    reset_buckets()
    try:
        for name, url in sims.urls.items():
            httpx.post(f"{url}/_sim/seed", json=people_only(name)).raise_for_status()
        jira = JiraConnector(
            JiraSettings.model_validate({"url": sims.urls["jira"], "api_token": "sim-token"})
        )
        sp = StatuspageConnector(
            StatuspageSettings.model_validate(
                {"url": sims.urls["statuspage"] + "/v1", "api_key": "sim-key"}
            )
        )
        fields: dict[str, Any] = {"summary": "bucket", "issuetype": {"name": "Incident"}}
        issues = [
            jira.create("issue", fields, correlation_key=f"itsm-bucket-{i}", look_first=False)
            for i in range(ISSUES)
        ]
        incident = sp.create(
            "incident", {"name": "bucket", "status": "investigating"},
            correlation_key="itsm-bucket-sp", look_first=False,
        )  # fmt: skip
        # Statuspage's rolling window starts empty (setting the limit again empties it).
        httpx.post(
            f"{sims.urls['statuspage']}/_sim/ratelimit", json={"requests_per_minute": 60}
        ).raise_for_status()
        for url in sims.urls.values():
            httpx.delete(f"{url}/_sim/requests").raise_for_status()

        def edit_jira(i: int) -> None:
            ref: RemoteRef = issues[i % ISSUES].ref
            jira.update(ref, {"summary": f"bucket edit {i}"})

        def edit_sp(i: int) -> None:
            sp.update(incident.ref, {"name": f"bucket edit {i}"})

        timings: dict[str, float] = {}

        def run(name: str, fn: Any, n: int) -> None:
            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(THREADS // 2) as pool:
                list(pool.map(fn, range(n)))
            timings[name] = time.monotonic() - t0

        with concurrent.futures.ThreadPoolExecutor(2) as both:
            jobs = [both.submit(run, "jira", edit_jira, jira_writes),
                    both.submit(run, "statuspage", edit_sp, sp_writes)]  # fmt: skip
            for job in jobs:
                job.result()
        limited: dict[str, int] = {}
        for name in ("jira", "statuspage"):
            log = httpx.get(f"{sims.urls[name]}/_sim/requests").json()["requests"]
            limited[name] = sum(1 for r in log if r["status"] in (420, 429))
    finally:
        sims.stop()
    # The ceilings: per issue 20 writes in 2 s = 10/s sustained (our bucket: burst 10 + 5/s);
    # Statuspage 60 per rolling minute = 1/s.
    jira_ceiling = 10.0 * ISSUES  # writes/s the per-issue limit allows (20 in 2 s each)
    sp_ceiling = 1.0  # Statuspage: 1 request/s
    rows_out = [
        ["jira", jira_writes, timings["jira"], jira_writes / timings["jira"], jira_ceiling,
         limited["jira"]],
        ["statuspage", sp_writes, timings["statuspage"], sp_writes / timings["statuspage"],
         sp_ceiling, limited["statuspage"]],
    ]  # fmt: skip
    print(table(["system", "writes", "seconds", "writes/s", "ceiling/s", "429/420"], rows_out,
                "Writes at full speed against the enforced limits"))  # fmt: skip
    total = sum(limited.values())
    # n requests at 1/s from an empty bucket of 1 take n - 1 s: the ceiling for n of them.
    sp_share = (sp_writes / timings["statuspage"]) / (sp_writes / max(1.0, sp_writes - 1))
    rows = [
        Row("buckets", f"429s over {jira_writes + sp_writes} writes at the real limits", "0",
            str(total), total == 0),
        Row("buckets", "Statuspage rate / its 1 request/s ceiling", ">= 90 %",
            f"{sp_share:.0%} ({sp_writes / timings['statuspage']:.2f}/s)", sp_share >= 0.9),
        Row("buckets", "Jira writes/s (20 issues; the per-issue limit allows 10/s each)", "-",
            f"{jira_writes / timings['jira']:.0f}/s (the limit: 20 per issue in 2 s)", None),
    ]  # fmt: skip
    finish(rows, args.json)


if __name__ == "__main__":
    main()
