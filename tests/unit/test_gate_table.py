"""docs/postmortem.md's table of every way an incident can end, walked row by row: the record
reads as the terminal state it names through the default mappings, and the engine's gate does
what the row says (refuses, back to the state it had, or lets it end)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from config.settings import SyncSettings
from mapping.engine import to_canonical
from mapping.model import Severity, State
from mapping.registry import load_mappings
from mapping.transforms import TransformContext
from postmortem_tracker.models import ActionItem
from postmortem_tracker.tracker import Tracker
from service.domain import postmortems
from sync import store
from sync.executor import Outcome
from sync.planner import Merged, Snapshot
from sync.reconcile import Reconciler
from tests.unit.test_postmortem_domain import CM, TODAY, db, incident, migrated, tracker

__all__ = ["db", "migrated", "tracker"]  # the fixtures this module borrows

DOC = Path(__file__).parents[2] / "docs" / "postmortem.md"
MAPPINGS = load_mappings()
HEADING = "### Every way an incident can end"
REFUSED = "refused"


def table() -> list[dict[str, str]]:
    text = DOC.read_text()
    assert HEADING in text, f"{DOC}: the table under {HEADING!r} is gone"
    lines = text.split(HEADING, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    header, body = rows[0], rows[2:]
    return [dict(zip(header, row, strict=True)) for row in body]


ROWS = table()


def records(side: str, shows: str) -> list[dict[str, Any]]:
    """The record fields a row's 'the record shows' cell stands for (one per resolution)."""
    if side == "ServiceNow":
        state = re.fullmatch(r"`state` (\d+) \(\w+\)", shows)
        assert state, shows
        return [{"state": state[1], "impact": "1", "urgency": "1"}]
    assert side == "Jira", side
    status, _, resolutions = shows.partition(", resolution ")
    name = status.removeprefix("status ")
    category = {"key": "done"} if name in ("Resolved", "Closed") else {"key": "indeterminate"}
    out = []
    for resolution in resolutions.split(" / ") if resolutions else [""]:
        out.append(
            {
                "status": {"name": name, "statusCategory": category},
                "resolution": {"name": resolution} if resolution else None,
                "priority": {"name": "Highest"},
            }
        )
    return out


def test_the_table_covers_every_terminal_state_on_every_side() -> None:
    assert len(ROWS) >= 16
    terminal = MAPPINGS.terminal_states()
    seen = {(r["side"], r["reads as"]) for r in ROWS}
    assert seen == {(side, state) for side in ("ServiceNow", "Jira") for state in terminal}
    for side in ("ServiceNow", "Jira"):
        for state in terminal:
            combos = {
                (r["downgrade before the end"], r["override"])
                for r in ROWS
                if (r["side"], r["reads as"]) == (side, state)
            }
            for downgrade in ("no", "SEV1 → SEV4 first"):
                for override in ("none", "given", "given, then revoked"):
                    assert (downgrade, override) in combos, (side, state, downgrade, override)


@pytest.mark.parametrize(
    "row", ROWS, ids=[f"{r['side']}-{r['reads as']}-{i}" for i, r in enumerate(ROWS)]
)
def test_each_way_to_end(row: dict[str, str], tracker: Tracker) -> None:
    system = "servicenow" if row["side"] == "ServiceNow" else "jira"
    mapping = MAPPINGS.get(system)
    for fields in records(row["side"], row["the record shows"]):
        read = to_canonical(mapping, fields, TransformContext(system=system))
        assert read["state"] == row["reads as"], (fields, read)
    assert row["reads as"] in MAPPINGS.terminal_states()

    # The incident: SEV1 (or SEV2 raised to SEV1), resolved, its postmortem complete.
    raised = row["override"].startswith("given at SEV2")
    before = incident(tracker, "SEV2" if raised else "SEV1")
    postmortems.complete(tracker, ident="inc1", actor=CM)
    item = postmortems.add_action(
        tracker, ident="inc1", title="Add a disk alert", owner="", due=None, actor=CM,
        today=TODAY,
    )  # fmt: skip
    if row["postmortem"] == "nothing missing":
        with store.session_scope(tracker.db) as s:
            found = s.exec(select(ActionItem).where(col(ActionItem.key) == item["key"])).one()
            found.change_request_number, found.change_request_id = "CHG0030001", "c" * 32
            s.add(found)
    else:
        assert row["postmortem"] == "items missing", row
    if row["override"] != "none":
        postmortems.override(tracker, ident="inc1", reason="tracked by the vendor", actor=CM)
    if row["override"] == "given, then revoked":
        postmortems.revoke_override(tracker, ident="inc1", reason="backed out", actor=CM)
    severity = "SEV1"
    if row["downgrade before the end"] == "SEV1 → SEV4 first":
        incident(tracker, "SEV4")
        severity = "SEV4"
    before = before.model_copy(update={"severity": Severity(severity)})
    after = before.model_copy(update={"state": State(row["reads as"])})

    reconciler = Reconciler(tracker.db, {}, lambda: MAPPINGS, SyncSettings())
    # The engine's tracker, with no system to call: the gate decides from the store.
    reconciler.tracker = Tracker(tracker.db, {}, tracker.settings)
    snap = Snapshot(
        incident=before, records=(), targets={}, terminal=MAPPINGS.terminal_states(),
        now=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    result = reconciler._gate(Merged(incident=after), before, snap, Outcome())
    if row["the gate"].startswith(REFUSED):
        assert result.state == before.state, row
        [note] = [c for c in result.comments if c.origin == "itsm-sync:closure-gate"]
        assert f"cannot be {row['reads as']} yet" in note.body
        assert note.visibility.value == "internal"
    else:
        assert row["the gate"] == "ends", row
        assert result.state.value == row["reads as"] and not result.comments
