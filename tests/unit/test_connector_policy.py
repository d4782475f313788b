"""The error table and the retry/rate policy, on a fake clock (no real sleeping)."""

from __future__ import annotations

import pytest

from connectors.errors import (
    AuthFailed,
    Conflict,
    Fatal,
    NotFound,
    RateLimited,
    Retriable,
    classify_response,
    parse_retry_after,
    redact,
    remote_message,
)
from connectors.http import KeyedBuckets, RetryPolicy, TokenBucket, call_with_retries


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, Fatal),
        (401, AuthFailed),
        (403, Fatal),
        (404, NotFound),
        (409, Conflict),
        (420, RateLimited),
        (422, Fatal),
        (429, RateLimited),
        (500, Retriable),
        (503, Retriable),
        (599, Retriable),
        (418, Fatal),
    ],
)
def test_one_table_classifies_statuses(status: int, cls: type) -> None:
    err = classify_response(system="jira", status=status, body=b"{}", headers={"Retry-After": "3"})
    assert type(err) is cls
    if cls is RateLimited:
        assert isinstance(err, RateLimited) and err.retry_after == 3.0


def test_remote_messages_of_each_system_are_kept_verbatim() -> None:
    sn = (
        b'{"error":{"message":"Operation Failed","detail":"Data Policy Exception"},'
        b'"status":"failure"}'
    )
    assert remote_message(sn) == "Operation Failed; Data Policy Exception"
    jira = b'{"errorMessages":[],"errors":{"labels":"Field \'labels\' cannot be set."}}'
    assert remote_message(jira) == "labels: Field 'labels' cannot be set."
    assert remote_message(b'{"message":"Could not authenticate"}') == "Could not authenticate"
    err = classify_response(system="servicenow", status=403, body=sn, what="update INC0010001")
    assert str(err) == (
        "servicenow: update INC0010001 failed (HTTP 403): Operation Failed; Data Policy Exception"
    )


def test_retry_after_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_secrets_are_redacted() -> None:
    text = redact("GET https://bob:pw@x.test/v1?api_key=abc123&page=2 Authorization: OAuth sim-key")
    assert "abc123" not in text and "pw@" not in text and "sim-key" not in text
    assert "page=2" in text


def test_token_bucket_keeps_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, capacity=1, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        bucket.acquire()
    assert clock.now == pytest.approx(4.0)  # 5 requests at 1/s: the first is free


def test_a_late_wake_up_costs_the_rate_nothing() -> None:
    """A waiting thread wakes a little late (10 ms here; more on a busy machine). The bucket
    holds 1, so a token not taken the moment it appeared used to be lost: 11 calls at 10/s took
    1.1 s instead of 1.0 (the backfill reached 88 % of its rate limit). Reservations keep the
    schedule: only the last call is late."""
    clock = FakeClock()

    def late(seconds: float) -> None:
        clock.sleep(seconds + 0.01)

    bucket = TokenBucket(rate=10.0, capacity=1, clock=clock, sleep=late)
    for _ in range(11):
        bucket.acquire()
    assert clock.now == pytest.approx(1.01)


def test_waiting_callers_reserve_their_turns() -> None:
    """Several callers waiting at once each get a turn 1/rate apart (not all at the refill)."""
    clock = FakeClock()
    bucket = TokenBucket(rate=4.0, capacity=1, clock=clock, sleep=lambda s: None)
    waits = [bucket.acquire() for _ in range(4)]  # nobody sleeps: all ask at time 0
    assert waits == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert bucket.try_acquire(take=False) == pytest.approx(1.0)  # the next free turn


def test_a_pause_voids_the_reservations_of_sleeping_callers() -> None:
    clock = FakeClock()
    paused: list[bool] = []

    def sleep(seconds: float) -> None:
        if not paused:  # a 429 elsewhere while this caller sleeps on its reservation
            paused.append(True)
            bucket.pause_for(5)
        clock.sleep(seconds)

    bucket = TokenBucket(rate=10.0, capacity=1, clock=clock, sleep=sleep)
    bucket.acquire()
    bucket.acquire()  # reserved for 0.1 s, then the pause: it waits for the pause to end
    assert clock.now == pytest.approx(5.0)
    assert bucket.try_acquire(take=False) == pytest.approx(0.1)  # its token was taken at 5 s


def test_per_key_buckets_are_kept_while_busy_and_forgotten_when_full() -> None:
    clock = FakeClock()
    buckets = KeyedBuckets(10.0, 20.0, clock=clock, sleep=clock.sleep)
    for i in range(1000):  # 1000 issues written once each, all within one refill time
        buckets.get(f"issue-{i}").acquire()
    assert len(buckets) == 1000  # none is full again: each still limits its issue
    busy = buckets.get("issue-0")
    for _ in range(19):
        busy.acquire()
    assert busy.acquire() == pytest.approx(0.1)  # 21st write in the window waits for a token
    clock.now += 2.0  # every bucket is full again
    buckets.get("issue-1000")
    assert len(buckets) == 1  # forgotten: a new bucket for them is the same as the old
    # A bucket still limiting its issue is never dropped, however old it is.
    buckets.get("issue-x").acquire()
    for i in range(5):
        buckets.get(f"later-{i}")
    assert len(buckets) >= 6


def test_retry_after_pauses_the_bucket_for_every_caller() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100.0, capacity=10, clock=clock, sleep=clock.sleep)
    bucket.pause_for(5)
    bucket.acquire()
    assert clock.now >= 5.0


def test_retries_only_retriable_and_honours_retry_after() -> None:
    clock = FakeClock()
    outcomes: list[Exception | str] = [
        RateLimited("slow down", retry_after=4, system="statuspage", status=420),
        Retriable("boom", system="statuspage", status=503),
        "ok",
    ]
    attempts: list[float] = []

    def fn() -> str:
        attempts.append(clock.now)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    result = call_with_retries(fn, system="statuspage", what="get", sleep=clock.sleep)
    assert result == "ok" and len(attempts) == 3
    assert attempts[1] - attempts[0] >= 4.0  # not re-sent before Retry-After expired


def test_fatal_is_not_retried() -> None:
    calls = 0

    def fn() -> None:
        nonlocal calls
        calls += 1
        raise Fatal("bad field", system="jira", status=400)

    with pytest.raises(Fatal):
        call_with_retries(fn, system="jira", what="edit", sleep=lambda s: None)
    assert calls == 1


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    calls = 0

    def fn() -> None:
        nonlocal calls
        calls += 1
        raise Retriable(f"down {calls}", system="jira", status=503)

    with pytest.raises(Retriable, match="down 3"):
        call_with_retries(
            fn, system="jira", what="get", policy=RetryPolicy(max_attempts=3), sleep=lambda s: None
        )
    assert calls == 3


def test_a_long_retry_after_is_handed_back_not_slept() -> None:
    slept: list[float] = []

    def fn() -> None:
        raise RateLimited("hourly limit", retry_after=3600, system="servicenow", status=429)

    with pytest.raises(RateLimited) as info:
        call_with_retries(fn, system="servicenow", what="list", sleep=slept.append)
    assert info.value.retry_after == 3600 and slept == []
