"""CPU used by an idle ``itsm-sync run`` (nothing to do: no webhooks, the queue empty).

Starts the simulators in a process of their own and ``itsm-sync run`` as a real command with
its defaults (but the simulators' URLs and a temp SQLite file), waits until ``/readyz`` says
its database and workers are ok and a few seconds more (start-up, the first poll), then
measures the CPU time of the service and every process it started (the worker process) over
the window, from ``/proc``. Extra arguments after ``--`` go to ``itsm-sync run`` (e.g.
``-- --workers-in-process``).

``python -m bench.idle [--seconds 10] [--postgres] [-- RUN-ARGS...]``
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import (
    PG_MAINTENANCE_URL,
    PostgresDatabase,
    Row,
    SimulatorProcess,
    finish,
    header,
    parser,
    postgres_available,
    table,
)
from service.harness import WEBHOOK_SECRETS, serving
from simulators.runner import Credentials

MODULE = "bench.idle"
GOAL = 0.05  # of one core


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux ``/proc/<pid>/task/<tid>/children``)."""
    out = [pid]
    i = 0
    while i < len(out):
        for task in Path(f"/proc/{out[i]}/task").glob("*"):
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
        i += 1
    return out


def _cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (their live threads included)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def environment(urls: dict[str, str], database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_SYNC_")}
    creds = Credentials()  # the simulators' (bench runs them with the simulator profile)
    env.update(
        {
            "ITSM_SYNC_SERVICENOW__URL": urls["servicenow"],
            "ITSM_SYNC_SERVICENOW__PASSWORD": creds.servicenow_password,
            "ITSM_SYNC_SERVICENOW__WEBHOOK_SECRET": WEBHOOK_SECRETS["servicenow"],
            "ITSM_SYNC_JIRA__URL": urls["jira"],
            "ITSM_SYNC_JIRA__API_TOKEN": creds.jira_api_token,
            "ITSM_SYNC_JIRA__WEBHOOK_SECRET": WEBHOOK_SECRETS["jira"],
            "ITSM_SYNC_STATUSPAGE__URL": urls["statuspage"] + "/v1",
            "ITSM_SYNC_STATUSPAGE__API_KEY": creds.statuspage_api_key,
            "ITSM_SYNC_STATUSPAGE__WEBHOOK_SECRET": WEBHOOK_SECRETS["statuspage"],
            "ITSM_SYNC_API_TOKENS": '[{"name": "bench", "token": "bench-idle", "role": "viewer"}]',
            "ITSM_SYNC_DATABASE_URL": database_url,
            "ITSM_SYNC_LOG_LEVEL": "WARNING",
        }
    )
    return env


def _calls(urls: dict[str, str]) -> int:
    """Requests the simulators logged so far (the service is the only client here)."""
    return sum(
        len(httpx.get(f"{u}/_sim/requests", timeout=30).json()["requests"]) for u in urls.values()
    )


def measure(
    urls: dict[str, str], database_url: str, seconds: float, extra: list[str]
) -> tuple[float, float]:
    """CPU-seconds per second used by an idle ``itsm-sync run`` and its children, and the
    remote calls it made per minute over the same window (its polls)."""
    with tempfile.TemporaryDirectory(prefix="itsm-idle-") as folder:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "run", "--port", str(port), *extra],
            env=environment(urls, database_url),
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if serving(f"http://127.0.0.1:{port}"):  # database and worker process up
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("itsm-sync run did not come up")
                time.sleep(0.1)
            time.sleep(3.0)  # the first poll, the mapping versions, imports done
            pids = _tree(proc.pid)
            calls_before = _calls(urls)
            before, t0 = _cpu_seconds(pids), time.monotonic()
            time.sleep(seconds)
            used, elapsed = _cpu_seconds(pids) - before, time.monotonic() - t0
            calls = _calls(urls) - calls_before
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return used / elapsed, calls * 60 / elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--seconds", type=float, default=10.0, help="the measured window")
    p.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    p.add_argument("run_args", nargs="*", help="passed to itsm-sync run (after --)")
    args = p.parse_args()
    pg_problem = postgres_available() if args.postgres else "not asked (--postgres)"
    header(
        "Idle CPU of itsm-sync run",
        MODULE,
        False,
        {
            "service": "itsm-sync run " + " ".join(args.run_args) + " (defaults otherwise)",
            "window": f"{args.seconds:.0f} s, after /readyz said database and workers ok, 3 s more",
            "databases": "SQLite (temp file)"
            + ("" if pg_problem else f", PostgreSQL (fresh database on {PG_MAINTENANCE_URL})"),
        },
    )
    sims = SimulatorProcess()
    sims.start()
    rows: list[list[object]] = []
    summary: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="itsm-idle-db-") as folder:
            runs = [("sqlite", f"sqlite:///{Path(folder) / 'itsm-sync.db'}")]
            if not pg_problem:
                pg = PostgresDatabase()
                pg.__enter__()
                runs.append(("postgresql", pg.url))
            try:
                for name, url in runs:
                    share, per_minute = measure(sims.urls, url, args.seconds, args.run_args)
                    rows.append([name, f"{share:.1%}", per_minute])
                    summary.append(
                        Row("idle", f"idle CPU, {name}", f"<= {GOAL:.0%} of a core",
                            f"{share:.1%}", share <= GOAL)
                    )  # fmt: skip
                    summary.append(
                        Row("idle", f"idle calls per minute, {name} (polls every 60 s)", "-",
                            f"{per_minute:.1f}", None)
                    )  # fmt: skip
            finally:
                if not pg_problem:
                    pg.__exit__(None, None, None)
    finally:
        sims.stop()
    print(table(["database", "CPU (of one core)", "calls/min"], rows, "itsm-sync run, idle"))
    finish(summary, args.json)


if __name__ == "__main__":
    main()
