"""``/api/parked``: work a remote refused for good, and replaying it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.domain import parked
from service.routes.deps import Operator, Reader, ReadSession, WriteSession

router = APIRouter(prefix="/api/parked", tags=["parked"])


@router.get("")
def parked_items(s: ReadSession, _: Reader) -> list[dict[str, Any]]:
    return parked.list_open(s)


@router.post("/replay-all")
def replay_all(s: WriteSession, actor: Operator) -> dict[str, Any]:
    return {"replayed": parked.replay(s, every=True, actor=actor)}


@router.post("/{parked_id}/replay")
def replay(parked_id: int, s: WriteSession, actor: Operator) -> dict[str, Any]:
    return {"replayed": parked.replay(s, parked_id=parked_id, actor=actor)}
