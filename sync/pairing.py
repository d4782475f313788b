"""Records linked by hand before itsm-sync: one incident for the pair, never a second record.

A desk that ran an older integration, or people, may have tied a ServiceNow incident to a Jira
issue already: Jira's ServiceNow remote link, a ``correlation_id`` holding the issue key, a
custom field holding the incident number (each connector's :meth:`partners` names them). Such
a pair becomes one incident with both records linked, instead of each record getting a new
counterpart. ``itsm-sync link`` links a pair by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from connectors.base import Connector, RemoteRecord, RemoteRef
from connectors.errors import ConnectorError
from mapping.registry import MappingSet
from sync import store
from sync.planner import REF_KEY
from sync.queue import incident_key, mark_dirty

log = logging.getLogger("itsm_sync.pairing")


class Reconciler(Protocol):
    """What pairing needs of :class:`sync.reconcile.Reconciler` (which calls pairing)."""

    db: Engine
    connectors: Mapping[tuple[str, str], Connector]
    mappings: Callable[[], MappingSet]

    def observe(self, record: RemoteRecord, *, source: str) -> bool: ...

    def adopt(
        self, system: str, instance: str, object_type: str, remote_id: str, *, pairing: bool = True
    ) -> str | None: ...


class PairConflict(ValueError):
    """The two records already belong to two different incidents."""


def _linked(s: object, ref: RemoteRef) -> str | None:
    link = store.find_link(
        s,  # type: ignore[arg-type]
        system=ref.system, instance=ref.instance, object_type=ref.object_type, remote_id=ref.id,
    )  # fmt: skip
    return link.incident_id if link else None


def link_records(
    reconciler: Reconciler, first: RemoteRecord, second: RemoteRecord, *, reason: str,
    actor: str = "itsm-sync",
) -> str:  # fmt: skip
    """Link both records to one incident (the one either is linked to already, else a new one
    made from ``first``); returns its id. :class:`PairConflict` if they belong to two."""
    if first.ref.system == second.ref.system:
        raise PairConflict(f"{_name(first)} and {_name(second)} are both on {first.ref.system}")
    for record in (first, second):
        reconciler.observe(record, source="poll")
    with store.session_scope(reconciler.db, readonly=True) as s:
        mine, theirs = _linked(s, first.ref), _linked(s, second.ref)
    if mine and theirs and mine != theirs:
        raise PairConflict(
            f"{_name(first)} belongs to incident {mine} and {_name(second)} to incident "
            f"{theirs}: unlink one first"
        )
    owner = mine or theirs
    if owner is None:
        owner = reconciler.adopt(
            first.ref.system, first.ref.instance, first.ref.object_type, first.ref.id,
            pairing=False,
        )  # fmt: skip
        if owner is None:
            raise PairConflict(f"{_name(first)} is not an incident itsm-sync follows")
    for record in (first, second):
        ref = record.ref
        with store.session_scope(reconciler.db) as s:
            if _linked(s, ref) == owner:
                continue
            store.add_link(
                s, incident_id=owner, system=ref.system, instance=ref.instance,
                object_type=ref.object_type, remote_id=ref.id,
                remote_key=str(record.fields.get(REF_KEY) or ref.key), url=record.url,
            )  # fmt: skip
            store.audit(
                s, action="create", incident_id=owner, system=ref.system, instance=ref.instance,
                remote_id=ref.id, actor=actor, reason=f"linked {_name(record)}: {reason}",
            )  # fmt: skip
            mark_dirty(s, incident_key(owner), reason="linked")
    return owner


def counterpart(reconciler: Reconciler, record: RemoteRecord) -> RemoteRecord | None:
    """The record on another system that ``record`` names as its counterpart, if any."""
    connector = reconciler.connectors.get((record.ref.system, record.ref.instance))
    if connector is None:
        return None
    try:
        named = connector.partners(record.ref, record.fields)
    except ConnectorError as exc:
        log.info("partners of %s could not be read: %s", record.ref, exc)
        return None
    mappings = reconciler.mappings()
    for system, key in named:
        for mapping in mappings:
            other = reconciler.connectors.get(mapping.key)
            if mapping.system != system or other is None:
                continue
            try:
                return other.get(mapping.object_type, key)
            except ConnectorError:
                continue
    return None


def pair_unlinked(reconciler: Reconciler) -> int:
    """Backfill's first pass: every observed record not linked yet that names a counterpart
    is linked with it, so neither gets a new one. Returns how many pairs were linked."""
    obs_t, link_t = store.Observation, store.Link
    with store.session_scope(reconciler.db, readonly=True) as s:
        rows = s.exec(
            select(obs_t)
            .outerjoin(
                link_t,
                (col(link_t.system) == col(obs_t.system))
                & (col(link_t.instance) == col(obs_t.instance))
                & (col(link_t.object_type) == col(obs_t.object_type))
                & (col(link_t.remote_id) == col(obs_t.remote_id)),
            )
            .where(col(link_t.id).is_(None))
        ).all()
    mappings = {m.key: m for m in reconciler.mappings()}
    paired = 0
    for obs in rows:
        mapping = mappings.get((obs.system, obs.instance))
        if mapping is None or mapping.object_type != obs.object_type:
            continue
        ref = RemoteRef(
            obs.system, obs.instance, obs.object_type, obs.remote_id,
            str(obs.fields.get(REF_KEY) or ""),
        )  # fmt: skip
        record = RemoteRecord(
            ref=ref, version=tuple(obs.version),
            updated_at=obs.remote_updated_at or obs.observed_at, fields=obs.fields,
        )  # fmt: skip
        other = counterpart(reconciler, record)
        if other is None:
            continue
        try:
            link_records(reconciler, other, record, reason=f"{_name(record)} names it")
            paired += 1
        except PairConflict as exc:
            log.warning("not paired: %s", exc)
    return paired


def _name(record: RemoteRecord) -> str:
    return f"{record.ref.system} {record.fields.get(REF_KEY) or record.ref.key or record.ref.id}"


def find_record(reconciler: Reconciler, key: str) -> RemoteRecord:
    """The record a person names by its key or id (INC0010001, OPS-12), on whichever source
    system has it. LookupError if none does."""
    refused: list[str] = []
    for mapping in reconciler.mappings():
        connector = reconciler.connectors.get(mapping.key)
        if connector is None or not any(f.reads for f in mapping.fields):
            continue
        try:
            return connector.get(mapping.object_type, key)
        except ConnectorError as exc:
            if exc.status not in (None, 400, 404):
                refused.append(f"{mapping.system}: {exc}")
    extra = f" ({'; '.join(refused)})" if refused else ""
    raise LookupError(f"no record {key!r} on any system{extra}")
