"""Crash recovery and start-up races on both dialects: claims of workers that died on this
host are taken back at start, but only where their pid means what it means here (a container
sharing the hostname has pids of its own); two processes that load the same mapping at once
store one version of it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from typing import Any

import pytest
from sqlalchemy import Engine

from sync import store, worker
from sync.queue import claim, incident_key, mark_dirty
from sync.store import audit_log as store_audit


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _claimed_by(engine: Engine, name: str, key: str = "incident:i1") -> None:
    with store.session_scope(engine) as s:
        mark_dirty(s, key)
    with store.session_scope(engine) as s:
        assert [c.key for c in claim(s, name, limit=1, lease_seconds=300)] == [key]


def _holder(engine: Engine, key: str = "incident:i1") -> str | None:
    with store.session_scope(engine, readonly=True) as s:
        row = s.get(store.Dirty, key)
        assert row is not None
        return row.claimed_by


def test_a_worker_name_says_where_its_pid_means_something() -> None:
    place, pid, _ = worker.worker_name().split(":")
    assert place == worker.place() and int(pid) > 0
    assert place.startswith(f"{__import__('socket').gethostname()}~")


def test_claims_of_a_dead_worker_of_this_place_are_taken_back(engine: Engine) -> None:
    _claimed_by(engine, f"{worker.place()}:{_dead_pid()}:abc123")
    assert worker.reclaim_orphans(engine) == 1
    assert _holder(engine) is None


def test_claims_of_a_live_worker_are_kept(engine: Engine) -> None:
    name = worker.worker_name()
    _claimed_by(engine, name)
    assert worker.reclaim_orphans(engine) == 0
    assert _holder(engine) == name


def test_the_same_hostname_in_another_pid_namespace_is_left_to_its_lease(engine: Engine) -> None:
    """Two containers with one hostname: the other's pid 1234 is not ours to judge."""
    host = __import__("socket").gethostname()
    for n, name in enumerate(
        (f"{host}~0badc0de:{_dead_pid()}:abc123", f"{host}:{_dead_pid()}:abc123")
    ):
        _claimed_by(engine, name, key=incident_key(f"other{n}"))
    assert worker.reclaim_orphans(engine) == 0


def test_two_processes_loading_one_mapping_store_one_version(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both of run's processes store the mapping they loaded at start: on PostgreSQL both used
    to read "not stored yet" and both stored it. Each now reads under a lock; here the first
    waits (up to 1 s) after reading, for the second to read too."""
    read = threading.Barrier(2, timeout=1.0)
    original = store.mapping_versions

    def slow_read(session: Any, **kwargs: Any) -> list[store.MappingVersion]:
        found = original(session, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            read.wait()  # with the lock, the other one never gets here meanwhile
        return found

    monkeypatch.setattr(store_audit, "mapping_versions", slow_read)
    stored: list[bool] = []

    def load() -> None:
        with store.session_scope(engine) as s:
            stored.append(
                store.record_mapping_version(
                    s, system="jira", instance="default", digest="d1", source="fields: []",
                    diff="(loaded at start)", accepted_by="test",
                )
            )  # fmt: skip

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    monkeypatch.setattr(store_audit, "mapping_versions", original)
    with store.session_scope(engine, readonly=True) as s:
        versions = store.mapping_versions(s, system="jira", instance="default")
    assert [v.digest for v in versions] == ["d1"]
    assert sorted(stored) == [False, True]
