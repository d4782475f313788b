"""Chaos fixtures: ``itsm-sync run`` as real processes (killed with SIGKILL and restarted) against
the session's simulators, on SQLite or on a PostgreSQL database made for the test.

Everything the tests check is read from the simulators (what people would see) or from the
service's own database; nothing reaches into a running service.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url
from sqlalchemy.exc import OperationalError

from service.harness import register_webhooks, serving, simulator_env
from simulators.runner import SimulatorCluster

CLI = [sys.executable, "-m", "service"]
ALICE_SN = "a11ce000000000000000000000000001"
CHECKOUT_SN = "5e000000000000000000000000000001"
ADMIN_TOKEN = "chaos-admin-token"
PG_MAINTENANCE_URL = os.environ.get(
    "ITSM_SYNC_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(cluster: SimulatorCluster, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of an ``itsm-sync`` process pointed at ``cluster`` and ``database_url``.

    Any ``ITSM_SYNC_*`` of the calling environment is dropped so a developer's settings can't
    leak in; ``extra`` overrides (``ITSM_SYNC_SYNC__WORKERS="2"``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_SYNC_")}
    env.update(simulator_env(cluster, database_url))
    env.update(
        {
            "ITSM_SYNC_STATUSPAGE__REQUESTS_PER_SECOND": "50",
            "ITSM_SYNC_STATUSPAGE__BURST": "10",
            "ITSM_SYNC_SYNC__POLL_INTERVAL_SECONDS": "1",
            "ITSM_SYNC_SYNC__WORKERS": "4",
            # A killed process's claims come back after the lease; long enough that no
            # reconcile here outlives it (the workers don't renew leases).
            "ITSM_SYNC_SYNC__LEASE_SECONDS": "10",
            "ITSM_SYNC_API_TOKENS": json.dumps(
                [{"name": "chaos", "token": ADMIN_TOKEN, "role": "admin"}]
            ),
            "ITSM_SYNC_LOG_LEVEL": "WARNING",
            "COLUMNS": "200",  # rich tables: whole lines, so the output can be searched
        }
    )
    env.update(extra)
    return env


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``itsm-sync <args>`` to completion."""
    return subprocess.run(
        [*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


class ServiceProcess:
    """``itsm-sync run --port <port>`` as a child process that can be killed and restarted.

    The port stays the same across restarts, so the simulators' webhook targets stay valid.
    Output goes to ``<cwd>/<name>.log`` (appended across restarts)."""

    def __init__(self, name: str, env: dict[str, str], cwd: Path, port: int | None = None) -> None:
        self.name = name
        self.env = env
        self.cwd = cwd
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self, wait: bool = True) -> ServiceProcess:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        with self.log.open("ab") as out:
            out.write(f"--- start {self.name} at {time.time():.3f}\n".encode())
            self.proc = subprocess.Popen(
                [*CLI, "run", "--port", str(self.port)],
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_ready()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        if not self.running:
            return False
        return serving(self.url)  # the database answers and the worker process runs

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not come up:\n{self.tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, whatever the process was doing."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.kills += 1
            with self.log.open("ab") as out:
                out.write(f"--- killed {self.name} at {time.time():.3f}\n".encode())

    def stop(self) -> None:
        """A clean stop (SIGTERM), SIGKILL if it hangs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def register_webhooks(self, cluster: SimulatorCluster) -> None:
        """Add this process as a webhook target of every simulator (others stay registered)."""
        register_webhooks(cluster, self.url)


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    """Every service process a test starts; all are stopped at the end, whatever happened."""
    started: list[ServiceProcess] = []
    try:
        yield started
    finally:
        for service in started:
            service.kill()


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test, dropped afterwards (kept, to look into
    a failure, with ``CHAOS_KEEP_DB=1``)."""
    url = make_url(PG_MAINTENANCE_URL)
    admin = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    name = f"itsm_chaos_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is not reachable at {url.render_as_string()}: {exc.orig or exc}\n"
            "Start it or point ITSM_SYNC_TEST_PG_URL at one.",
            pytrace=False,
        )
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        if not os.environ.get("CHAOS_KEEP_DB"):
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
