"""The connector contract: one suite, run against every connector on its simulator over HTTP."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from connectors.base import Capability, Connector, Observation, Visibility
from connectors.errors import AuthFailed, ConnectorError, NotFound
from connectors.http import CALLS
from tests.conftest import WebhookReceiver
from tests.contract.harness import Harness, wait_until


def key() -> str:
    return f"itsm-{uuid.uuid4().hex[:12]}"


def test_is_a_connector(harness: Harness) -> None:
    assert isinstance(harness.connector, Connector)
    assert harness.object_type in harness.connector.object_types()


def test_create_get_update(harness: Harness) -> None:
    c = harness.connector
    created = c.create(harness.object_type, harness.new_fields("disk full"), correlation_key=key())
    assert harness.title_of(created) == "disk full"
    by_id = c.get(harness.object_type, created.ref.id)
    assert by_id.ref == created.ref
    if created.ref.key:
        assert c.get(harness.object_type, created.ref.key).ref.id == created.ref.id
    updated = c.update(created.ref, harness.edit("disk full again"))
    assert harness.title_of(updated) == "disk full again"
    assert updated.version > created.version
    assert harness.title_of(c.get(harness.object_type, created.ref.id)) == "disk full again"


def test_create_is_idempotent_by_correlation_key(harness: Harness) -> None:
    c, k = harness.connector, key()
    first = c.create(harness.object_type, harness.new_fields("one"), correlation_key=k)
    found = c.find_by_correlation(harness.object_type, k)
    assert found is not None and found.ref == first.ref
    again = c.create(harness.object_type, harness.new_fields("one"), correlation_key=k)
    assert again.ref == first.ref
    assert c.find_by_correlation(harness.object_type, key()) is None


def test_get_unknown_is_not_found(harness: Harness) -> None:
    with pytest.raises(NotFound):
        harness.connector.get(harness.object_type, "0" * 32)


def test_changes_since_pages_oldest_first_without_duplicates(harness: Harness) -> None:
    c = harness.connector
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    made = [
        c.create(harness.object_type, harness.new_fields(f"page {i}"), correlation_key=key())
        for i in range(7)
    ]
    seen = list(c.changes_since(harness.object_type, start, page_size=3))
    ids = [r.ref.id for r in seen]
    assert {r.ref.id for r in made} <= set(ids)
    assert len(ids) == len(set(ids)), "a record was yielded twice"
    stamps = [r.updated_at for r in seen]
    assert stamps == sorted(stamps)


def test_changes_since_never_misses_what_changes_while_listing(harness: Harness) -> None:
    """A record edited or created while a poll pages through is seen by this poll or, at the
    latest, by the next one from the watermark this poll reached."""
    c = harness.connector
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    made = [
        c.create(harness.object_type, harness.new_fields(f"during {i}"), correlation_key=key())
        for i in range(5)
    ]
    listing = c.changes_since(harness.object_type, start, page_size=2)
    first = next(listing)
    # While we are paging, a person renames the first record and someone opens a new one.
    harness.raw_edit(first, "renamed while listing")
    late = c.create(
        harness.object_type, harness.new_fields("born while listing"), correlation_key=key()
    )
    seen = [first, *listing]
    watermark = max(r.updated_at for r in seen)
    seen += list(c.changes_since(harness.object_type, watermark, page_size=2))
    assert {r.ref.id for r in made} | {late.ref.id} <= {r.ref.id for r in seen}
    renamed = [
        r
        for r in seen
        if r.ref.id == first.ref.id and harness.title_of(r) == "renamed while listing"
    ]
    assert renamed, "the edit made during the listing was never seen"
    assert renamed[-1].version > first.version


def test_comments_keep_visibility_and_origin(harness: Harness) -> None:
    c = harness.connector
    rec = c.create(harness.object_type, harness.new_fields("comments"), correlation_key=key())
    public = c.add_comment(
        rec.ref, "we are on it", visibility=Visibility.PUBLIC, origin="jira:OPS-1"
    )
    assert public.visibility is Visibility.PUBLIC and public.origin == "jira:OPS-1"
    if harness.internal_comments:
        assert Capability.INTERNAL_COMMENTS in c.capabilities
        internal = c.add_comment(rec.ref, "db01 is the culprit", visibility=Visibility.INTERNAL)
        assert internal.visibility is Visibility.INTERNAL and internal.origin == ""
    else:
        assert Capability.INTERNAL_COMMENTS not in c.capabilities
        with pytest.raises(ConnectorError, match="public"):
            c.add_comment(rec.ref, "secret", visibility=Visibility.INTERNAL)
    listed = c.comments(rec.ref)
    by_body = {x.body: x for x in listed}
    assert by_body["we are on it"].visibility is Visibility.PUBLIC
    assert by_body["we are on it"].origin == "jira:OPS-1"
    if harness.internal_comments:
        assert by_body["db01 is the culprit"].visibility is Visibility.INTERNAL
    else:
        assert "secret" not in by_body


def test_transitions(harness: Harness) -> None:
    c = harness.connector
    rec = c.create(harness.object_type, harness.new_fields("moves"), correlation_key=key())
    for move in harness.moves:
        rec = c.transition(rec.ref, move.target, move.fields)
        assert move.check(rec), f"not in {move.target} after the transition: {dict(rec.fields)}"
        assert move.check(c.get(harness.object_type, rec.ref.id))


def test_people(harness: Harness) -> None:
    if not harness.people:
        assert Capability.PEOPLE not in harness.connector.capabilities
        return
    c = harness.connector
    alice = c.person_by_email("Alice@Example.com")
    assert alice.email == "alice@example.com" and alice.id
    assert c.person_by_id(alice.id) == alice
    with pytest.raises(NotFound, match=r"nobody@example\.com"):
        c.person_by_email("nobody@example.com")


def test_webhooks_verified_and_forgeries_rejected(
    harness: Harness, webhook_receiver: WebhookReceiver
) -> None:
    target = webhook_receiver.url
    if harness.webhook_query:
        target += "?" + urlencode(harness.webhook_query)
    harness.control("webhooks", {"url": target, "secret": harness.webhook_secret})
    c = harness.connector
    rec = c.create(harness.object_type, harness.new_fields("hooked"), correlation_key=key())

    def observed() -> list[Observation]:
        return [
            o
            for d in list(webhook_receiver.received)
            for o in c.parse_webhook(d.headers, d.body, dict(parse_qsl(urlsplit(d.path).query)))
        ]

    wait_until(lambda: rec.ref.id in [o.ref.id for o in observed()])
    assert all(o.delivery_id and o.source == "webhook" for o in observed())
    delivery = webhook_receiver.received[0]
    query = dict(parse_qsl(urlsplit(delivery.path).query))
    assert harness.forgeries, "every system needs at least one forgery that must be refused"
    for forge in harness.forgeries:
        headers, body, forged_query = forge(dict(delivery.headers), delivery.body, query)
        with pytest.raises(AuthFailed):
            c.parse_webhook(headers, body, forged_query)


def test_secrets_stay_out_of_reprs_errors_and_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for secret in harness.secrets:
        assert secret not in repr(harness.connector)
    harness.faults(route=harness.get_route, error_rate=1.0, error_status=503, count=1)
    with pytest.raises(AuthFailed) as failure:
        harness.bad_credentials().get(harness.object_type, "0" * 32)
    assert "retrying" in caplog.text  # the 503 was logged, and retried
    for secret in [*harness.secrets, "wrong-secret-value"]:
        assert secret not in str(failure.value)
        assert secret not in repr(failure.value)
        assert secret not in caplog.text


def test_every_call_is_counted(harness: Harness) -> None:
    system = harness.name

    def grew(before: dict[tuple[str, str, str], int]) -> dict[tuple[str, str, str], int]:
        after = CALLS.snapshot()
        return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}

    before = CALLS.snapshot()
    harness.connector.create(
        harness.object_type, harness.new_fields("counted"), correlation_key=key()
    )
    created = grew(before)
    assert created.get((system, "POST", "201")) == 1, created
    assert all(k[0] == system for k in created)
    before = CALLS.snapshot()
    with pytest.raises(NotFound):
        harness.connector.get(harness.object_type, "0" * 32)
    got = grew(before)
    assert sum(n for k, n in got.items() if k[:2] == (system, "GET")) == 1, got
