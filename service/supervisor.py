"""The worker process of ``itsm-sync run``: the poller and the workers in a child process.

Why: the HTTP process must answer a webhook within milliseconds while the workers reconcile.
In one interpreter they share the GIL (a thread that wants it back waits up to the 5 ms switch
interval, again for every database call) and every garbage collection stops them all; a
webhook then waits for the workers. So ``itsm-sync run`` serves HTTP in its own process and
runs the poller and the workers in a child process, started here with the ``spawn`` context:
the child builds its own :class:`~service.runtime.Runtime` from the same settings and starts it
with ``poll=True, workers=True``; the parent starts its own with neither.

Between the two:

- **wake-ups**: a pipe, parent to child. Every commit in the parent that queued work (a
  webhook, an API call) writes one byte (non-blocking: a full pipe already holds enough
  wake-ups); the child's control thread turns bytes into :meth:`Wakeup.notify` calls.
- **control**: a duplex :class:`~multiprocessing.connection.Connection`: the child says
  ``ready``; the parent asks for ``stats`` (worker totals, remote call counts, for
  ``/metrics``), ``reload`` (SIGHUP) and ``stop``.
- **the parent's death**: the child asks the kernel for SIGTERM when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``, Linux), notices the pipes' end of file, and checks
  ``os.getppid()`` every second (other systems, and the moment before ``prctl``): whichever
  comes first, it stops its workers (at most :data:`GRACE_SECONDS`) and exits. A
  ``kill -9`` of ``itsm-sync run`` leaves no worker process behind.
- **the child's death**: the parent's monitor thread sees it at once (the process sentinel),
  ``/readyz`` answers 503 (its ``workers`` check) while there is no ready worker process
  (``/healthz``, liveness, stays 200), and the monitor starts a new one after a backoff (1 s,
  doubling to 30 s; back to 1 s once one ran for a minute). Claims of the dead one come back
  at once (``reclaim_orphans`` when the new one starts).
- **logs**: the child inherits stderr and logs JSON lines there like the parent, with its pid.

With ``sync.worker_processes`` above 1 (:class:`WorkerProcesses`) there are that many such
children, each watched, restarted and asked as above on its own; each runs its share of the
worker threads and of every system's budget (``config.settings.worker_share``), and only the
first polls. ``itsm-sync backfill`` reconciles in as many (:func:`drain_in_processes`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import itertools
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any

from config.settings import Settings, worker_share

log = logging.getLogger("itsm_sync.supervisor")
CTX = multiprocessing.get_context("spawn")
# A stopping worker process gives its workers this long to finish what they hold (a clean
# stop, or its parent died), then exits anyway; the parent waits a little longer, then kills.
GRACE_SECONDS = 20.0
READY_TIMEOUT_SECONDS = 120.0
BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_RESET_AFTER = 1.0, 30.0, 60.0
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent thread dies; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


# --------------------------------------------------------------------------------------------
# The child
# --------------------------------------------------------------------------------------------


def child_main(
    settings: Settings,
    wake: Connection,
    control: Connection,
    parent: int,
    log_level: str,
    index: int = 0,
) -> None:
    """The worker process (the target of the spawned process): worker process ``index`` of
    ``sync.worker_processes``, with its share of the worker threads; the first also polls."""
    die_with_parent(signal.SIGTERM)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Ctrl-C in a terminal reaches the whole process group: the parent decides (asks us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if os.getppid() != parent:  # it died before prctl
        return
    if settings.sync.worker_process_nice:
        with contextlib.suppress(OSError):
            os.nice(settings.sync.worker_process_nice)
    from config.logging import setup_logging
    from service.runtime import Runtime, settle_gc

    setup_logging(log_level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_tag_worker_records)
    settings = worker_share(settings, index)  # its threads and its part of each budget
    runtime = Runtime(settings)
    runtime.start(poll=index == 0, workers=True)
    settle_gc()
    why = ["SIGTERM"]
    try:
        control.send(("ready", os.getpid()))
        log.info("worker process %d ready", os.getpid())
    except OSError:  # the parent went away while we started
        why[0] = "the parent process died"
        stop.set()
    threading.Thread(
        target=_serve_parent,
        args=(runtime, wake, control, parent, stop, why),
        name="worker-control",
        daemon=True,
    ).start()
    while not stop.wait(1.0):
        pass
    log.info("worker process %d stopping: %s", os.getpid(), why[0])
    stopper = threading.Thread(target=runtime.stop, name="worker-stop", daemon=True)
    stopper.start()
    stopper.join(GRACE_SECONDS)
    if stopper.is_alive():
        log.warning("worker process %d: workers still busy; exiting anyway", os.getpid())
        logging.shutdown()
        os._exit(1)


def _tag_worker_records(record: logging.LogRecord) -> bool:
    record.role = "workers"  # a field of its own in the JSON lines: which process said it
    return True


def _serve_parent(
    runtime: Any,
    wake: Connection,
    control: Connection,
    parent: int,
    stop: threading.Event,
    why: list[str],
) -> None:
    """The child's control thread: wake-ups, requests, and watching for the parent's death."""
    threads = max(1, runtime.settings.sync.workers)
    wake_fd = wake.fileno()

    def done(reason: str) -> None:
        why[0] = reason
        stop.set()

    while not stop.is_set():
        if os.getppid() != parent:
            return done("the parent process died")
        try:
            ready = wait([wake, control], timeout=1.0)
        except OSError:
            return done("the parent process died")
        for source in ready:
            if source is wake:
                try:
                    data = os.read(wake_fd, 4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    return done("the parent process died")
                runtime.wakeup.notify(min(len(data), threads))
                continue
            try:
                message = control.recv()
            except (EOFError, OSError):
                return done("the parent process died")
            kind = message[0]
            if kind == "stop":
                return done("asked to stop")
            if kind == "reload":
                runtime.reloader.check(force=True)
            elif kind == "stats":
                with contextlib.suppress(OSError, ValueError):
                    control.send(("stats", message[1], runtime.local_stats()))


# --------------------------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------------------------


class WorkerProcess:
    """Runs, watches and restarts the worker process; see the module's docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        restart: bool = True,
        log_level: str | None = None,
        index: int = 0,
    ) -> None:
        self.settings = settings
        self.restart = restart
        self.index = index  # which of sync.worker_processes (the first also polls)
        # The child logs at this process's level (``run`` set it from the settings).
        self.log_level = log_level or logging.getLevelName(logging.getLogger().getEffectiveLevel())
        self.process: Any = None
        self.ready_pid: int | None = None  # the pid of the current child once it said ready
        self.starts = 0
        self.deaths = 0
        self.last_exit: str = ""
        self._lock = threading.Lock()  # the pipes below change on restart
        self._wake_fd = -1
        self._control: Connection | None = None
        self._send_lock = threading.Lock()
        self._replies: dict[int, Any] = {}
        self._replied = threading.Condition()
        self._ids = itertools.count(1)
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._stopped = False
        self._stop_r, self._stop_w = os.pipe()  # wakes the monitor's wait() on stop
        self._monitor: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the monitor thread, which starts the worker process (and restarts it)."""
        self._monitor = threading.Thread(target=self._watch, name="worker-process", daemon=True)
        self._monitor.start()

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> bool:
        return self._ready.wait(timeout)

    @property
    def ready_pids(self) -> list[int | None]:
        return [self.ready_pid]

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def health(self) -> tuple[bool, str]:
        """(healthy, what to say): healthy once a worker process is running and ready."""
        if self._ready.is_set() and self.alive:
            return True, f"ok (worker process {self.ready_pid})"
        if self.deaths:
            return False, f"the worker process died ({self.last_exit}); restarting"
        return False, "the worker process is starting"

    def _spawn(self) -> tuple[Any, Connection]:
        wake_r, wake_w = CTX.Pipe(duplex=False)
        control, child_control = CTX.Pipe(duplex=True)
        process = CTX.Process(
            target=child_main,
            args=(self.settings, wake_r, child_control, os.getpid(), self.log_level, self.index),
            name=f"itsm-sync-workers-{self.index}" if self.index else "itsm-sync-workers",
            daemon=True,
        )
        process.start()
        wake_r.close()  # only the child reads: its end of file then means "the parent died"
        child_control.close()
        fd = os.dup(wake_w.fileno())
        wake_w.close()
        os.set_blocking(fd, False)
        with self._lock:
            old, self._wake_fd, self._control = self._wake_fd, fd, control
            self.process = process
        if old >= 0:
            os.close(old)
        self.starts += 1
        return process, control

    def _watch(self) -> None:
        """The monitor thread: start the child, wait for it to say ready or die, restart it.

        The child is started from this thread, which lives as long as the service: Linux sends
        the parent-death signal when the *thread* that started a child ends."""
        while not self._stopping.is_set():
            try:
                self._watch_loop()
                return
            except Exception:  # a bug here: start afresh rather than run unwatched
                log.exception("watching the worker process failed; starting a new one")
                if self.process is not None and self.process.is_alive():
                    self.process.kill()
                    self.process.join(5)
                self._ready.clear()
                self._stopping.wait(BACKOFF_FIRST)

    def _watch_loop(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                process, control = self._spawn()
            except Exception:
                log.exception("cannot start the worker process")
                process, control = None, None
            while process is not None and control is not None and not self._stopping.is_set():
                ready = wait([process.sentinel, control, self._stop_r])
                if control in ready:
                    try:
                        message = control.recv()
                    except (EOFError, OSError):
                        message = None
                        process.join(5)  # it is going away: wait for the sentinel
                    if message is not None:
                        self._handle(message)
                if process.sentinel in ready or not process.is_alive():
                    process.join(1)
                    break
            if self._stopping.is_set():
                # Wait here, not in stop(): when this thread ends, the child gets SIGTERM.
                if process is not None:
                    self._reap(process)
                return
            self._ready.clear()
            self.ready_pid = None
            self.deaths += 1
            code = process.exitcode if process is not None else None
            self.last_exit = (
                f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
            )
            if not self.restart:
                log.error("the worker process died (%s); not restarting", self.last_exit)
                return
            if time.monotonic() - started > BACKOFF_RESET_AFTER:
                backoff = BACKOFF_FIRST
            log.error(
                "the worker process died (%s); starting a new one in %.0f s",
                self.last_exit,
                backoff,
            )
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _handle(self, message: Any) -> None:
        kind = message[0]
        if kind == "ready":
            self.ready_pid = int(message[1])
            self._ready.set()
        elif kind == "stats":
            with self._replied:
                self._replies[message[1]] = message[2]
                self._replied.notify_all()

    def _reap(self, process: Any, timeout: float = GRACE_SECONDS + 10) -> None:
        process.join(timeout)
        if process.is_alive():
            log.error("the worker process did not stop within %.0f s: killing it", timeout)
            process.kill()
            process.join(5)

    def stop(self) -> None:
        """Ask the worker process to stop (its workers finish what they hold), wait for it,
        SIGKILL it if it hangs. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._send(("stop",))
        self._stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        if self._monitor is not None:
            self._monitor.join(GRACE_SECONDS + 20)
        elif self.process is not None:
            self._reap(self.process)
        with self._lock:
            if self._wake_fd >= 0:
                os.close(self._wake_fd)
                self._wake_fd = -1
            if self._control is not None:
                self._control.close()
                self._control = None
        self._ready.clear()
        if self._monitor is None or not self._monitor.is_alive():
            for fd in (self._stop_r, self._stop_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- talking to it ------------------------------------------------------------------------

    def poke(self) -> None:
        """Wake the worker process's idle workers (work was queued); never blocks."""
        with self._lock:
            if self._wake_fd < 0:
                return
            try:
                os.write(self._wake_fd, b"\x01")
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already
            except OSError as exc:  # the child is gone; the monitor restarts it
                if exc.errno not in (errno.EPIPE, errno.EBADF):
                    raise

    def _send(self, message: tuple[Any, ...]) -> bool:
        with self._lock:
            control = self._control
        if control is None:
            return False
        try:
            with self._send_lock:
                control.send(message)
        except (OSError, ValueError):
            return False
        return True

    def reload(self) -> None:
        """SIGHUP for the worker process: reload the mappings."""
        self._send(("reload",))

    def stats(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The worker process's :meth:`Runtime.local_stats`; None if it does not answer."""
        if not self._ready.is_set():
            return None
        ident = next(self._ids)
        if not self._send(("stats", ident)):
            return None
        with self._replied:
            if not self._replied.wait_for(lambda: ident in self._replies, timeout):
                return None
            return dict(self._replies.pop(ident))


class WorkerProcesses:
    """``sync.worker_processes`` worker processes (more than one), each a
    :class:`WorkerProcess` watched and restarted on its own, seen by the HTTP process's
    Runtime as one: a wake-up reaches every one (the first idle worker to claim the key wins,
    the others find nothing due and sleep again), ``reload`` and ``stop`` go to all, ``health``
    is healthy while all are ready, ``stats`` adds theirs up."""

    def __init__(
        self, settings: Settings, *, restart: bool = True, log_level: str | None = None
    ) -> None:
        self.settings = settings
        self.children = [
            WorkerProcess(settings, restart=restart, log_level=log_level, index=i)
            for i in range(settings.sync.worker_processes)
        ]

    @property
    def ready_pid(self) -> int | None:
        """The first (polling) worker process's pid once every one is ready."""
        pids = [child.ready_pid for child in self.children]
        return pids[0] if all(pid is not None for pid in pids) else None

    @property
    def ready_pids(self) -> list[int | None]:
        return [child.ready_pid for child in self.children]

    @property
    def deaths(self) -> int:
        return sum(child.deaths for child in self.children)

    def start(self) -> None:
        for child in self.children:
            child.start()

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> bool:
        deadline = time.monotonic() + timeout
        return all(c.wait_ready(max(0.0, deadline - time.monotonic())) for c in self.children)

    def health(self) -> tuple[bool, str]:
        states = [child.health() for child in self.children]
        if all(ok for ok, _ in states):
            pids = ", ".join(str(child.ready_pid) for child in self.children)
            return True, f"ok ({len(self.children)} worker processes: {pids})"
        return False, "; ".join(
            f"worker process {i + 1} of {len(states)}: {why}"
            for i, (ok, why) in enumerate(states)
            if not ok
        )

    def poke(self) -> None:
        for child in self.children:
            child.poke()

    def reload(self) -> None:
        for child in self.children:
            child.reload()

    def stop(self) -> None:
        """Stop them all at once (each gives its workers :data:`GRACE_SECONDS`)."""
        stoppers = [threading.Thread(target=c.stop, daemon=True) for c in self.children]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()

    def stats(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """Their :meth:`Runtime.local_stats` added up; None if one does not answer."""
        from service.runtime import WORK_COUNTS, add_stats

        out: dict[str, Any] = {"pid": []}
        for child in self.children:
            one = child.stats(timeout)
            if one is None:
                return None
            out["pid"].append(one["pid"])
            add_stats(out, one, (*WORK_COUNTS, "wakeups", "woken"))
        return out


def worker_processes(
    settings: Settings, *, restart: bool = True, log_level: str | None = None
) -> WorkerProcess | WorkerProcesses:
    """The worker process(es) ``itsm-sync run`` starts, as ``sync.worker_processes`` asks."""
    if settings.sync.worker_processes == 1:
        return WorkerProcess(settings, restart=restart, log_level=log_level)
    return WorkerProcesses(settings, restart=restart, log_level=log_level)


# --------------------------------------------------------------------------------------------
# A backfill's reconcile in worker processes
# --------------------------------------------------------------------------------------------


def _drain_main(
    settings: Settings, index: int, timeout: float, lease: float, out: Connection, level: str
) -> None:
    """One backfill worker process: drain the queue with its share of the threads and of each
    system's budget, then send its totals."""
    die_with_parent(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent decides (and exits)
    from config.logging import setup_logging
    from service.runtime import Runtime
    from sync.worker import drain

    setup_logging(level, json_lines=False)
    share = worker_share(settings, index)
    log.info(
        "backfill worker process %d of %d (pid %d): %d worker threads",
        index + 1, settings.sync.worker_processes, os.getpid(), share.sync.workers,
    )  # fmt: skip
    runtime = Runtime(share)
    try:
        totals = drain(runtime.reconciler, threads=share.sync.workers, timeout=timeout, lease=lease)
    finally:
        runtime.stop()
    out.send(
        (totals.reconciled, totals.writes, totals.conflicts, totals.failures, sorted(totals.parked))
    )


def drain_in_processes(settings: Settings, *, timeout: float, lease: float) -> Any:
    """Drain the queue in ``sync.worker_processes`` processes (each with its share of the
    threads and budgets, as ``run``'s worker processes) until nothing is due; their totals
    added up (a :class:`sync.worker.Totals`). RuntimeError if one died: what it held comes
    back when its lease runs out (or at once, to the next backfill on this host)."""
    from sync.worker import Totals

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    children = []
    for index in range(settings.sync.worker_processes):
        reader, writer = CTX.Pipe(duplex=False)
        process = CTX.Process(
            target=_drain_main,
            args=(settings, index, timeout, lease, writer, level),
            name=f"itsm-sync-backfill-{index}",
            daemon=True,
        )
        process.start()
        writer.close()
        children.append((process, reader))
    totals = Totals()
    died: list[str] = []
    for process, reader in children:
        try:
            reconciled, writes, conflicts, failures, parked = reader.recv()
        except (EOFError, OSError):
            process.join(5)
            code = process.exitcode
            died.append(f"signal {-code}" if code is not None and code < 0 else f"exit {code}")
            continue
        process.join(30)
        totals.reconciled += reconciled
        totals.writes += writes
        totals.conflicts += conflicts
        totals.failures += failures
        totals.parked |= set(parked)
    if died:
        raise RuntimeError(
            f"{len(died)} of {len(children)} backfill worker processes died "
            f"({', '.join(died)}); run the backfill again: it resumes"
        )
    return totals
