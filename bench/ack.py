"""Webhook ack latency at a steady 100 requests/s.

The service runs as ``itsm-sync run`` does by default: HTTP in this process, the poller and
the workers in a worker process (``--workers-in-process``: all in this process, as ``run
--workers-in-process``); the simulators run in a process of their own; another, the load
generator, POSTs signed webhook deliveries at a steady rate (open loop: each request leaves at
its scheduled time whether or not earlier ones were answered) and measures, per request, the
time from sending it to having the answer.

Deliveries are real ones in shape: half ServiceNow business-rule deliveries (shared secret
header), half Jira ``jira:issue_updated`` deliveries (``X-Hub-Signature`` HMAC-SHA256), each with
its own delivery id, for the records of synced incidents, each a newer version of its record
than the last. So every delivery is verified, stored (delivery row + observation) and marks its
incident dirty, and the workers reconcile those incidents meanwhile (one comment read each, no
writes: the fields did not change), competing with the webhook handler for the database.

Run on SQLite (a temp file, the default) and, when one is reachable, on PostgreSQL (a fresh
database ``itsm_bench_<random>``, dropped afterwards; ``ITSM_SYNC_BENCH_PG_URL`` names the
server's maintenance database, default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``).

``python -m bench.ack [--small] [--no-postgres] [--workers-in-process]``
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import hashlib
import hmac
import json
import multiprocessing
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import httpx
from sqlmodel import func, select

from bench.common import (
    PG_MAINTENANCE_URL,
    PostgresDatabase,
    Rig,
    Row,
    finish,
    header,
    parser,
    postgres_available,
    summary_ms,
    table,
    wait_for,
)
from service.harness import WEBHOOK_SECRETS
from sync import store

MODULE = "bench.ack"
RATE = 100.0
GOAL_P99_MS = 50.0
Delivery = tuple[str, dict[str, str], bytes]  # path, headers, body
HEAD = (
    "database", "workers", "requests", "errors", "req/s",
    "p50 ms", "p95 ms", "p99 ms", "max ms", "gen. lag max ms",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# The load generator (its own process)
# --------------------------------------------------------------------------------------------


def generate(base_url: str, deliveries: list[Delivery], rate: float, conn: Connection) -> None:
    """POST ``deliveries`` at ``rate`` per second; send back one (scheduled, sent, answered,
    status) per delivery, times in seconds from the start (status 0: no answer)."""
    conn.send(asyncio.run(_generate(base_url, deliveries, rate)))
    conn.close()


class _Pool:
    """Keep-alive HTTP/1.1 connections over asyncio streams: a client that costs the
    generator (sharing 2 cores with the service) as little CPU as possible."""

    MAX_IDLE = 3.0  # uvicorn closes keep-alive connections idle for 5 s: never reuse those

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        now = time.monotonic()
        while self.idle and now - self.idle[-1][0] > self.MAX_IDLE:
            self.idle.pop()[2].close()
        if self.idle:
            _, reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        await reader.readexactly(length)
        self.idle.append((time.monotonic(), reader, writer))
        return int(status_line.split()[1])

    async def close(self) -> None:
        for _, _, writer in self.idle:
            writer.close()


async def _generate(
    base_url: str, deliveries: list[Delivery], rate: float
) -> list[tuple[float, float, float, int]]:
    host, _, port = base_url.removeprefix("http://").partition(":")
    pool = _Pool(host, int(port))
    for _ in range(3):  # open connections up front
        await asyncio.gather(*(pool.request("GET", "/healthz", {}, b"") for _ in range(50)))
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    results: list[tuple[float, float, float, int]] = [(0.0, 0.0, 0.0, 0)] * len(deliveries)

    async def one(i: int, path: str, headers: dict[str, str], body: bytes) -> None:
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        sent = loop.time()
        try:
            status = await pool.request("POST", path, headers, body)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            status = 0
        results[i] = (scheduled - start, sent - start, loop.time() - start, status)

    await asyncio.gather(*(one(i, *d) for i, d in enumerate(deliveries)))
    await pool.close()
    return results


# --------------------------------------------------------------------------------------------
# Deliveries
# --------------------------------------------------------------------------------------------


def deliveries_for(rig: Rig, count: int) -> list[Delivery]:
    """``count`` signed deliveries, alternating ServiceNow and Jira, over the synced incidents,
    each a newer version of its record than any before."""
    links = [x for x in rig.links().values() if "jira" in x]
    sn_records = []
    jira_issues = []
    for x in links:
        sn_records.append(
            rig.sn.get(
                f"/api/now/table/incident/{x['servicenow'].remote_id}",
                params={"sysparm_exclude_reference_link": "true"},
            ).json()["result"]
        )
        jira_issues.append(rig.jira.get(f"/rest/api/2/issue/{x['jira'].remote_id}").json())
    out: list[Delivery] = []
    sn_secret = WEBHOOK_SECRETS["servicenow"]
    jira_secret = WEBHOOK_SECRETS["jira"].encode()
    for i in range(count):
        k = (i // 2) % len(links)
        bump = 1 + i // (2 * len(links))
        if i % 2 == 0:
            record = {**sn_records[k]}
            record["sys_mod_count"] = str(int(record["sys_mod_count"]) + bump)
            body = json.dumps(
                {"table": "incident", "operation": "update", "sys_id": record["sys_id"],
                 "record": record}
            ).encode()  # fmt: skip
            headers = {
                "Content-Type": "application/json",
                "X-ServiceNow-Secret": sn_secret,
                "X-ServiceNow-Delivery": f"bench-{uuid.uuid4().hex}",
            }
            out.append(("/webhooks/servicenow", headers, body))
        else:
            issue = json.loads(json.dumps(jira_issues[k]))
            updated = dt.datetime.strptime(issue["fields"]["updated"], "%Y-%m-%dT%H:%M:%S.%f%z")
            later = updated + dt.timedelta(milliseconds=bump)
            issue["fields"]["updated"] = later.strftime("%Y-%m-%dT%H:%M:%S.") + (
                f"{later.microsecond // 1000:03d}{later.strftime('%z')}"
            )
            body = json.dumps(
                {"timestamp": int(time.time() * 1000), "webhookEvent": "jira:issue_updated",
                 "issue_event_type_name": "issue_generic", "issue": issue}
            ).encode()  # fmt: skip
            signature = "sha256=" + hmac.new(jira_secret, body, hashlib.sha256).hexdigest()
            headers = {
                "Content-Type": "application/json",
                "X-Hub-Signature": signature,
                "X-Atlassian-Webhook-Identifier": str(uuid.uuid4()),
            }
            out.append(("/webhooks/jira", headers, body))
    return out


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    database: str
    workers: bool  # whether the workers ran during the load
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    achieved_rate: float = 0.0
    max_lag_ms: float = 0.0  # how late the generator sent a request, worst case
    accepted: int = 0
    reconciles_during: int = 0
    drain_seconds: float = 0.0
    gc_pauses: list[tuple[int, float]] = field(default_factory=list)  # (generation, seconds)
    remote_reads: int = 0  # the service's calls to the simulators during the load
    remote_writes: int = 0


def accepted(rig: Rig) -> int:
    with store.session_scope(rig.runtime.db, readonly=True) as s:
        return int(
            s.exec(
                select(func.count())
                .select_from(store.WebhookDelivery)
                .where(store.WebhookDelivery.status == "accepted")
            ).one()
        )


class GCPauses:
    """Records the service process's garbage collections (they stop every thread)."""

    def __init__(self, into: list[tuple[int, float]]) -> None:
        self.into = into
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.into.append((info["generation"], time.perf_counter() - self._started))

    def __enter__(self) -> GCPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


def load(rig: Rig, result: Result, deliveries: list[Delivery]) -> None:
    """One load run from a fresh generator process; fills ``result``."""
    assert rig.service is not None
    before = rig.reconciled() if result.workers else 0
    stored_before = accepted(rig)
    for url in rig.sims.urls.values():
        httpx.delete(f"{url}/_sim/stats").raise_for_status()
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=generate, args=(rig.service.url, deliveries, RATE, sender), daemon=True
    )
    process.start()
    sender.close()
    with GCPauses(result.gc_pauses):
        timings: list[tuple[float, float, float, int]] = receiver.recv()
    process.join(timeout=30)
    result.reconciles_during = rig.reconciled() - before if result.workers else 0
    for url in rig.sims.urls.values():
        for route, n in httpx.get(f"{url}/_sim/stats").json().items():
            if route.split(" ")[0] == "GET":
                result.remote_reads += n
            else:
                result.remote_writes += n
    if result.workers:
        t0 = time.monotonic()
        rig.quiet(timeout=120)
        result.drain_seconds = time.monotonic() - t0
    result.accepted = accepted(rig) - stored_before
    for scheduled, sent, answered, status in timings:
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if not 200 <= status < 300:
            result.errors += 1
        result.latencies.append(answered - sent)
        result.max_lag_ms = max(result.max_lag_ms, (sent - scheduled) * 1000)
    span = max(t[1] for t in timings) - min(t[1] for t in timings)
    result.achieved_rate = (len(timings) - 1) / span if span > 0 else 0.0


def run_database(
    database: str, database_url: str | None, seconds: float, incidents: int, args: Any
) -> list[Result]:
    """Two load runs on one service: workers running, then workers paused."""
    with Rig(
        database_url=database_url,
        sync={"workers": 4, "pg_notify": not args.no_pg_notify},
        separate_simulators=True,
        worker_process=not args.workers_in_process,
        freeze_gc=not args.no_gc_freeze,
    ) as rig:
        if args.no_write_lock:  # diagnostic: this process's SQLite writers as before
            store.engine_hooks(rig.runtime.db).write_lock = None
        for i in range(incidents):
            rig.open_p1(f"Checkout fails ({i})")
        wait_for(
            lambda: sum(1 for x in rig.links().values() if "jira" in x) >= incidents,
            "Jira issues",
            60,
        )
        rig.quiet()
        count = int(RATE * seconds)
        deliveries = deliveries_for(rig, 2 * count)  # the second half: newer versions still
        running = Result(database, workers=True)
        load(rig, running, deliveries[:count])
        rig.stop_workers()  # the webhook path alone: deliveries are stored and queued
        paused = Result(database, workers=False)
        load(rig, paused, deliveries[count:])
    return [running, paused]


def main() -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--no-postgres", action="store_true", help="SQLite only")
    p.add_argument(
        "--workers-in-process",
        action="store_true",
        help="the poller and the workers in the service's process (run --workers-in-process)",
    )
    p.add_argument(
        "--no-pg-notify",
        action="store_true",
        help="diagnostic: PostgreSQL without NOTIFY after queued commits (sync.pg_notify: off)",
    )
    p.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="diagnostic: skip the gc.freeze() that run does after start-up",
    )
    p.add_argument(
        "--no-write-lock",
        action="store_true",
        help="diagnostic: no Python write lock before SQLite's (the service's process only)",
    )
    args = p.parse_args()
    seconds = 2.0 if args.small else 6.0  # 600 deliveries per case
    incidents = 5 if args.small else 20
    pg_problem = "skipped (--no-postgres)" if args.no_postgres else postgres_available()
    settings = {
        "load": f"{RATE:.0f} deliveries/s for {seconds:.0f} s, open loop, from its own process",
        "deliveries": f"alternating ServiceNow / Jira, signed, distinct ids, {incidents} incidents",
        "service": (
            "HTTP, 4 workers and the poller (every 1 h) in one process (run --workers-in-process)"
            if args.workers_in_process
            else "HTTP in one process, 4 workers and the poller (every 1 h) in its worker"
            " process (as itsm-sync run)"
        ),
        "processes": "the service's, the simulators', the load generator's",
        "workers": "per database two runs on one service: workers running (reconciling"
        " meanwhile), then workers stopped (the webhook path alone)",
        "databases": "SQLite (temp file)"
        + ("" if pg_problem else f", PostgreSQL (fresh database on {PG_MAINTENANCE_URL})"),
    }
    extra = [
        f"--{name.replace('_', '-')}"
        for name in ("workers_in_process", "no_pg_notify", "no_gc_freeze", "no_write_lock")
        if getattr(args, name)
    ]
    if extra:
        settings["as asked"] = " ".join(extra)
    header("Webhook ack latency", MODULE, args.small, settings, extra)
    if pg_problem:
        print(f"PostgreSQL not measured: {pg_problem}\n")
    results = run_database("sqlite", None, seconds, incidents, args)
    if not pg_problem:
        with PostgresDatabase() as pg:
            results += run_database("postgresql", pg.url, seconds, incidents, args)
    rows = []
    for r in results:
        s = summary_ms(r.latencies)
        workers = "running" if r.workers else "paused"
        rows.append([r.database, workers, int(s["n"]), r.errors, r.achieved_rate])
        rows[-1] += [s["p50"], s["p95"], s["p99"], s["max"], r.max_lag_ms]
    print(
        table(
            HEAD,
            rows,
            "Client-observed webhook POST latency",
        )
    )  # fmt: skip
    print()
    for r in results:
        print(
            f"{r.database}, workers {'running' if r.workers else 'paused'}: answers "
            f"{dict(sorted(r.statuses.items()))}; {r.accepted} deliveries stored; "
            f"{r.reconciles_during} reconciles during the load "
            f"({r.remote_reads} remote reads, {r.remote_writes} remote writes)"
            + (f"; queue drained {r.drain_seconds:.1f}s after it" if r.workers else "")
        )
        full = [p for g, p in r.gc_pauses if g == 2]
        print(
            f"  garbage collections in the HTTP process meanwhile: {len(r.gc_pauses)}, "
            f"of which {len(full)} full (gen 2), longest {max(full, default=0) * 1000:.0f} ms; "
            f"all: {sum(p for _, p in r.gc_pauses) * 1000:.0f} ms in total"
        )
    print(
        "gen. lag: how late the generator sent its worst request (its own scheduling delay, "
        "not counted in the latency)."
    )
    summary = []
    for r in results:
        p99 = summary_ms(r.latencies)["p99"]
        workers = "workers running" if r.workers else "workers paused"
        summary.append(
            Row("ack", f"ack p99 @100/s, {r.database}, {workers}", f"<= {GOAL_P99_MS:.0f} ms",
                f"{p99:.1f} ms ({r.errors} errors)", p99 <= GOAL_P99_MS and r.errors == 0)
        )  # fmt: skip
    finish(summary, args.json)


if __name__ == "__main__":
    main()
