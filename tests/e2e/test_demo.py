"""`itsm-sync demo` as `make demo` runs it (without holding it open): the whole story."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_demo_tells_the_p1_story(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "demo", "--no-hold", "--base-port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "250"},
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "priority 1" in out and "/nav_to.do?uri=incident.do?sys_id=" in out
    assert (
        "-> Jira OPS-" in out
        and "(Highest, Open, assigned to alice@example.com, component Checkout)" in out
    )
    assert "'Checkout': 'major_outage'" in out  # the public incident with its component
    assert "state 2 (In Progress)" in out
    assert "internal comment (visible to role Developers); on the status page: nothing" in out
    assert "none of them got a Jira issue of its own" in out
    assert "state 6" in out and "page resolved, {'Checkout': 'operational'}" in out
    assert "LEAKED" not in out
    # ... and on through the postmortem.
    assert "'Post-incident review: Checkout fails for all customers'" in out
    assert "is back to Resolved, with this work note:" in out
    assert "(jira:OPS-5): no owner; no due" in out
    assert "CHG0030001 'Alert on db01 disk usage': owner bob@example.com, due 2026-12-01" in out
    assert "owner carol@example.com, due 2026-12-15" in out
    assert "Closed; OPS-2 Closed" in out
    assert out.count("| CHG00300") == 2  # the audit: one row per action item
    assert (tmp_path / "itsm-sync-demo.db").exists()
    # The web console's address and a token for each kind of user, to sign in with.
    assert re.search(r"Web console: http://127\.0\.0\.1:\d+/ ", out)
    tokens = {
        role: re.search(rf"  {role} token: +(\S+)", out)
        for role in ("viewer", "change-manager", "admin")
    }
    assert all(tokens.values()), out
    assert len({m.group(1) for m in tokens.values() if m}) == 3
