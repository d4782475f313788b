"""Statuspage's find-before-create looks through every unresolved incident, not one page."""

from __future__ import annotations

import httpx

from connectors.statuspage.connector import META
from simulators.runner import SimulatorCluster
from tests.contract.conftest import statuspage_harness


def test_the_correlation_key_is_found_beyond_the_first_page(sims: SimulatorCluster) -> None:
    harness = statuspage_harness(sims)
    incidents = [
        {
            "id": f"seeded{i:06d}",
            "name": f"outage {i}",
            "status": "investigating",
            "metadata": {META: {"correlation_key": f"itsm-seeded-{i}"}},
        }
        for i in range(230)  # three pages of unresolved incidents
    ]
    httpx.post(f"{harness.url}/_sim/seed", json={"incidents": incidents}).raise_for_status()
    found = harness.connector.find_by_correlation("incident", "itsm-seeded-7")
    assert found is not None and found.ref.id == "seeded000007"
    # And a create with a key already on page three finds it instead of creating another.
    again = harness.connector.create(
        "incident", harness.new_fields("again"), correlation_key="itsm-seeded-3"
    )
    assert again.ref.id == "seeded000003"
    assert harness.connector.find_by_correlation("incident", "itsm-nowhere") is None
