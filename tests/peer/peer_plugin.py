"""pytest plugin loaded into a peer suite's run (``-p peer_plugin``): points the suite at the
simulators and skips, with its reason, each test listed in ``peer_skips.py``.

It changes no test: the suites read their server and credentials from the environment, except
pycontribs/jira's Cloud mode, whose conftest names the project's own Cloud site; that one URL
is replaced by the simulator's.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from peer_skips import SKIPS

SUITE = os.environ.get("PEER_SUITE", "")


def pytest_plugin_registered(plugin: Any, manager: Any) -> None:
    manager_cls = getattr(plugin, "JiraTestManager", None)
    url = os.environ.get("PEER_JIRA_URL")
    if manager_cls is None or not url or getattr(manager_cls, "_peer_patched", False):
        return
    original = manager_cls.set_jira_cloud_details

    def set_jira_cloud_details(self: Any) -> None:
        original(self)
        self.CI_JIRA_URL = url

    manager_cls.set_jira_cloud_details = set_jira_cloud_details
    manager_cls._peer_patched = True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    table = SKIPS.get(SUITE, {})
    used: set[str] = set()
    for item in items:
        for key, (category, reason) in table.items():
            if item.nodeid == key or item.nodeid.startswith(key + "::"):
                item.add_marker(pytest.mark.skip(reason=f"[{category}] {reason}"))
                used.add(key)
                break
    report = os.environ.get("PEER_REPORT")
    if report:  # what was collected: a suite that aborts mid-run still counts every test
        with open(report, "w") as fh:
            json.dump(
                {
                    "collected": [item.nodeid for item in items],
                    # pycontribs/jira marks the tests its Cloud CI runs (-m allow_on_cloud)
                    "cloud": [i.nodeid for i in items if i.get_closest_marker("allow_on_cloud")],
                },
                fh,
            )
    stale = sorted(set(table) - used)
    if stale:
        raise pytest.UsageError(f"peer_skips.py names tests that do not exist: {stale}")
