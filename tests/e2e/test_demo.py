"""`itsm-sync demo` as `make demo` runs it (without holding the simulators open)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_opens_a_p1_and_shows_where_to_look(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "demo", "--no-hold", "--base-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "INC" in out and "priority 1" in out
    assert "project OPS" in out
    assert "component Checkout: operational" in out
    assert "export ITSM_SYNC_SERVICENOW__URL=http://127.0.0.1:" in out
    assert "/api/now/table/incident/" in out  # the record's URL
