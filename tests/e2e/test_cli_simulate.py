"""`itsm-sync simulate` and `itsm-sync config` as a user runs them: a real process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

CLI = [sys.executable, "-m", "service"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "simulate", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def _wait_for_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 15) -> str:
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    raise AssertionError(f"{pattern!r} not printed; got:\n{''.join(seen)}")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_simulate_starts_fast_prints_urls_and_keeps_state(tmp_path: Path) -> None:
    ports = [_free_port() for _ in range(3)]
    state = tmp_path / "sim.json"
    args = [
        "--servicenow-port", str(ports[0]), "--jira-port", str(ports[1]),
        "--statuspage-port", str(ports[2]), "--state-file", str(state),
    ]  # fmt: skip
    proc = _start(args, tmp_path)
    try:
        out = _wait_for_line(proc, "Press Ctrl-C")
        started = float(re.search(r"started in ([0-9.]+) s", out).group(1))  # type: ignore[union-attr]
        assert started < 3.0
        for port in ports:
            assert f"http://127.0.0.1:{port}" in out
        assert "admin@example.com" in out and "sim-key" in out and "simpage0001" in out
        sn = f"http://127.0.0.1:{ports[0]}"
        created = httpx.post(
            f"{sn}/api/now/table/incident",
            auth=("admin", "admin"),
            headers={"Accept": "application/json"},
            json={"short_description": "kept across restarts"},
        )
        assert created.status_code == 201
        number = created.json()["result"]["number"]
    finally:
        _stop(proc)
    assert number in state.read_text()

    proc = _start(args, tmp_path)
    try:
        _wait_for_line(proc, "Press Ctrl-C")
        found = httpx.get(
            f"http://127.0.0.1:{ports[0]}/api/now/table/incident",
            params={"sysparm_query": f"number={number}"},
            auth=("admin", "admin"),
            headers={"Accept": "application/json"},
        ).json()["result"]
        assert [r["short_description"] for r in found] == ["kept across restarts"]
    finally:
        _stop(proc)


def test_simulate_reports_a_busy_port_clearly(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*CLI, "simulate", "--servicenow-port", str(port), "--jira-port", "0",
             "--statuspage-port", "0"],
            capture_output=True, text=True, timeout=30, cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_config_masks_secrets(tmp_path: Path) -> None:
    env = {**os.environ, "ITSM_SYNC_JIRA__API_TOKEN": "very-secret-token"}
    result = subprocess.run(
        [*CLI, "config"], capture_output=True, text=True, env=env, timeout=30, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "very-secret-token" not in result.stdout
    assert '"api_token": "**********"' in result.stdout
