"""Faults injected by the simulators (``/_sim/faults``), seen through every connector."""

from __future__ import annotations

import time
import uuid

import pytest

from connectors.base import Visibility
from connectors.errors import Fatal, RateLimited, Retriable
from simulators.runner import SimulatorCluster
from tests.contract.conftest import BUILDERS
from tests.contract.harness import FAST_RETRY, Harness


def key() -> str:
    return f"itsm-{uuid.uuid4().hex[:12]}"


def test_5xx_burst_is_retried(harness: Harness) -> None:
    harness.faults(route=harness.create_route, error_rate=1.0, error_status=503, count=2)
    k = key()
    rec = harness.connector.create(
        harness.object_type, harness.new_fields("burst"), correlation_key=k
    )
    assert harness.hits(harness.create_route) == 3  # two 503s, then the create
    found = harness.connector.find_by_correlation(harness.object_type, k)
    assert found is not None and found.ref == rec.ref


def test_retry_after_is_honoured(harness: Harness) -> None:
    rec = harness.connector.create(
        harness.object_type, harness.new_fields("ra"), correlation_key=key()
    )
    before = harness.hits(harness.get_route)
    harness.faults(route=harness.get_route, rate_limit_rate=1.0, retry_after=1, count=1)
    started = time.monotonic()
    got = harness.connector.get(harness.object_type, rec.ref.id)
    elapsed = time.monotonic() - started
    assert got.ref == rec.ref
    assert elapsed >= 1.0, f"re-sent after {elapsed:.2f}s, before Retry-After (1 s) expired"
    assert harness.hits(harness.get_route) - before == 2


def test_long_retry_after_is_handed_back(harness: Harness) -> None:
    harness.faults(route=harness.get_route, rate_limit_rate=1.0, retry_after=120, count=1)
    started = time.monotonic()
    with pytest.raises(RateLimited) as limited:
        harness.connector.get(harness.object_type, "0" * 32)
    assert limited.value.retry_after == 120
    assert time.monotonic() - started < 5
    assert harness.hits(harness.get_route) == 1


def test_fatal_errors_are_not_retried(harness: Harness) -> None:
    harness.faults(route=harness.create_route, error_rate=1.0, error_status=400, count=5)
    with pytest.raises(Fatal):
        harness.connector.create(
            harness.object_type, harness.new_fields("bad"), correlation_key=key()
        )
    assert harness.hits(harness.create_route) == 1


def test_connection_reset_is_retried(harness: Harness) -> None:
    rec = harness.connector.create(
        harness.object_type, harness.new_fields("rst"), correlation_key=key()
    )
    before = harness.hits(harness.get_route)
    harness.faults(route=harness.get_route, reset_rate=1.0, count=1)
    assert harness.connector.get(harness.object_type, rec.ref.id).ref == rec.ref
    assert harness.hits(harness.get_route) - before == 2


def test_system_down_gives_up_after_the_attempt_budget(harness: Harness) -> None:
    harness.control("faults", {"down": True})
    with pytest.raises(Retriable):
        harness.connector.get(harness.object_type, "0" * 32)
    assert harness.hits(harness.get_route) == FAST_RETRY.max_attempts


def test_create_that_timed_out_after_storing_is_not_repeated(harness: Harness) -> None:
    connector = harness.with_timeout(1.0)
    harness.faults(
        route=harness.create_route,
        timeout_rate=1.0,
        timeout_seconds=3,
        timeout_when="after",
        count=1,
    )
    k = key()
    rec = connector.create(harness.object_type, harness.new_fields("once"), correlation_key=k)
    assert harness.hits(harness.create_route) == 1, "the create was sent twice"
    found = harness.connector.find_by_correlation(harness.object_type, k)
    assert found is not None and found.ref == rec.ref


COMMENT_ROUTES = {
    "servicenow": "PATCH /api/now/table/{table}/{sys_id}",
    "jira": "POST /rest/api/{version}/issue/{issueIdOrKey}/comment",
}


@pytest.mark.parametrize("system", sorted(COMMENT_ROUTES))
def test_comment_whose_answer_was_lost_is_not_posted_again(
    system: str, sims: SimulatorCluster
) -> None:
    """A comment POST/PATCH is not idempotent: a retry after a lost answer looks first."""
    harness = BUILDERS[system](sims)
    connector = harness.with_timeout(1.0)
    rec = connector.create(harness.object_type, harness.new_fields("c1"), correlation_key=key())
    route = COMMENT_ROUTES[system]
    harness.faults(route=route, timeout_rate=1.0, timeout_seconds=3, timeout_when="after", count=1)
    posted = connector.add_comment(
        rec.ref, "said once", visibility=Visibility.PUBLIC, origin="jira:OPS-9"
    )
    assert posted.body == "said once" and posted.origin == "jira:OPS-9"
    listed = [c for c in harness.connector.comments(rec.ref) if c.body == "said once"]
    assert len(listed) == 1, "the comment was posted twice"
