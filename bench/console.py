"""How long the console's pages take with 10,000 incidents in the store.

Fills a fresh store (SQLite in a temp folder, or PostgreSQL with ``--postgres``) with the
sample history of :mod:`service.sample` (incidents linked on the three systems, audit trails,
postmortems with action items, parked items), starts the service (no poller, no workers: the
pages alone are measured), signs in as an admin (who sees every page) and loads each page
``--rounds`` times over HTTP after one warm-up load. The figure is the 95th percentile; the
goal is under 200 ms for every page.

``python -m bench.console [--small] [--incidents 10000] [--rounds 20] [--postgres]``
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.common import (
    PG_MAINTENANCE_URL,
    PostgresDatabase,
    Row,
    finish,
    header,
    parser,
    percentile,
    postgres_available,
    table,
)
from service.harness import Service, settings_for
from service.sample import Urls, populate
from simulators.runner import ClusterConfig, SimulatorCluster

MODULE = "bench.console"
GOAL_MS = 200.0
TOKEN = "bench-console-admin"


def _signed_in(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    form = client.get("/signin").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    client.post("/signin", data={"csrf": csrf.group(1), "token": TOKEN, "next": "/"})
    if "itsm_console" not in client.cookies:
        raise SystemExit("could not sign in to the console")
    return client


def _measure(
    client: httpx.Client, path: str, rounds: int, before: Callable[[], object] = lambda: None
) -> tuple[list[float], list[float]]:
    """Wall-clock ms per load, and CPU ms this process spent on it (the service runs in this
    process: its CPU time does not grow when other processes crowd the machine)."""
    client.get(path).raise_for_status()  # warm-up: templates compiled, caches filled
    wall, cpu = [], []
    for _ in range(rounds):
        before()
        t0, c0 = time.perf_counter(), time.process_time()
        answer = client.get(path)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        answer.raise_for_status()
    return wall, cpu


def main() -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--incidents", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--postgres", action="store_true", help="the store on PostgreSQL")
    args = p.parse_args()
    count = 1_000 if args.small else args.incidents
    rounds = 5 if args.small else args.rounds
    extra = [f"--incidents={args.incidents}"] if args.incidents != 10_000 else []
    header(
        "Console pages", MODULE, args.small,
        {"incidents": count, "rounds per page": rounds, "store": "PostgreSQL" if args.postgres
         else "SQLite", "goal": f"95th percentile < {GOAL_MS:g} ms per page"},
        extra,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="itsm-bench-console-") as folder:
        pg: PostgresDatabase | None = None
        if args.postgres:
            problem = postgres_available(PG_MAINTENANCE_URL)
            if problem:
                raise SystemExit(f"PostgreSQL: {problem}")
            pg = PostgresDatabase(PG_MAINTENANCE_URL).__enter__()
            url = pg.url
        else:
            url = f"sqlite:///{Path(folder) / 'console.db'}"
        try:
            rows = run(url, count, rounds)
        finally:
            if pg is not None:
                pg.__exit__(None, None, None)
    finish(rows, args.json)


def run(database_url: str, count: int, rounds: int) -> list[Row]:
    config = ClusterConfig(servicenow_port=0, jira_port=0, statuspage_port=0, seed=False)
    with SimulatorCluster(config) as cluster:
        settings = settings_for(
            cluster, database_url, api_tokens=[{"name": "bench", "token": TOKEN, "role": "admin"}]
        )
        with Service(settings, poll=False, workers=False) as service:
            t0 = time.perf_counter()
            sample = populate(
                service.runtime.db,
                count=count,
                urls=Urls(
                    cluster.urls["servicenow"], cluster.urls["jira"], cluster.urls["statuspage"]
                ),
            )
            print(f"store filled with {count} incidents in {time.perf_counter() - t0:.1f} s\n")
            client = _signed_in(service.url)
            gated = sample.gated[len(sample.gated) // 2]
            pages = {
                "overview": "/",
                "overview, last page": "/?page=1000000",
                "incident": f"/incidents/{gated}",
                "change manager (last 4 weeks)": "/changes",
                "audit CSV (last 4 weeks)": "/changes/audit.csv?since="
                + time.strftime("%Y-%m-%d", time.gmtime(time.time() - 28 * 86400)),
                "admin": "/admin",
            }
            results = []
            for name, path in pages.items():
                times, cpu = _measure(client, path, rounds)
                results.append(
                    (name, path, percentile(times, 50), percentile(times, 95), percentile(cpu, 50))
                )
            # The KPIs are computed at most once a minute: the page when they are due again.
            kpis = service.app.state.console_kpis
            times, cpu = _measure(client, "/changes", rounds, before=kpis.clear)
            results.append(("change manager, KPIs recomputed", "/changes", percentile(times, 50),
                            percentile(times, 95), percentile(cpu, 50)))  # fmt: skip
    print(
        table(
            ["page", "path", "median ms", "p95 ms", "CPU ms (median)"],
            [[n, pth[:40], f"{m:.1f}", f"{p95:.1f}", f"{c:.1f}"] for n, pth, m, p95, c in results],
            f"Console pages with {count} incidents",
        )
    )
    rows = []
    for name, _path, _median, p95, _cpu in results:
        ok = p95 < GOAL_MS
        print(
            f"{'PASS' if ok else 'FAIL'} console-page-ms: {p95:.0f} (target < {GOAL_MS:g}) {name}"
        )
        rows.append(Row("console", f"{name} p95", f"< {GOAL_MS:g} ms", f"{p95:.0f} ms", ok))
    return rows


if __name__ == "__main__":
    main()
