"""make bench's plan: what runs alone and what runs side by side (bench/run_all.py)."""

from __future__ import annotations

import pytest

from bench.run_all import SIDE_BY_SIDE, benchmarks, phases


def test_timed_benchmarks_run_alone_and_counts_side_by_side() -> None:
    plan = benchmarks(small=False, postgres=True)
    steps = phases(plan)
    together = [phase for phase in steps if len(phase) > 1]
    assert len(together) == 1
    assert {module for module, _ in together[0]} == SIDE_BY_SIDE
    # The four whose figures are counts (calls, 429s, idle CPU seconds, bytes).
    assert {"bench.api_calls", "bench.buckets", "bench.idle", "bench.storage"} == SIDE_BY_SIDE
    # Every benchmark runs exactly once, with its own arguments.
    assert sorted(step for phase in steps for step in phase) == sorted(plan)
    # Whatever measures a time or a rate has the machine to itself.
    for timed in ("bench.latency", "bench.ack", "bench.throughput", "bench.backfill"):
        assert [[m for m, _ in phase] for phase in steps].count([timed]) == 1


def test_python_speed_is_millions_of_loop_steps_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench import common

    fast = common.python_speed(rounds=2)
    assert 0.01 < fast < 1000  # millions of loop steps a second, not seconds or steps
    # With a clock that says each round took 0.1 s: 100,000 steps in 0.1 s.
    clock = iter(x * 0.1 for x in range(100))
    monkeypatch.setattr(common.time, "perf_counter", lambda: next(clock))
    assert common.python_speed(rounds=2) == 100_000 / 0.1 / 1e6
    assert "M steps/s" in common.speed_note(fast)
