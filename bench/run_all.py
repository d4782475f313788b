"""Run every benchmark, one process each, and print one line per target.

``python -m bench.run_all [--small] [--no-postgres]`` (``make bench``)

Each benchmark prints its own tables as it goes (and the command that reproduces it alone);
the summary at the end has one line per target, ``PASS name: figure (target)`` or ``FAIL ...``,
and ``INFO name: figure`` for a figure reported for context (no target of its own). It is
meant to take at most 10 minutes on two cores; each benchmark's time is printed after it.

Benchmarks whose figures are times or rates run alone, one after another. Four whose figures
are counts run side by side, in one phase (``SIDE_BY_SIDE``): api_calls (calls and writes per
change against the minimum and the fair baseline, each round waited out until the service is
quiet), buckets (429s, and Statuspage's 1 request/s, which its bucket paces by the clock),
idle (the idle service's own CPU time and its calls per minute) and storage (database bytes
per edit). None of those figures depends on how busy the machine is; each benchmark's output
is printed whole, in the usual order, once the phase ends, and its "other processes used"
line then counts the others of the phase.
Memory runs alone although its figure is a count: beside the others its worker process grew
~20 MiB more (958 and 971 B per link against 742 and 747 alone); probably, not verified, a
slowed exercise keeps more pooled connections, and their SQLite page caches, busy at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, Row, command, load_note, parser, python_speed, speed_note

# Figures that are counts, not times: these run side by side (the module docstring says why).
SIDE_BY_SIDE = frozenset({"bench.api_calls", "bench.buckets", "bench.idle", "bench.storage"})


def benchmarks(small: bool, postgres: bool) -> list[tuple[str, list[str]]]:
    """(module, its arguments) in the order they are reported."""
    out: list[tuple[str, list[str]]] = [
        ("bench.api_calls", []),
        ("bench.latency", []),
        ("bench.ack", [] if postgres else ["--no-postgres"]),
        ("bench.memory", []),
        ("bench.buckets", []),  # 2,000 writes at the real limits: 0 x 429
        # Idle over a whole poll interval, so that the calls per minute count its polls.
        ("bench.idle", ["--seconds", "20" if small else "60"]),
        (
            "bench.throughput",
            ["--latency", "200"]
            + ([] if small else ["--latency", "0", "--latency", "100", "--latency", "300"])
            + (["--postgres"] if postgres else []),
        ),
        ("bench.console", []),  # every console page with 10,000 incidents: < 200 ms
        ("bench.storage", []),  # database bytes per edit after prune
        # 10,000 incidents paced to the rate limits (floor ~150 s; interrupted at 2x it).
        ("bench.backfill", []),
    ]
    return out


def phases(plan: list[tuple[str, list[str]]]) -> list[list[tuple[str, list[str]]]]:
    """The plan as phases: each timed benchmark alone, in order, and the count-only ones
    together in one phase where the first of them stood."""
    out: list[list[tuple[str, list[str]]]] = []
    group: list[tuple[str, list[str]]] = []
    for step in plan:
        if step[0] in SIDE_BY_SIDE:
            if not group:
                out.append(group)
            group.append(step)
        else:
            out.append([step])
    return out


def line(row: Row) -> str:
    verdict = {True: "PASS", False: "FAIL", None: "INFO"}[row.passed]
    target = f" ({row.goal})" if row.passed is not None else ""
    return f"{verdict} {row.benchmark} {row.metric}: {row.result}{target}"


def main() -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = p.parse_args()
    plan = benchmarks(args.small, not args.no_postgres)
    results: dict[str, list[Row]] = {}
    failed: list[str] = []
    started = time.monotonic()
    speed = python_speed()
    print(
        f"make bench on {platform.node()}: {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, CPython {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {load_note()}; "
        f"{speed_note(speed)}\n",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="itsm-bench-") as folder:
        for phase in phases(plan):
            if len(phase) > 1:
                names = ", ".join(module for module, _ in phase)
                print(f"(side by side, their figures being counts: {names})\n", flush=True)
            t0 = time.monotonic()
            runs = []
            for module, extra in phase:
                out = Path(folder) / f"{module}.json"
                argv = [sys.executable, "-m", module, *(["--small"] if args.small else []), *extra]
                log = Path(folder) / f"{module}.log" if len(phase) > 1 else None
                with open(log, "w") if log else contextlib.nullcontext() as sink:
                    proc = subprocess.Popen(
                        [*argv, "--json", str(out)],
                        cwd=ROOT,
                        stdout=sink,
                        stderr=subprocess.STDOUT if sink else None,
                    )
                runs.append((module, out, log, proc))
            for module, out, log, proc in runs:
                code = proc.wait()
                if log:
                    print(log.read_text(), end="", flush=True)
                print(f"({module}: {time.monotonic() - t0:.0f}s)\n", flush=True)
                if code != 0 or not out.exists():
                    failed.append(module)
                    name = module.split(".")[1]
                    status = f"exit status {code}"
                    results[module] = [Row(name, "the benchmark itself", "runs", status, False)]
                    continue
                results[module] = [Row(**r) for r in json.loads(out.read_text())]
    rows = [row for module, _ in plan for row in results.get(module, [])]
    elapsed = time.monotonic() - started
    print(f"Summary ({'--small' if args.small else 'full size'}, {elapsed:.0f} s):")
    # The machine's speed, again at the end (the VM's speed drifts): the CPU-bound figures
    # (throughput, backfill, the run's time) move with it.
    after = python_speed()
    speeds = f"{speed:.2f} at the start, {after:.2f} at the end (M steps/s of a fixed loop)"
    for row in [*rows, Row("run_all", "python speed", "", speeds, None)]:
        print(line(row))
    print(line(Row("run_all", "make bench time", "<= 600 s", f"{elapsed:.0f} s", elapsed <= 600)))
    print(f"\nreproduce: {command('bench.run_all', args.small)}")
    if failed:
        print(f"benchmarks that did not finish: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
