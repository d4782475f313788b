"""Make the preset dictionaries from vendor-recorded payloads, never from our own data.

What the store packs (:mod:`sync.store.packed`): the newest observation of each record (a Jira
issue's fields, a ServiceNow incident or change request as the Table API returns them), each
link's shadow (the mapped fields of such a record) and the canonical incident. A dictionary
made of one of each, serialised as the store serialises them, gives
zlib their keys and repeated shapes (``self`` links, avatar URLs, ``statusCategory``, reference
objects) before the first byte: a Jira issue packs to about 40 % of its plain-zlib size.

Sources (``../shared/api-contracts``, vendor responses recorded by others):

- ServiceNow: the change request of ``servicenow/recorded/change_mgmt_api.create_standard_
  change.display_value_all.json`` (values only) and the incident of the Table API's
  ``POST /now/table/incident`` example in ``servicenow/docs/c_TableAPI.md``.
- Jira: ``jira/recorded/atlassian-python-api/rest_api_2_issue_FOO-123_GET.json`` and the issue
  of ``jira/webhooks/issue_updated__status.json`` (their ``fields``), and the Cloud user who
  wrote ``jira/recorded/create_comment.raw_response.json`` (its ``author``).
- The canonical incident: :class:`mapping.model.Incident` with every field set and stamped.

zlib favours the dictionary's end (nearer matches are cheaper), so the most common come last.
Versions (the same samples; each shipped file never changes):

- v1: serialised with ``json.dumps`` defaults (``", "`` and ``": "``), as the store did until
  it serialised with orjson.
- v2: compact (``","`` and ``":"``, UTF-8), as :func:`sync.store.db.json_bytes` does now. The
  store's compact JSON packed with v1 took 602 B per edit in ``bench.storage`` against 556 B
  spaced; with v2, see docs/performance.md.

``python -m sync.store.dictionaries.build [--version N] [--write]``: prints the size and
Adler-32 of each version (or of N), checks it against the shipped file, and with ``--write``
writes version N (only for a new one: shipped files never change).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import zlib
from pathlib import Path
from typing import Any

import orjson

from mapping.model import Incident, Resolution, Severity, Stamp

HERE = Path(__file__).parent
CONTRACTS = HERE.parents[2].parent / "shared" / "api-contracts"


def _servicenow_change() -> dict[str, Any]:
    recorded = "change_mgmt_api.create_standard_change.display_value_all.json"
    record = json.loads((CONTRACTS / "servicenow/recorded" / recorded).read_text())["result"]
    return {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in record.items()}


def _servicenow_incident() -> dict[str, Any]:
    text = (CONTRACTS / "servicenow/docs/c_TableAPI.md").read_text()
    start = text.index("'short_description':'Unable to connect to office wifi'")
    block = re.search(r"```\n(\{.*?\n\})\n```", text[start:], re.S)
    assert block is not None
    return dict(json.loads(block.group(1))["result"])


def _jira() -> list[dict[str, Any]]:
    """Two issues' fields and a Cloud user (an issue's assignee, reporter and creator)."""
    recorded = CONTRACTS / "jira/recorded/atlassian-python-api/rest_api_2_issue_FOO-123_GET.json"
    webhook = CONTRACTS / "jira/webhooks/issue_updated__status.json"
    comment = CONTRACTS / "jira/recorded/create_comment.raw_response.json"
    return [
        json.loads(recorded.read_text())["fields=*all"]["fields"],
        json.loads(webhook.read_text())["issue"]["fields"],
        json.loads(comment.read_text())["author"],
    ]


def _incident() -> dict[str, Any]:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    fields = [n for n in Incident.model_fields if n not in ("id", "changed")]
    changed = [*fields, *(f"resolution.{n}" for n in Resolution.model_fields)]
    incident = Incident(
        id="0" * 32, title="", severity=Severity.SEV1, started_at=at, resolved_at=at, closed_at=at,
        changed={n: Stamp(at=at, system="servicenow") for n in changed if n != "resolution"},
    )  # fmt: skip
    return incident.model_dump(mode="json")


VERSIONS = (1, 2)


def build(version: int = VERSIONS[-1]) -> bytes:
    """Each sample as the store serialised it in that version, least common first."""
    samples = [_servicenow_change(), _incident(), *_jira(), _servicenow_incident()]
    if version == 1:
        return "".join(json.dumps(s) for s in samples).encode("utf-8")
    if version == 2:
        return b"".join(orjson.dumps(s) for s in samples)
    raise ValueError(f"no dictionary version {version}: there are {VERSIONS}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", type=int, choices=VERSIONS)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.write and not args.version:
        parser.error("--write needs --version N: shipped dictionaries never change")
    differ = 0
    for version in [args.version] if args.version else VERSIONS:
        data = build(version)
        path = HERE / f"v{version}.zdict"
        print(f"v{version}: {len(data)} bytes, Adler-32 {zlib.adler32(data):#010x}")
        if args.write:
            path.write_bytes(data)
        elif path.exists():
            same = path.read_bytes() == data
            differ += not same
            print(f"  {'matches' if same else 'DIFFERS from'} the shipped {path.name}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
