"""The engine set-up: a PostgreSQL connection that went stale while idle is replaced without a
failed call (pinged only after idling, not on every checkout); a commit that queued work makes
the QueueNotifier send NOTIFY after it, and a listening process's workers wake; on both
dialects, the on_queued hooks run after the commit only."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event

from sync import store
from sync.queue import incident_key, mark_dirty
from sync.store import db as store_db
from sync.worker import QueueListener, QueueNotifier, Wakeup


def test_a_stale_idle_postgresql_connection_is_replaced_before_use(
    fresh_url: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "PG_PING_AFTER_IDLE_SECONDS", 0.2)
    db = store.make_engine(fresh_url("postgresql"))
    other = store.make_engine(db.url.render_as_string(hide_password=False))
    try:
        with db.connect() as connection:
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with other.connect() as connection:  # as a server restart would
            connection.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            connection.commit()
        time.sleep(0.3)
        with db.connect() as connection:  # no OperationalError: pinged, replaced
            assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pid
    finally:
        db.dispose()
        other.dispose()


def _until(done: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@contextmanager
def listening(db: Engine) -> Iterator[Wakeup]:
    """A QueueListener on ``db``, as a worker process has, once it listens (it notifies once
    when it starts)."""
    wakeup = Wakeup()
    listener = QueueListener(db, wakeup)
    listener.start()
    try:
        _until(lambda: wakeup.notified > 0, "the listener never started listening")
        yield wakeup
    finally:
        listener.stop()


def test_queued_work_is_notified_to_listening_workers_on_postgresql(
    fresh_url: Callable[[str], str],
) -> None:
    db = store.make_engine(fresh_url("postgresql"))
    store.migrate(db)
    writer = store.make_engine(db.url.render_as_string(hide_password=False))  # "another host"
    notifier = QueueNotifier(writer)
    store.engine_hooks(writer).on_queued.append(notifier.poke)
    try:
        with listening(db) as wakeup:
            seen = wakeup.seq
            with store.session_scope(writer) as s:
                mark_dirty(s, incident_key("i1"))
            assert wakeup.wait(seen, timeout=10), "no NOTIFY reached the listener"
    finally:
        notifier.stop()
        db.dispose()
        writer.dispose()


def test_read_only_scopes_on_postgresql_cost_no_transaction(
    fresh_url: Callable[[str], str],
) -> None:
    """A pure read needs no BEGIN and COMMIT round trips (under READ COMMITTED each statement
    has its own snapshot anyway): each statement of a read-only scope is its own transaction,
    while a write scope is one transaction."""
    db = store.make_engine(fresh_url("postgresql"))
    same = "SELECT now() = statement_timestamp()"  # true in a transaction's first statement only
    try:
        with store.session_scope(db, readonly=True) as s:
            s.connection().exec_driver_sql("SELECT pg_sleep(0.02)")
            assert s.connection().exec_driver_sql(same).scalar_one() is True
        with store.session_scope(db) as s:
            s.connection().exec_driver_sql("SELECT pg_sleep(0.02)")
            assert s.connection().exec_driver_sql(same).scalar_one() is False
    finally:
        db.dispose()


def test_on_queued_hooks_run_after_commit_on_both_dialects(engine: Engine) -> None:
    calls: list[bool] = []

    def hook() -> None:  # runs after the commit: another connection sees the row
        with store.session_scope(engine, readonly=True) as s:
            calls.append(s.get(store.Dirty, incident_key("i2")) is not None)

    hooks = store.engine_hooks(engine)
    hooks.on_queued.append(hook)
    try:
        with store.session_scope(engine) as s:
            mark_dirty(s, incident_key("i2"))
        assert calls == [True]
    finally:
        hooks.on_queued.remove(hook)


def test_the_notify_is_sent_outside_the_transaction_that_queued_the_work(
    fresh_url: Callable[[str], str],
) -> None:
    """The webhook's transaction never waits for a NOTIFY: its statements are the queue's only,
    and the notifier sends one NOTIFY for a burst of pokes, the last poke included."""
    db = store.make_engine(fresh_url("postgresql"))
    store.migrate(db)
    notifier = QueueNotifier(db)
    store.engine_hooks(db).on_queued.append(notifier.poke)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(db, "before_cursor_execute", seen)
    try:
        with listening(db) as wakeup:
            for n in range(20):
                with store.session_scope(db) as s:
                    mark_dirty(s, incident_key(f"i{n}"))
            assert not [x for x in statements if "NOTIFY" in x.upper()]
            _until(lambda: notifier.sent > 0, "no NOTIFY sent")
            seen_seq = wakeup.seq
            with store.session_scope(db) as s:  # the last poke of a burst is never lost
                mark_dirty(s, incident_key("last"))
            assert wakeup.wait(seen_seq, timeout=10), "the last poke sent no NOTIFY"
            assert 1 <= notifier.sent <= 21
    finally:
        event.remove(db, "before_cursor_execute", seen)
        store.engine_hooks(db).on_queued.remove(notifier.poke)
        notifier.stop()
        db.dispose()


def test_a_poke_just_before_stop_is_still_notified(fresh_url: Callable[[str], str]) -> None:
    """A CLI command that queues work (a replay) and exits at once still wakes the workers."""
    db = store.make_engine(fresh_url("postgresql"))
    notifier = QueueNotifier(db)
    try:
        with listening(db) as wakeup:
            seen = wakeup.seq
            notifier.poke()
            notifier.stop()
            assert notifier.sent == 1
            assert wakeup.wait(seen, timeout=10), "the NOTIFY never arrived"
    finally:
        db.dispose()


def test_a_notifier_that_cannot_connect_logs_and_never_fails_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = store.make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    notifier = QueueNotifier(db)
    try:
        with caplog.at_level(logging.WARNING, logger="itsm_sync.worker"):
            notifier.poke()  # returns at once; the thread fails to connect and says so
            _until(lambda: "NOTIFY itsm_sync_queue failed" in caplog.text, "no warning logged")
        assert notifier.sent == 0
    finally:
        notifier.stop()
        db.dispose()


def test_a_cli_replay_wakes_the_running_services_workers(
    fresh_url: Callable[[str], str],
) -> None:
    """`itsm-sync parked replay` queues the incident and exits: on PostgreSQL its NOTIFY wakes
    the workers of the running service at once (else they would look within 0.5 s)."""
    url = fresh_url("postgresql")
    db = store.make_engine(url)
    store.migrate(db)
    with store.session_scope(db) as s:
        store.park(s, incident_id="i1", target="jira:default", error="HTTP 400")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITSM_SYNC_")}
    try:
        with listening(db) as wakeup:
            seen = wakeup.seq
            done = subprocess.run(
                [sys.executable, "-m", "service", "parked", "replay", "--all"],
                env={**env, "ITSM_SYNC_DATABASE_URL": url},
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert "replaying 1" in done.stdout
            assert wakeup.wait(seen, timeout=10), "the replay sent no NOTIFY"
    finally:
        db.dispose()
