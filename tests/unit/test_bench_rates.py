"""bench.throughput's rates: the service's write rate, not one change's latency besides."""

from __future__ import annotations

import pytest

from bench.throughput import rates


def _round(n: int, offered: float, capacity: float, latency: float) -> tuple[dict[str, float], ...]:
    """n edits offered at `offered`/s; a service that writes at most `capacity`/s, each write
    at least `latency` s after its edit."""
    edits = {f"t{i}": i / offered for i in range(n)}
    writes: dict[str, float] = {}
    free = 0.0
    for i in range(n):
        at = max(edits[f"t{i}"] + latency, free)
        writes[f"t{i}"] = at
        free = at + 1 / capacity
    return edits, writes


def test_a_service_without_limit_is_measured_at_the_offered_rate_not_capped_by_latency() -> None:
    edits, writes = _round(300, offered=125, capacity=1e9, latency=0.5)
    rate, from_first_edit = rates(edits, writes, set(edits))
    assert rate == pytest.approx(125, rel=0.01)
    # The old figure: 300 / (2.4 s + 0.5 s) whatever the service's capacity.
    assert from_first_edit == pytest.approx(300 / (299 / 125 + 0.5), rel=0.01)
    assert from_first_edit < 105


@pytest.mark.parametrize("capacity", [40.0, 90.0, 110.0])
def test_a_service_slower_than_the_offered_rate_is_measured_at_its_own_rate(
    capacity: float,
) -> None:
    edits, writes = _round(300, offered=125, capacity=capacity, latency=0.5)
    rate, from_first_edit = rates(edits, writes, set(edits))
    assert rate == pytest.approx(capacity, rel=0.01)
    assert from_first_edit < rate


def test_a_late_straggler_lowers_the_rate_and_lost_changes_do_not_count() -> None:
    edits, writes = _round(100, offered=125, capacity=1e9, latency=0.5)
    straggler = dict(writes, t99=writes["t99"] + 10.0)
    assert rates(edits, straggler, set(edits))[0] < 10
    lost = {t: at for t, at in writes.items() if t != "t50"}
    rate, _ = rates(edits, lost, set(edits))
    assert rate == pytest.approx(98 / (writes["t99"] - writes["t0"]))
    assert rates(edits, {"t0": 1.0}, set(edits)) == (0.0, 0.0)
