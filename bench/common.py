"""What the benchmarks share: the simulators and the service wired together over real HTTP
(as ``tests/e2e`` does), request counting from the simulators, percentiles, tables and the
summary rows that ``bench.run_all`` collects.

Nothing here changes how the service works: the service is ``service.harness.Service`` with
settings from ``service.harness.settings_for``; only the numbers a benchmark may tune for the
run (Statuspage's proactive budget, the poll interval, the number of workers) are overridden,
and every script prints the settings it used.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import multiprocessing
import os
import platform
import resource
import shlex
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from sqlalchemy import create_engine, make_url
from sqlmodel import select

from connectors.http import reset_buckets
from service.harness import Service, settings_for, sqlite_url
from service.harness import wait_for as harness_wait_for
from simulators.runner import ClusterConfig, SimulatorCluster
from sync import store

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
PYTHON = ".venv/bin/python"
ADMIN_TOKEN = "bench-admin-token"
ALICE_SN = "a11ce000000000000000000000000001"
BOB_SN = "b0b00000000000000000000000000002"
CAROL_SN = "ca401000000000000000000000000003"
PEOPLE_SN = (ALICE_SN, BOB_SN, CAROL_SN)
PEOPLE_JIRA = ("5b10a2844c20165700ede201", "5b10a2844c20165700ede202", "5b10a2844c20165700ede203")
CHECKOUT_SN = "5e000000000000000000000000000001"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# The benchmark's own requests (people's edits) carry this User-Agent, so that the service's
# calls can be told apart in the simulators' request logs.
BENCH_UA = "itsm-sync-bench"
PG_MAINTENANCE_URL = os.environ.get(
    "ITSM_SYNC_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


# --------------------------------------------------------------------------------------------
# Command line, results
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the run_all summary: a goal and what this run measured against it."""

    benchmark: str
    metric: str
    goal: str
    result: str
    passed: bool | None  # None: reported, no goal to pass or fail


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--small", action="store_true", help="a quick run (smaller sizes)")
    p.add_argument("--json", metavar="FILE", help="also write the summary rows to FILE (run_all)")
    return p


def command(module: str, small: bool, *extra: str) -> str:
    """The command line that reproduces a run, from the repository root."""
    parts = [PYTHON, "-m", module, *(["--small"] if small else []), *extra]
    return " ".join(shlex.quote(p) for p in parts)


def header(
    title: str, module: str, small: bool, settings: dict[str, Any], extra: Sequence[str] = ()
) -> None:
    print(f"== {title} ({'--small' if small else 'full size'}) ==")
    print(f"reproduce: {command(module, small, *extra)}")
    print(
        f"machine: {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
    )
    for key, value in settings.items():
        print(f"  {key}: {value}")
    print(load_note())
    print()
    _WATCH.start()


class MachineWatch:
    """How much CPU *other* processes used while a benchmark ran: the machine's busy time
    (``/proc/stat``) less this process's and its finished children's."""

    def __init__(self) -> None:
        self._busy = 0.0
        self._ours = 0.0
        self._at = 0.0

    @staticmethod
    def _machine_busy() -> float:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return math.nan
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _our_cpu() -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime

    def start(self) -> None:
        self._busy, self._ours, self._at = self._machine_busy(), self._our_cpu(), time.time()

    def report(self) -> str:
        seconds = time.time() - self._at
        others = (self._machine_busy() - self._busy) - (self._our_cpu() - self._ours)
        share = others / (seconds * (os.cpu_count() or 1)) if seconds > 0 else math.nan
        note = (
            f"other processes used {max(others, 0.0):.1f} CPU-seconds during this benchmark's "
            f"{seconds:.0f} s ({max(share, 0.0):.0%} of the machine; a database server counts here)"
        )
        if share > 0.1:
            note += " -- timings were disturbed"
        return note


_WATCH = MachineWatch()


def tree_cpu(root: int | None = None) -> dict[int, float]:
    """CPU seconds (user + system) used so far by ``root`` (default: this process) and each
    of its live descendants, by pid, from ``/proc`` (empty where there is none)."""
    root = os.getpid() if root is None else root
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parent[int(entry)] = int(rest[1])
        used[int(entry)] = (int(rest[11]) + int(rest[12])) / tick
    out: dict[int, float] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        if pid in used:
            out[pid] = used[pid]
        frontier += [child for child, up in parent.items() if up == pid]
    return out


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the process tree used between two :func:`tree_cpu` readings (a process
    started between them counts whole; one that ended is missed, so it is a lower bound)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def load_average() -> float:
    """The 1-minute load average (0 where the system does not tell)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def python_speed(rounds: int = 10) -> float:
    """How fast this machine runs plain Python: millions of steps a second of a fixed loop
    (dict, string and call work, as the service does), the best of ``rounds``.

    Two-core VMs differ by 2x and more in this between sessions, and every CPU-bound figure
    differs with it: a figure is comparable to another machine's only beside this one. It
    varies by ~20 % from one call to the next on a shared VM (hence the best of several).
    """

    def step(i: int, d: dict[str, int]) -> int:
        key = f"k{i % 64}"
        d[key] = d.get(key, 0) + i
        return len(key)

    best = math.inf
    n = 100_000
    for _ in range(rounds):
        d: dict[str, int] = {}
        t0 = time.perf_counter()
        total = 0
        for i in range(n):
            total += step(i, d)
        best = min(best, time.perf_counter() - t0)
    return n / best / 1e6


def load_note() -> str:
    """The machine's load average (which includes a previous benchmark's own processes for
    about a minute; the report at the end tells what *other* processes used)."""
    return f"load average (1 min) at start: {load_average():.2f} on {os.cpu_count()} CPUs"


def speed_note(speed: float) -> str:
    return f"python speed: {speed:.2f} M steps/s (bench.common.python_speed: a fixed loop)"


def finish(rows: Sequence[Row], json_path: str | None) -> None:
    print(_WATCH.report())
    if json_path:
        Path(json_path).write_text(json.dumps([asdict(r) for r in rows], indent=1))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str = "") -> str:
    """A plain text table, numbers right-aligned."""
    body = [[_cell(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)
    ]
    numeric = [all(_is_number(r[i]) for r in body) and bool(body) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    out = [title] if title else []
    out += [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in body]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return text == "-"
    return True


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), linear between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean of values given in seconds, in milliseconds."""
    ms = [v * 1000 for v in values]
    return {
        "n": float(len(ms)),
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else math.nan,
        "mean": sum(ms) / len(ms) if ms else math.nan,
    }


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """service.harness.wait_for with the benchmarks' longer default timeout."""
    return harness_wait_for(probe, what, timeout)


# --------------------------------------------------------------------------------------------
# Databases
# --------------------------------------------------------------------------------------------


class PostgresDatabase:
    """A uniquely named PostgreSQL database for one run, dropped at the end."""

    def __init__(self, maintenance_url: str = PG_MAINTENANCE_URL) -> None:
        self.maintenance = make_url(maintenance_url)
        self.name = f"itsm_bench_{uuid.uuid4().hex[:8]}"
        self.url = self.maintenance.set(database=self.name).render_as_string(hide_password=False)
        self._admin = create_engine(
            self.maintenance, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
        )

    def __enter__(self) -> PostgresDatabase:
        with self._admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc: object) -> None:
        with self._admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self._admin.dispose()


def postgres_available(maintenance_url: str = PG_MAINTENANCE_URL) -> str:
    """'' when a database can be made there, else why not."""
    try:
        with PostgresDatabase(maintenance_url):
            pass
    except Exception as exc:  # any failure means: report SQLite only, and say why
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return ""


# --------------------------------------------------------------------------------------------
# The simulators and the service
# --------------------------------------------------------------------------------------------


def people_only(system: str) -> Any:
    """The default fixtures without their sample incidents (every benchmark makes its own)."""
    data = json.loads((ROOT / "simulators" / "fixtures" / f"{system}.json").read_text())
    for key in ("incident", "issues", "incidents"):
        if isinstance(data, dict) and key in data:
            data[key] = []
    return data


DEFAULT_SYNC: dict[str, Any] = {
    # The safety-net poll would add its list reads to whatever window is measured; it runs
    # once at start and then not again during a benchmark.
    "poll_interval_seconds": 3600,
    "workers": 2,
}
# Statuspage's real budget: 1 request/s per API key over a rolling 60 s window, which the
# simulator enforces (60 per minute); the client's bucket is the service's default.
REAL_STATUSPAGE: dict[str, Any] = {"requests_per_second": 1.0, "burst": 1.0}


def _serve_simulators(conn: Connection, seed: bool = False) -> None:
    """In a child process: run the simulators on free ports until told to stop."""
    cluster = SimulatorCluster(
        ClusterConfig(servicenow_port=0, jira_port=0, statuspage_port=0, seed=seed)
    )
    cluster.start()
    conn.send(dict(cluster.urls))
    with contextlib.suppress(EOFError):
        conn.recv()  # anything (or the parent going away) means stop
    cluster.stop()


class SimulatorProcess:
    """The simulators in a process of their own, so that their CPU time is not the service's
    (what ``settings_for`` and ``register_webhooks`` need of a cluster: urls and config).
    ``seed=True``: with the simulators' fixtures (people, services, a few records)."""

    def __init__(self, *, seed: bool = False) -> None:
        self.config = ClusterConfig(servicenow_port=0, jira_port=0, statuspage_port=0, seed=seed)
        self.urls: dict[str, str] = {}
        self._ctx = multiprocessing.get_context("spawn")
        self._conn: Connection | None = None
        self._process: Any = None

    def start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._process = self._ctx.Process(
            target=_serve_simulators, args=(child, self.config.seed), daemon=True
        )
        self._process.start()
        child.close()
        if not parent.poll(60):
            raise RuntimeError("the simulator process did not start")
        self.urls = parent.recv()
        self._conn = parent

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.send("stop")
            self._conn.close()
        if self._process is not None:
            self._process.join(timeout=15)


class Rig:
    """The three simulators (empty but for the fixtures' people) and the service, over real
    HTTP with webhooks registered, plus a client for each system as people use it."""

    def __init__(
        self,
        *,
        database_url: str | None = None,
        sync: dict[str, Any] | None = None,
        poll: bool = True,
        workers: bool = True,
        webhooks: bool = True,
        configure_app: Callable[[Any], None] | None = None,
        separate_simulators: bool = False,
        worker_process: bool = False,
        freeze_gc: bool | None = None,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="itsm-bench-")
        self.folder = Path(self._tmp.name)
        self.database_url = database_url or sqlite_url(self.folder)
        self.sync = {**DEFAULT_SYNC, **(sync or {})}
        self.sims: Any = (
            SimulatorProcess()
            if separate_simulators
            else SimulatorCluster(
                ClusterConfig(servicenow_port=0, jira_port=0, statuspage_port=0, seed=False)
            )
        )
        self._poll, self._workers, self._webhooks = poll, workers, webhooks
        # True: the poller and the workers in a worker process, as `itsm-sync run` does by
        # default; False: everything in this process (`run --workers-in-process`).
        self._worker_process = worker_process
        self._freeze_gc = freeze_gc  # None: as `run` (which always does)
        self._configure_app = configure_app  # e.g. add a timing middleware before start
        self.service: Service | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> Rig:
        reset_buckets()
        self.sims.start()
        for name, url in self.sims.urls.items():
            httpx.post(f"{url}/_sim/seed", json=people_only(name)).raise_for_status()
        settings = settings_for(
            self.sims,
            self.database_url,
            statuspage=REAL_STATUSPAGE,
            sync=self.sync,
            api_tokens=[{"name": "bench", "token": ADMIN_TOKEN, "role": "admin"}],
        )
        self.service = Service(
            settings,
            poll=self._poll,
            workers=self._workers,
            worker_process=self._worker_process,
            freeze_gc=self._freeze_gc,
        )
        if self._configure_app is not None:
            self._configure_app(self.service.app)
        self.service.start()
        if self._webhooks:
            self.service.register_webhooks(self.sims)
        ua = {"User-Agent": BENCH_UA}
        self.sn = httpx.Client(
            base_url=self.sims.urls["servicenow"], auth=("admin", "admin"), headers=ua, timeout=30
        )
        self.jira = httpx.Client(
            base_url=self.sims.urls["jira"],
            auth=("admin@example.com", "sim-token"),
            headers=ua,
            timeout=30,
        )
        self.sp = httpx.Client(
            base_url=f"{self.sims.urls['statuspage']}/v1/pages/simpage0001",
            headers={"Authorization": "OAuth sim-key", **ua},
            timeout=30,
        )
        self.api = httpx.Client(
            base_url=self.service.url,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", **ua},
            timeout=30,
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for client in (self.sn, self.jira, self.sp, self.api):
            client.close()
        if "_probe" in self.__dict__:
            self._probe.close()
        if self.service is not None:
            self.service.stop()
        self.sims.stop()
        self._tmp.cleanup()

    @property
    def runtime(self) -> Any:
        assert self.service is not None
        return self.service.runtime

    def reconciled(self) -> int:
        """Reconciles done so far by the service's workers (in this process or its worker
        process)."""
        if self.runtime.pool is not None:
            return int(self.runtime.pool.totals().reconciled)
        if self.runtime.worker_process is not None:
            stats = self.runtime.worker_process.stats(timeout=10)
            return int(stats["reconciled"]) if stats else 0
        return 0

    def stop_workers(self) -> None:
        """Stop the service's workers (and poller); its HTTP side goes on."""
        if self.runtime.pool is not None:
            self.runtime.pool.stop()
        if self.runtime.worker_process is not None:
            self.runtime.worker_process.stop()

    def describe(self) -> str:
        """How the service runs, for the printed settings."""
        if self._worker_process:
            return "HTTP here, the poller and the workers in a worker process (itsm-sync run)"
        return "HTTP, the poller and the workers in one process (run --workers-in-process)"

    # -- people's edits -----------------------------------------------------------------------

    def open_p1(self, title: str, **fields: Any) -> dict[str, Any]:
        body = {
            "short_description": title, "impact": "1", "urgency": "1",
            "assigned_to": ALICE_SN, "business_service": CHECKOUT_SN, **fields,
        }  # fmt: skip
        r = self.sn.post("/api/now/table/incident", json=body)
        r.raise_for_status()
        return dict(r.json()["result"])

    def sn_patch(self, sys_id: str, **fields: Any) -> dict[str, Any]:
        r = self.sn.patch(f"/api/now/table/incident/{sys_id}", json=fields)
        r.raise_for_status()
        return dict(r.json()["result"])

    def sn_record(self, sys_id: str) -> dict[str, Any]:
        return dict(self.sn.get(f"/api/now/table/incident/{sys_id}").json()["result"])

    def jira_issue(self, key: str) -> dict[str, Any]:
        return dict(self.jira.get(f"/rest/api/2/issue/{key}").json())

    def jira_edit(self, key: str, **fields: Any) -> None:
        self.jira.put(f"/rest/api/2/issue/{key}", json={"fields": fields}).raise_for_status()

    def jira_comment(self, key: str, body: str, internal: bool = False) -> None:
        payload: dict[str, Any] = {"body": body}
        if internal:
            payload["visibility"] = {"type": "role", "value": "Developers"}
        self.jira.post(f"/rest/api/2/issue/{key}/comment", json=payload).raise_for_status()

    def transition(self, key: str, status: str, **fields: Any) -> None:
        options = self.jira.get(f"/rest/api/2/issue/{key}/transitions").json()["transitions"]
        [move] = [t for t in options if t["to"]["name"] == status]
        self.jira.post(
            f"/rest/api/2/issue/{key}/transitions",
            json={"transition": {"id": move["id"]}, "fields": fields},
        ).raise_for_status()

    def publish(self, number: str, message: str) -> None:
        r = self.api.post(f"/api/incidents/{number}/public", json={"message": message})
        r.raise_for_status()

    def links(self) -> dict[str, dict[str, store.Link]]:
        """incident id -> system -> link."""
        out: dict[str, dict[str, store.Link]] = {}
        with store.session_scope(self.runtime.db, readonly=True) as s:
            for link in s.exec(select(store.Link)).all():
                out.setdefault(link.incident_id, {})[link.system] = link
        return out

    # -- counting -----------------------------------------------------------------------------

    def requests(self, system: str, *, clear: bool = False) -> list[dict[str, Any]]:
        """The simulator's request log; ``clear`` empties it after reading (call it while
        the service is quiet: a request logged between the two would be lost)."""
        url = f"{self.sims.urls[system]}/_sim/requests"
        log = list(httpx.get(url, timeout=30).json()["requests"])
        if clear:
            httpx.delete(url, timeout=30).raise_for_status()
        return log

    def service_calls(self, *, clear: bool = True) -> dict[str, list[dict[str, Any]]]:
        """system -> the requests the service (not the benchmark's people) made since the
        last clear. The logs keep 5000 entries each: clear them at least that often."""
        out: dict[str, list[dict[str, Any]]] = {}
        for system in self.sims.urls:
            out[system] = [
                r
                for r in self.requests(system, clear=clear)
                if r["headers"].get("user-agent") != BENCH_UA
            ]
        return out

    # -- waiting ------------------------------------------------------------------------------

    @functools.cached_property
    def _probe(self) -> httpx.Client:
        """One client for the polls while waiting: ``httpx.get`` makes a client, and so an SSL
        context (~13 ms of CPU loading the CA bundle), per call; polled every 50 ms for three
        simulators that was ~45 % of a core in the process that also serves the webhooks,
        which the benchmark then counted against the service."""
        return httpx.Client(timeout=30)

    def idle(self) -> bool:
        """Every simulator has sent its webhooks and the queue is empty (read in-process, so
        that waiting costs the service under test as little as possible)."""
        if isinstance(self.sims, SimulatorCluster):
            if not all(sim.webhooks.idle() for sim in self.sims.simulators.values()):
                return False
        elif not all(
            self._probe.get(f"{u}/_sim/webhooks/log?limit=0").json()["idle"]
            for u in self.sims.urls.values()
        ):
            return False
        with store.session_scope(self.runtime.db, readonly=True) as s:
            return s.exec(select(store.Dirty)).first() is None

    def quiet(self, timeout: float = 60.0, settle: float = 0.3) -> None:
        """Wait until every webhook is delivered and the queue is empty (twice, ``settle``
        apart: a reconcile's own writes send webhooks that queue more work)."""

        def twice() -> bool:
            if not self.idle():
                return False
            time.sleep(settle)
            return self.idle()

        wait_for(twice, "the service to go quiet", timeout)
