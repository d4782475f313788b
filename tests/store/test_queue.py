"""The dirty queue on both dialects: coalescing, claiming under concurrency, leases, backoff."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import queue as queue_module
import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine, text

from sync import queue
from sync.queue import Claim, claim, finish, mark_dirty
from sync.store import Dirty, engine_hooks, make_engine, session_scope, utcnow

WORKER = "host:1:main"


def _row(engine: Engine, key: str) -> Dirty | None:
    with session_scope(engine, readonly=True) as session:
        return session.get(Dirty, key)


def _claim(engine: Engine, worker: str = WORKER, **kwargs: Any) -> list[Claim]:
    kwargs = {"limit": 10, "lease_seconds": 60.0, **kwargs}
    with session_scope(engine, single=True) as session:  # as the workers claim
        return claim(session, worker, **kwargs)


def _claim_all(engine: Engine, worker: str, limit: int = 3) -> list[str]:
    """Claim until the queue has nothing left for us (others may still hold rows)."""
    keys: list[str] = []
    while got := _claim(engine, worker, limit=limit, lease_seconds=300.0):
        keys.extend(c.key for c in got)
    return keys


def _claim_all_in_process(url: str, worker: str, start: Any, results: Any) -> None:
    """Runs in a child process: its own engine and connections, like another instance."""
    engine = make_engine(url)
    try:
        start.wait(timeout=60)
        results.put((worker, _claim_all(engine, worker, limit=2)))
    finally:
        engine.dispose()


def test_keys() -> None:
    assert queue.incident_key("abc") == "incident:abc"
    key = queue.remote_key("jira", "default", "issue", "a:b")
    assert key == "remote:jira:default:issue:a:b"
    assert queue.parse_key(key) == ("remote", "jira", "default", "issue", "a:b")
    assert queue.parse_key("incident:abc") == ("incident", "abc")
    stored = queue.remote_key("jira", "default", "issue", "a:b", stored=True)
    assert stored == "stored:jira:default:issue:a:b"  # stored with its mark: no read again
    assert queue.parse_key(stored) == ("stored", "jira", "default", "issue", "a:b")
    for bad in ("incident:", "remote:jira:x", "nope"):
        with pytest.raises(ValueError):
            queue.parse_key(bad)


def test_marks_coalesce(engine: Engine) -> None:
    first = utcnow()
    with session_scope(engine) as session:
        for i in range(50):
            mark_dirty(
                session,
                "incident:a",
                reason=f"webhook {i}",
                now=first + dt.timedelta(milliseconds=i * 20),
            )
        assert queue.queue_depth(session) == 1
    row = _row(engine, "incident:a")
    assert row is not None
    assert (row.generation, row.due_at, row.reason) == (50, first, "webhook 49")
    assert [c.generation for c in _claim(engine)] == [50]


def test_an_earlier_mark_wins_and_delays_are_honoured(engine: Engine) -> None:
    now = utcnow()
    with session_scope(engine) as session:
        mark_dirty(session, "incident:later", delay=30, now=now)
        mark_dirty(session, "incident:sooner", delay=30, now=now)
        mark_dirty(session, "incident:sooner", delay=5, now=now)
    assert _claim(engine, now=now) == []
    assert [c.key for c in _claim(engine, now=now + dt.timedelta(seconds=6))] == ["incident:sooner"]
    with session_scope(engine) as session:  # a later mark does not push a waiting key back
        mark_dirty(session, "incident:later", delay=300, now=now)
    assert [c.key for c in _claim(engine, now=now + dt.timedelta(seconds=31))] == ["incident:later"]


def test_claim_takes_the_oldest_due_first_up_to_the_limit(engine: Engine) -> None:
    now = utcnow()
    with session_scope(engine) as session:
        for i in (3, 1, 4, 0, 2):
            mark_dirty(session, f"incident:{i}", now=now - dt.timedelta(seconds=10 - i))
    got = _claim(engine, limit=3, now=now)
    assert {c.key for c in got} == {"incident:0", "incident:1", "incident:2"}
    assert all(c.worker == WORKER and c.generation == 1 for c in got)
    assert {c.key for c in _claim(engine, "other", now=now)} == {"incident:3", "incident:4"}
    assert _claim(engine, "third", now=now) == []


@pytest.mark.timeout(60)
def test_threads_never_claim_a_key_twice(engine: Engine) -> None:
    keys = {f"incident:{i:03d}" for i in range(200)}
    with session_scope(engine) as session:
        for key in keys:
            mark_dirty(session, key)
    start = threading.Barrier(6)
    claimed: dict[str, list[str]] = {}

    def work(worker: str) -> None:
        start.wait(timeout=10)
        claimed[worker] = _claim_all(engine, worker)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=50)
    every = [key for keys_of_one in claimed.values() for key in keys_of_one]
    assert len(claimed) == 6
    assert len(every) == len(set(every)), "a key was claimed twice"
    assert set(every) == keys


@pytest.mark.timeout(90)
def test_processes_never_claim_a_key_twice(engine: Engine) -> None:
    keys = {f"incident:{i:03d}" for i in range(200)}
    with session_scope(engine) as session:
        for key in keys:
            mark_dirty(session, key)
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited sockets
    start = context.Barrier(2)
    results = context.Queue()
    url = engine.url.render_as_string(hide_password=False)
    processes = [
        context.Process(target=_claim_all_in_process, args=(url, f"proc{i}", start, results))
        for i in range(2)
    ]
    for process in processes:
        process.start()
    claimed: dict[str, list[str]] = {}
    deadline = time.monotonic() + 60
    while len(claimed) < len(processes) and time.monotonic() < deadline:
        try:
            worker, keys_of_one = results.get(timeout=0.2)
            claimed[worker] = keys_of_one
        except queue_module.Empty:  # a child that died says nothing: don't wait for it
            assert all(p.exitcode in (None, 0) for p in processes), "a claiming process died"
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert len(claimed) == len(processes)
    every = [key for keys_of_one in claimed.values() for key in keys_of_one]
    assert len(every) == len(set(every)), "a key was claimed twice"
    assert set(every) == keys


def test_a_claim_is_a_transaction_by_itself_on_postgresql_and_never_leaks_autocommit(
    engine: Engine,
) -> None:
    """The workers claim in a ``single`` scope: one UPDATE ... RETURNING, autocommit on
    PostgreSQL (no BEGIN and COMMIT round trips), a write transaction on SQLite. The pooled
    connection must come back to transactions for the next scope: a multi-statement write
    in autocommit would no longer be atomic."""
    with session_scope(engine) as session:
        mark_dirty(session, "incident:a")
    postgres = engine.dialect.name == "postgresql"
    for _ in range(3):  # the same pooled connection, scope after scope
        with session_scope(engine, single=True) as session:
            dbapi = session.connection().connection.dbapi_connection
            if postgres:
                assert dbapi is not None and dbapi.autocommit is True
            else:
                lock = engine_hooks(engine).write_lock
                assert lock is not None and lock._is_owned()  # type: ignore[attr-defined]
            claim(session, WORKER, limit=1, lease_seconds=60.0)
        with session_scope(engine) as session:
            dbapi = session.connection().connection.dbapi_connection
            if postgres:
                assert dbapi is not None and dbapi.autocommit is False
                # In a transaction: now() is the transaction's start, not the statement's.
                first = session.execute(text("SELECT now()")).scalar()
                time.sleep(0.01)
                assert session.execute(text("SELECT now()")).scalar() == first


def test_finish_deletes_unless_marked_again_meanwhile(engine: Engine) -> None:
    with session_scope(engine) as session:
        mark_dirty(session, "incident:a")
    (held,) = _claim(engine)
    with session_scope(engine) as session:  # a webhook arrives while we work
        mark_dirty(session, "incident:a", reason="during work")
        assert queue.queue_depth(session) == 1
    assert _claim(engine, "other") == []  # still ours until we finish
    with session_scope(engine) as session:
        assert finish(session, held) is False
    row = _row(engine, "incident:a")
    assert row is not None and row.claimed_by is None and row.generation == 2
    (again,) = _claim(engine, "other")
    assert again.generation == 2
    with session_scope(engine) as session:
        assert finish(session, again) is True
        assert queue.queue_depth(session) == 0


def test_an_expired_lease_lets_another_worker_claim(engine: Engine) -> None:
    now = utcnow()
    with session_scope(engine) as session:
        mark_dirty(session, "incident:a", now=now)
    (lost,) = _claim(engine, "crashed", lease_seconds=10, now=now)
    assert _claim(engine, "other", now=now + dt.timedelta(seconds=5)) == []
    (taken,) = _claim(engine, "other", now=now + dt.timedelta(seconds=11))
    assert taken.key == lost.key and taken.generation == lost.generation
    with session_scope(engine) as session:  # the first worker wakes up: it owns nothing now
        assert finish(session, lost) is False
        assert queue.renew(session, lost, lease_seconds=60) is False
        assert queue.retry_later(session, lost, delay=5, error="x") is False
    row = _row(engine, "incident:a")
    assert row is not None and row.claimed_by == "other"
    with session_scope(engine) as session:
        assert finish(session, taken) is True


def test_renew_keeps_the_lease(engine: Engine) -> None:
    now = utcnow()
    with session_scope(engine) as session:
        mark_dirty(session, "incident:a", now=now)
    (held,) = _claim(engine, lease_seconds=10, now=now)
    with session_scope(engine) as session:
        assert queue.renew(session, held, lease_seconds=30, now=now + dt.timedelta(seconds=8))
    assert _claim(engine, "other", now=now + dt.timedelta(seconds=20)) == []
    assert len(_claim(engine, "other", now=now + dt.timedelta(seconds=39))) == 1


def test_retry_later_and_release(engine: Engine) -> None:
    now = utcnow()
    with session_scope(engine) as session:
        mark_dirty(session, "incident:a", now=now)
    (held,) = _claim(engine, now=now)
    with session_scope(engine) as session:
        assert queue.retry_later(session, held, delay=30, error="jira 503", now=now)
    row = _row(engine, "incident:a")
    assert row is not None and (row.attempts, row.last_error, row.claimed_by) == (
        1,
        "jira 503",
        None,
    )
    assert row.due_at == now + dt.timedelta(seconds=30)
    assert _claim(engine, now=now + dt.timedelta(seconds=29)) == []
    (held,) = _claim(engine, now=now + dt.timedelta(seconds=30))
    assert held.attempts == 1
    with session_scope(engine) as session:
        assert queue.release(session, held, now=now + dt.timedelta(seconds=31))
    (held,) = _claim(engine, "other", now=now + dt.timedelta(seconds=31))
    assert held.attempts == 1  # a release is not a failure


def test_target_backoff_grows_caps_and_clears(engine: Engine) -> None:
    now = utcnow()
    with session_scope(engine) as session:
        delays = [
            queue.next_backoff(session, "i1", "jira:default", f"503 #{n}", base=2, cap=20, now=now)
            for n in range(6)
        ]
        for attempt, delay in enumerate(delays):
            ceiling = min(20, 2 * 2**attempt)
            assert ceiling / 2 <= delay <= ceiling
        assert queue.blocked_targets(session, "i1", now) == {"jira:default"}
        assert queue.blocked_targets(session, "i1", now + dt.timedelta(seconds=21)) == set()
        assert queue.blocked_targets(session, "i2", now) == set()
        queue.next_backoff(session, "i1", "statuspage:default", "429", now=now)
        queue.clear_backoff(session, "i1", "jira:default")
        assert queue.blocked_targets(session, "i1", now) == {"statuspage:default"}
        # After clearing, the count starts again from the bottom.
        assert queue.next_backoff(session, "i1", "jira:default", "503", base=2, now=now) <= 2


def test_debounce_keeps_working_under_a_steady_stream(engine: Engine) -> None:
    """A mark that lands while a worker holds the key starts the next burst: once released,
    later marks are debounced again instead of all being due at once."""
    t0 = utcnow()

    def at(seconds: float) -> dt.datetime:
        return t0 + dt.timedelta(seconds=seconds)

    def mark(seconds: float) -> None:
        with session_scope(engine) as s:
            mark_dirty(s, "incident:s", debounce=0.2, max_wait=2.0, now=at(seconds))

    mark(0.0)
    with session_scope(engine) as s:
        [held] = claim(s, "w1", limit=1, lease_seconds=60, now=at(2.5))
    mark(2.6)  # an edit while the reconcile runs
    with session_scope(engine) as s:
        assert finish(s, held) is False  # marked meanwhile: released, not deleted
    mark(2.8)
    with session_scope(engine) as s:
        row = s.get(Dirty, "incident:s")
        assert row is not None
        assert row.due_at == at(3.0), "a burst after the release must be debounced again"
