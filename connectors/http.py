"""Retry and rate policy shared by the connectors: exactly one retry layer per call.

- :class:`TokenBucket` is the proactive budget per (system, credential): requests wait for a
  token before they are sent, so Statuspage stays at 1 request/s without ever seeing a 420.
  A ``Retry-After`` from the remote pauses the whole bucket until it expires, so no request on
  that credential is re-sent early, from this call or any other.
- :class:`KeyedBuckets` keeps one bucket per key (Jira's per-issue write limit: 20 writes / 2 s).
- :func:`call_with_retries` runs one remote call with tenacity: it retries only
  :class:`~connectors.errors.Retriable` errors, waits at least what ``Retry-After`` asked, and
  gives up (re-raising the last error) after ``max_attempts`` or when the remote asks for a wait
  longer than ``max_wait``, so a worker is never parked in a sleep for an hour.
- :class:`Slots` bounds how many calls to one system are in flight at once (``max_concurrency``
  of its settings): workers wait for a slot *before* they wait for a token, so tokens are never
  saved up by waiting threads and spent in a burst; the token buckets stay the only rate gate.
- :class:`CallCounter` counts every call by system, method and status, for metrics.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from connectors.errors import ConnectorError, RateLimited, Retriable

log = logging.getLogger("itsm_sync.connectors")

T = TypeVar("T")


class TokenBucket:
    """A thread-safe token bucket: ``rate`` tokens per second, at most ``capacity`` saved."""

    def __init__(
        self,
        rate: float,
        capacity: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("a token bucket needs rate > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._tokens = capacity
        self._updated = clock()
        self._paused_until = 0.0
        self._epoch = 0  # bumped by pause_for: reservations made before it are void
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def acquire(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens, waiting for them; returns how long it waited.

        A reservation: the tokens are taken at once (the bucket may go into debt) and the caller
        sleeps until the bucket would have held them, so waiting callers leave on a fixed
        schedule at ``rate``. (Taking a token only once it is there loses rate: with a capacity
        of 1 a token not taken the moment it appears is never made, so every late wake-up of a
        waiting thread -- a few ms on a busy machine -- was lost for good: 88 % of the rate.)
        A :meth:`pause_for` while a caller sleeps cancels its reservation: it waits for the
        pause to end and reserves again."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._refill(now)
                pause = self._paused_until - now
                reserved = pause <= 0
                if reserved:
                    self._tokens -= cost
                    if self._tokens >= 0:
                        return waited
                    delay = -self._tokens / self.rate
                else:
                    delay = pause
                epoch = self._epoch
            self._sleep(delay)
            waited += delay
            if reserved:
                with self._lock:
                    if self._epoch == epoch:
                        return waited  # no pause meanwhile: the reservation stands

    def try_acquire(self, cost: float = 1.0, *, take: bool = True) -> float:
        """Never blocks: 0.0 when ``cost`` tokens are there (taken unless ``take`` is False),
        else how many seconds until they will be (nothing taken)."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            pause = self._paused_until - now
            if pause <= 0 and self._tokens >= cost:
                if take:
                    self._tokens -= cost
                return 0.0
            return max(pause, (cost - self._tokens) / self.rate)

    def idle(self) -> bool:
        """Full and not paused: in the same state as a new bucket (so it may be forgotten)."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            return self._tokens >= self.capacity and self._paused_until <= now

    def pause_for(self, seconds: float) -> None:
        """Hold every request on this bucket for ``seconds`` (a remote's ``Retry-After``)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
            self._tokens = 0.0  # and the debt of waiting reservations: they reserve again
            self._epoch += 1


class KeyedBuckets:
    """One :class:`TokenBucket` per key, created on first use, forgotten once it is full again.

    Kept least recently used first; each ``get`` drops the oldest buckets that are idle (full,
    not paused: the same as a new one), so a long-running service holds buckets only for the
    keys written to in the last few seconds, not for every issue it ever wrote to.
    """

    def __init__(
        self,
        rate: float,
        capacity: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, TokenBucket] = {}  # insertion order = least recently used first
        self._peak = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.pop(key, None)
            if bucket is None:
                bucket = TokenBucket(self.rate, self.capacity, clock=self._clock, sleep=self._sleep)
            self._buckets[key] = bucket  # now the most recently used
            while len(self._buckets) > 1:
                oldest = next(iter(self._buckets))
                if not self._buckets[oldest].idle():
                    break  # the rest were used later still
                del self._buckets[oldest]
            self._peak = max(self._peak, len(self._buckets))
            if self._peak > 64 and len(self._buckets) < self._peak // 4:
                self._buckets = dict(self._buckets)  # a dict never shrinks its table by itself
                self._peak = len(self._buckets)
            return bucket

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True)
class RatePolicy:
    """The proactive budget for one system. ``None`` rate: no proactive limit."""

    requests_per_second: float | None = None
    burst: float = 1.0
    per_key_writes: float | None = None  # e.g. Jira: 10/s sustained, burst 20 per issue
    per_key_burst: float = 20.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_wait: float = 0.2
    max_backoff: float = 10.0
    max_wait: float = 60.0  # a Retry-After longer than this is handed back to the caller


_registry_lock = threading.Lock()
_buckets: dict[tuple[str, str], TokenBucket] = {}


def credential_fingerprint(secret: str) -> str:
    """A stable, non-reversible id for a credential (never the credential itself)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def bucket_for(system: str, fingerprint: str, policy: RatePolicy) -> TokenBucket | None:
    """The shared bucket for (system, credential): every client using it shares the budget."""
    if policy.requests_per_second is None:
        return None
    with _registry_lock:
        key = (system, fingerprint)
        bucket = _buckets.get(key)
        if bucket is None:
            bucket = _buckets[key] = TokenBucket(policy.requests_per_second, policy.burst)
        return bucket


def reset_buckets() -> None:
    """Forget every shared bucket and its pauses (tests; a process normally never needs it)."""
    with _registry_lock:
        _buckets.clear()


class Slots:
    """At most ``limit`` calls to one system in flight at once, from any thread.

    Re-entrant per thread: a call made while this thread already holds a slot of the same
    system (a create that looks first, inside one attempt) takes no second slot, so a full set
    of holders can never wait on each other."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.limit = limit
        self._sem = threading.BoundedSemaphore(limit)
        self._mine = threading.local()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0  # the most in flight at once (tests, diagnostics)

    @contextmanager
    def hold(self) -> Iterator[None]:
        depth = getattr(self._mine, "depth", 0)
        if depth == 0:
            self._sem.acquire()
            with self._lock:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
        self._mine.depth = depth + 1
        try:
            yield
        finally:
            self._mine.depth = depth
            if depth == 0:
                with self._lock:
                    self.in_flight -= 1
                self._sem.release()


_slots: dict[tuple[str, str], Slots] = {}


def limit_concurrency(system: str, limit: int, instance: str = "") -> Slots:
    """The slots of one system instance (its base URL): created, or replaced when the limit
    changed. Two instances (or two tests' simulators) never wait on each other's slots."""
    with _registry_lock:
        slots = _slots.get((system, instance))
        if slots is None or slots.limit != limit:
            slots = _slots[(system, instance)] = Slots(limit)
        return slots


def slots_for(system: str, instance: str = "") -> Slots | None:
    return _slots.get((system, instance))


class CallCounter:
    """Counts remote calls by (system, method, status); status is an int or an error name."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    def add(self, system: str, method: str, status: int | str) -> None:
        with self._lock:
            self._counts[(system, method.upper(), str(status))] += 1

    def snapshot(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._counts)

    def total(self, system: str | None = None, method: str | None = None) -> int:
        with self._lock:
            return sum(
                n
                for (s, m, _), n in self._counts.items()
                if (system is None or s == system) and (method is None or m == method.upper())
            )


CALLS = CallCounter()


class WaitCounter:
    """Seconds spent waiting for a rate budget (ours or a remote's Retry-After), per system."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, system: str, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self._seconds[system] = self._seconds.get(system, 0.0) + seconds

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._seconds)


RATE_WAITS = WaitCounter()


def call_with_retries(
    fn: Callable[[], T],
    *,
    system: str,
    what: str,
    policy: RetryPolicy = RetryPolicy(),
    bucket: TokenBucket | None = None,
    key_bucket: TokenBucket | None = None,
    slots: Slots | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn`` (one remote call that raises the taxonomy) with the retry and rate policy."""

    def before_attempt() -> None:
        if bucket is not None:
            RATE_WAITS.add(system, bucket.acquire())
        if key_bucket is not None:
            RATE_WAITS.add(system, key_bucket.acquire())

    if slots is None:
        slots = _slots.get((system, ""))

    def attempt() -> T:
        try:
            if slots is None:
                before_attempt()
                return fn()
            with slots.hold():  # a slot first, then a token (see the module's doc)
                before_attempt()
                return fn()
        except RateLimited as exc:
            if bucket is not None:
                bucket.pause_for(exc.retry_after)
            if exc.retry_after > policy.max_wait:
                raise _GiveUp(exc) from exc
            raise

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = wait_exponential_jitter(multiplier=policy.initial_wait, max=policy.max_backoff)(
            state
        )
        if isinstance(exc, RateLimited):
            return max(exc.retry_after, 0.0)
        return backoff

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s %s: attempt %d failed (%s); retrying in %.2fs",
            system,
            what,
            state.attempt_number,
            exc,
            state.next_action.sleep if state.next_action else 0.0,
        )

    retrying = Retrying(
        retry=retry_if_exception_type(Retriable),
        stop=stop_after_attempt(policy.max_attempts),
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except _GiveUp as give_up:
        raise give_up.error from None


class _GiveUp(Exception):
    """Internal: stop retrying and re-raise ``error`` (a wait longer than allowed)."""

    def __init__(self, error: ConnectorError) -> None:
        super().__init__(str(error))
        self.error = error
