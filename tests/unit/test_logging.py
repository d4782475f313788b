"""Structured logs carry ids and never secrets."""

from __future__ import annotations

import json
import logging

from config.logging import JsonFormatter


def test_json_lines_with_ids_and_no_secrets() -> None:
    record = logging.makeLogRecord(
        {
            "name": "itsm_sync.worker",
            "levelname": "INFO",
            "msg": "calling https://admin:hunter2@sn.example.com/api?api_key=abc123 for %s",
            "args": ("INC0010001",),
        }
    )
    record.incident_id = "f00d"
    record.request_id = "r-1"
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["incident_id"] == "f00d" and entry["request_id"] == "r-1"
    assert entry["level"] == "info" and "INC0010001" in entry["msg"]
    assert "hunter2" not in line and "abc123" not in line
