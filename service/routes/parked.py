"""``/api/parked``: work a remote refused for good, and replaying it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.domain import parked
from service.routes.deps import Operator, Reader, ReadSession, RuntimeDep
from sync import store

router = APIRouter(prefix="/api/parked", tags=["parked"])


@router.get("")
def parked_items(s: ReadSession, _: Reader) -> list[dict[str, Any]]:
    return parked.list_open(s)


@router.post("/replay-all")
def replay_all(runtime: RuntimeDep, actor: Operator) -> dict[str, Any]:
    with store.session_scope(runtime.db) as s:
        return {"replayed": parked.replay(s, every=True, actor=actor)}


@router.post("/{parked_id}/replay")
def replay(parked_id: int, runtime: RuntimeDep, actor: Operator) -> dict[str, Any]:
    with store.session_scope(runtime.db) as s:
        return {"replayed": parked.replay(s, parked_id=parked_id, actor=actor)}
