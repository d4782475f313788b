"""``itsm-sync run`` as real processes: HTTP in the process started, the poller and the workers
in its worker process. A killed ``run`` leaves no worker process behind; a dead worker process
makes ``/readyz`` not ready (``/healthz``, liveness, stays 200) and is replaced; SIGTERM and SIGINT stop both cleanly; a webhook
wakes the worker process; ``--role http`` and ``--role workers`` share the work."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.harness import wait_for
from simulators.runner import SimulatorCluster
from tests.chaos.conftest import CLI, ServiceProcess, free_port, service_env
from tests.systems import Systems

# Only webhooks bring work; INFO: the worker process's life is in the log.
QUIET = {"ITSM_SYNC_SYNC__POLL_INTERVAL_SECONDS": "3600", "ITSM_SYNC_LOG_LEVEL": "INFO"}


def _gone(pid: int) -> bool:
    """The process does not exist any more, or is a zombie (dead, not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out += children
            todo += children
    return out


def _health(svc: ServiceProcess, path: str = "/readyz") -> tuple[int, dict[str, Any]]:
    try:
        r = httpx.get(f"{svc.url}{path}", timeout=5)
    except httpx.HTTPError:
        return 0, {}
    return r.status_code, r.json()


def _worker_pid(svc: ServiceProcess) -> int:
    """The ready worker process's pid, as ``/readyz``'s workers check gives it."""
    _, body = _health(svc)
    return int(body["checks"]["workers"]["pid"])


# Real `run` processes with their worker process, started, killed and replaced: slow to start
# on a loaded machine, so they run in `make crash` (which .ci/run runs), not `make test`.
pytestmark = pytest.mark.crash


@pytest.fixture
def started(empty_sims: SimulatorCluster, tmp_path: Path) -> Iterator[ServiceProcess]:
    """``itsm-sync run`` (defaults: a worker process) on SQLite, ready (worker process too)."""
    env = service_env(empty_sims, f"sqlite:///{tmp_path / 'itsm-sync.db'}", **QUIET)
    svc = ServiceProcess("run", env, tmp_path)
    try:
        svc.start(wait=True)
        yield svc
    finally:
        svc.kill()


def test_run_answers_here_and_reconciles_in_its_worker_process(
    started: ServiceProcess, empty_sims: SimulatorCluster
) -> None:
    status, body = _health(started)
    assert status == 200, body
    child = body["checks"]["workers"]["pid"]
    assert started.proc is not None and child != started.proc.pid
    assert _parent_of(child) == started.proc.pid
    started.register_webhooks(empty_sims)
    systems = Systems(empty_sims)
    try:
        systems.open_p1("chaosless checkout fails")
        # The poller sleeps for an hour: the webhook (stored by the HTTP process) must wake
        # the worker process, which makes the Jira issue.
        wait_for(lambda: systems.jira_issues(), "the Jira issue", timeout=30)
    finally:
        systems.close()
    metrics = httpx.get(f"{started.url}/metrics", timeout=5).text
    assert "itsm_sync_worker_process_up 1.0" in metrics
    # The worker process's remote calls are in the HTTP process's /metrics.
    assert 'itsm_sync_api_calls_total{method="POST",status="201",system="jira"}' in metrics


def test_a_killed_run_leaves_no_worker_process_behind(started: ServiceProcess) -> None:
    assert started.proc is not None
    children = _descendants(started.proc.pid)
    assert _worker_pid(started) in children
    started.kill()  # SIGKILL: no shutdown code runs in the parent
    wait_for(
        lambda: all(_gone(pid) for pid in children),
        f"the children {children} of the killed itsm-sync run to exit",
        timeout=30,
    )


def test_readyz_is_not_ready_while_the_worker_process_is_dead_then_it_is_replaced(
    started: ServiceProcess,
) -> None:
    first = _worker_pid(started)
    os.kill(first, signal.SIGKILL)

    def not_ready() -> dict[str, Any] | None:
        status, body = _health(started)
        return body if status == 503 else None

    body = wait_for(not_ready, "/readyz to say 503", timeout=10, interval=0.02)
    workers = body["checks"]["workers"]
    assert body["status"] == "not ready" and workers["ok"] is False, body
    assert "died" in workers["detail"] and workers["pid"] is None, body
    # Alive all the same: liveness is the process, which replaces its worker process itself.
    status, alive = _health(started, "/healthz")
    assert status == 200 and alive["checks"]["process"]["pid"] == started.proc.pid, alive

    def ready_again() -> dict[str, Any] | None:
        status, body = _health(started)
        return body if status == 200 else None

    body = wait_for(ready_again, "a new worker process", timeout=60)
    assert body["checks"]["workers"]["pid"] not in (first, None)
    assert started.running
    metrics = httpx.get(f"{started.url}/metrics", timeout=5).text
    assert "itsm_sync_worker_process_restarts_total 1.0" in metrics


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_stops_both_cleanly(started: ServiceProcess, sig: int) -> None:
    assert started.proc is not None
    child = _worker_pid(started)
    started.proc.send_signal(sig)
    assert started.proc.wait(timeout=60) == 0, started.tail()
    assert _gone(child)
    assert f"worker process {child} stopping: asked to stop" in started.log.read_text()


def test_role_http_and_role_workers_share_the_work(
    empty_sims: SimulatorCluster, tmp_path: Path
) -> None:
    env = service_env(empty_sims, f"sqlite:///{tmp_path / 'itsm-sync.db'}", **QUIET)
    port = free_port()
    log = (tmp_path / "roles.log").open("ab")
    http = subprocess.Popen(
        [*CLI, "run", "--port", str(port), "--role", "http"], env=env, cwd=tmp_path,
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    workers = subprocess.Popen(
        [*CLI, "run", "--role", "workers"], env=env, cwd=tmp_path,
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    systems = Systems(empty_sims)
    try:
        svc = ServiceProcess("http", env, tmp_path, port=port)
        svc.proc = http
        wait_for(lambda: _health(svc, "/healthz")[0] == 200, "the HTTP-only process", timeout=60)
        assert _descendants(http.pid) == [] or all(
            "resource_tracker" in Path(f"/proc/{p}/cmdline").read_text()
            for p in _descendants(http.pid)
        )  # no worker process of its own
        svc.register_webhooks(empty_sims)
        time.sleep(1.0)  # the workers process is up by now (or starts and finds the mark)
        systems.open_p1("roles checkout fails")
        wait_for(lambda: systems.jira_issues(), "the Jira issue made by --role workers", 60)
        for proc in (http, workers):
            proc.send_signal(signal.SIGTERM)
        assert http.wait(timeout=60) == 0
        assert workers.wait(timeout=60) == 0
    finally:
        systems.close()
        for proc in (http, workers):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        log.close()


def test_two_worker_processes_share_the_work_and_are_each_replaced(
    empty_sims: SimulatorCluster, tmp_path: Path
) -> None:
    """``sync.worker_processes: 2``: two children of ``run``, both ready before /readyz is; a
    webhook wakes them; one killed is replaced while the other goes on; SIGTERM stops both."""
    env = service_env(
        empty_sims, f"sqlite:///{tmp_path / 'itsm-sync.db'}",
        ITSM_SYNC_SYNC__WORKER_PROCESSES="2", **QUIET,
    )  # fmt: skip
    svc = ServiceProcess("run", env, tmp_path)
    systems = Systems(empty_sims)
    try:
        svc.start(wait=True)
        _, body = _health(svc)
        pids = body["checks"]["workers"]["pids"]
        assert len(set(pids)) == 2 and None not in pids, body
        assert svc.proc is not None and all(_parent_of(p) == svc.proc.pid for p in pids)
        assert "2 worker processes" in body["checks"]["workers"]["detail"], body
        log = svc.log.read_text()
        assert all(f"worker process {p} ready" in log for p in pids), log
        svc.register_webhooks(empty_sims)
        systems.open_p1("two worker processes: checkout fails")
        wait_for(lambda: systems.jira_issues(), "the Jira issue", timeout=30)

        os.kill(pids[1], signal.SIGKILL)

        def replaced() -> list[int] | None:
            status, body = _health(svc)
            now = body.get("checks", {}).get("workers", {}).get("pids") or []
            return now if status == 200 and None not in now and pids[1] not in now else None

        now = wait_for(replaced, "the killed worker process to be replaced", timeout=60)
        assert now[0] == pids[0] and now[1] != pids[1]  # the other one went on
        metrics = httpx.get(f"{svc.url}/metrics", timeout=5).text
        assert "itsm_sync_worker_process_restarts_total 1.0" in metrics
        systems.open_p1("two worker processes: search fails")
        wait_for(lambda: len(systems.jira_issues()) == 2, "the second Jira issue", timeout=30)

        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(timeout=60) == 0, svc.tail()
        assert all(_gone(p) for p in now)
    finally:
        systems.close()
        svc.kill()
