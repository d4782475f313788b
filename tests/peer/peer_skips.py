"""Tests of the peer suites that do not run against the simulators, each with its reason.

Keys are pytest node ids (a file or class id covers everything in it). Categories:

- ``admin``: needs a real server's administration features (creating or deleting projects,
  users, groups, fields, schemes, dashboards, …) or product add-ons (Jira Software boards and
  sprints, Jira Service Management), which the simulators do not have. These are left out of the
  pass-rate figure.
- ``instance``: needs data or configuration of the suite authors' own instance (a plugin, a
  scoped app, a custom table) that no simulator fixture reproduces. Also left out.
"""

from __future__ import annotations

SKIPS: dict[str, dict[str, tuple[str, str]]] = {
    "pysnc": {
        **{
            f"{d}test_snc_iteration.py::{cls}Iteration::{t}": (
                "instance",
                "iterates sys_metadata, the platform's application-file table (more than 500 "
                "rows on any instance); the simulator has no application files",
            )
            for d, cls in (("test/", "Test"), ("test/asyncio/", "TestAsync"))
            for t in ("test_default_behavior", "test_rewind_behavior")
        },
        **{
            f"{d}test_snc_api_write.py::{cls}Write::test_multi_update_with_failures": (
                "admin",
                "inserts a business rule (sys_script) that aborts updates; the simulator runs "
                "no server-side scripts",
            )
            for d, cls in (("test/", "Test"), ("test/asyncio/", "TestAsync"))
        },
    },
    "jira": {},
}
