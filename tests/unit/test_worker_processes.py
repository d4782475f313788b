"""``sync.worker_processes``: how ``itsm-sync run`` shares ``sync.workers`` between its worker
processes, and how the HTTP process sees several as one (wake-ups to all, health while all are
ready, their stats added up). The processes themselves: tests/e2e/test_run_processes.py."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from config.settings import Settings, SyncSettings, worker_share
from service.supervisor import WorkerProcess, WorkerProcesses, worker_processes


def test_the_threads_are_shared_and_every_process_gets_one() -> None:
    sync = SyncSettings(workers=5, worker_processes=2)
    assert [sync.threads_of(i) for i in range(2)] == [3, 2]
    assert [SyncSettings(workers=32, worker_processes=2).threads_of(i) for i in (0, 1)] == [16, 16]
    with pytest.raises(ValidationError, match=r"worker_processes \(3\) is more than workers \(2\)"):
        SyncSettings(workers=2, worker_processes=3)
    with pytest.raises(ValidationError):
        SyncSettings(worker_processes=0)


def test_one_worker_process_is_the_one_run_always_had() -> None:
    assert isinstance(worker_processes(Settings()), WorkerProcess)
    group = worker_processes(Settings(sync=SyncSettings(workers=4, worker_processes=2)))
    assert isinstance(group, WorkerProcesses)
    assert [child.index for child in group.children] == [0, 1]


class _Child:
    def __init__(self, pid: int | None, stats: dict[str, Any] | None, deaths: int = 0) -> None:
        self.ready_pid = pid
        self.deaths = deaths
        self._stats = stats
        self.pokes = 0
        self.reloads = 0

    def health(self) -> tuple[bool, str]:
        return (True, "ok") if self.ready_pid else (False, "the worker process died (exit 1)")

    def poke(self) -> None:
        self.pokes += 1

    def reload(self) -> None:
        self.reloads += 1

    def stats(self, timeout: float = 2.0) -> dict[str, Any] | None:
        return self._stats


def _group(*children: _Child) -> WorkerProcesses:
    group = WorkerProcesses(Settings(sync=SyncSettings(workers=4, worker_processes=2)))
    group.children = list(children)  # type: ignore[arg-type]
    return group


def _stats(pid: int, writes: int, calls: int) -> dict[str, Any]:
    return {
        "pid": pid, "reconciled": writes, "writes": writes, "conflicts": 0, "failures": 1,
        "calls": {("jira", "PUT", "200"): calls}, "rate_waits": {"jira": 0.5},
        "wakeups": 3, "woken": 2,
    }  # fmt: skip


def test_wakeups_and_reloads_reach_every_worker_process() -> None:
    a, b = _Child(11, None), _Child(12, None)
    group = _group(a, b)
    group.poke()
    group.reload()
    assert (a.pokes, b.pokes, a.reloads, b.reloads) == (1, 1, 1, 1)


def test_ready_only_while_every_worker_process_is() -> None:
    assert _group(_Child(11, None), _Child(12, None)).health() == (
        True,
        "ok (2 worker processes: 11, 12)",
    )
    group = _group(_Child(11, None), _Child(None, None, deaths=1))
    ok, why = group.health()
    assert not ok and why == "worker process 2 of 2: the worker process died (exit 1)"
    assert group.ready_pid is None and group.ready_pids == [11, None] and group.deaths == 1


def test_their_stats_add_up_and_a_silent_one_means_no_answer() -> None:
    total = _group(_Child(11, _stats(11, 5, 7)), _Child(12, _stats(12, 2, 3))).stats()
    assert total is not None
    assert total["pid"] == [11, 12]
    assert (total["writes"], total["failures"], total["wakeups"]) == (7, 2, 6)
    assert total["calls"] == {("jira", "PUT", "200"): 10}
    assert total["rate_waits"] == {"jira": 1.0}
    assert _group(_Child(11, _stats(11, 5, 7)), _Child(12, None)).stats() is None


def test_each_worker_process_gets_its_share_of_every_budget() -> None:
    """Every process has its own token buckets: two at the configured rates would call a
    system twice as fast as its limit allows."""
    settings = Settings(
        sync=SyncSettings(workers=5, worker_processes=2),
        servicenow={"requests_per_second": 20.0, "max_concurrency": 16},
        jira={"requests_per_second": 135.0, "issue_writes_per_second": 5.0,
              "issue_write_burst": 10.0, "max_concurrency": 16},
        instances={"statuspage": {"eu": {"requests_per_second": 1.0, "burst": 1.0}}},
    )  # fmt: skip
    first, second = worker_share(settings, 0), worker_share(settings, 1)
    assert (first.sync.workers, second.sync.workers) == (3, 2)
    for share in (first, second):
        assert share.servicenow.requests_per_second == 10.0
        assert share.servicenow.max_concurrency == 8
        assert share.jira.requests_per_second == 67.5
        assert (share.jira.issue_writes_per_second, share.jira.issue_write_burst) == (2.5, 5.0)
        eu = share.instances.statuspage["eu"]
        assert (eu.requests_per_second, eu.burst, eu.max_concurrency) == (0.5, 1.0, 1)
        assert share.statuspage.requests_per_second == 0.5  # the default page's 1/s too
    assert worker_share(Settings(), 0) == Settings()  # one process: the settings as they are
