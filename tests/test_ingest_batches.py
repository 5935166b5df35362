"""Batches as the listener applies them in bulk on PostgreSQL (events.uploads.BulkUploads): segments
between deletions, rounds for one model, duplicates inside and across batches, text that needs
escaping in COPY, batches of one partition one after the other; and the plain-JSON fast path."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from conftest import ECHO
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from waiting import wait_for

from inference_app import create_app
from inference_app.config import Settings
from inference_app.coordination import lock_kafka_partitions
from inference_app.events.contract import Deletion, Position, Rejected, Upload, decode
from inference_app.events.ingest import apply_batch
from inference_app.extensions import db
from inference_app.models import IngestedEvent, ServedModel
from inference_app.services.context import context
from inference_app.services.validation import (
    JSON_EXPANSION,
    MAX_METADATA_BYTES,
    json_safety_problem,
    plain_json_text,
    validate_registration,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OFFSETS = count()


def upload(event_id: str | None, minutes: int | None, name: str = "churn", partition: int = 0, **extra) -> Upload:
    body = {"user_id": "alice", "model_name": name, "image": ECHO, "metadata": {"rev": event_id}, **extra}
    registration = validate_registration(body, context().settings)
    when = None if minutes is None else T0 + timedelta(minutes=minutes)
    return Upload(Position("uploads", partition, next(OFFSETS)), registration, event_id, when)


def deletion(event_id: str, minutes: int, name: str = "churn") -> Deletion:
    return Deletion(
        Position("deletions", 0, next(OFFSETS)), "alice", name, None, event_id, T0 + timedelta(minutes=minutes)
    )


def audit() -> list[tuple[str | None, str, str]]:
    rows = db.session.scalars(select(IngestedEvent).order_by(IngestedEvent.id))
    return [(row.event_id, row.kind, row.outcome) for row in rows]


def model(name: str = "churn") -> ServedModel:
    found = db.session.scalar(select(ServedModel).where(ServedModel.model_name == name))
    db.session.refresh(found)
    return found


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.services), "sqlite"])
def ctx(request, tmp_path):
    """An app context on PostgreSQL (uploads in bulk) or on SQLite (row by row): the same outcomes."""
    if request.param == "postgresql":
        app = request.getfixturevalue("app")
    else:
        app = create_app(
            {"database_url": f"sqlite:///{tmp_path}/ingest.db", "run_background": "worker", "TESTING": True}
        )
        migrated = app.test_cli_runner().invoke(args=["db", "upgrade"])
        assert migrated.exit_code == 0, migrated.output
    with app.app_context():
        yield
        db.session.rollback()
        if request.param == "sqlite":
            db.engine.dispose()


@pytest.fixture
def pg(app):
    with app.app_context():
        yield
        db.session.rollback()


def test_uploads_and_deletions_in_one_batch_apply_in_order_and_a_second_delivery_changes_nothing(ctx):
    batch = [
        upload("e1", 1),
        upload("e2", 2),  # the same model again: judged against e1 (a second round)
        upload("other", 1, name="other"),
        deletion("d1", 3),  # after the uploads before it
        upload("e3", 4),  # after the deletion: the model is back
        upload("e0", 0),  # older than what the registry now holds
        upload("e2", 2),  # the same event twice in one batch
    ]
    result = apply_batch(batch)
    assert (result.applied, result.stale, result.duplicates) == (5, 1, 1)
    assert result.deleted_model_ids == [model().id]
    assert audit() == [
        ("e1", "model.uploaded", "applied"),
        ("e2", "model.uploaded", "applied"),
        ("other", "model.uploaded", "applied"),
        ("d1", "model.deleted", "applied"),
        ("e3", "model.uploaded", "applied"),
        ("e0", "model.uploaded", "stale"),
    ]
    churn = model()
    assert churn.meta == {"rev": "e3"} and churn.deleted_at is None
    again = apply_batch(batch)  # offsets not committed before a crash: the batch comes again
    assert (again.applied, again.stale, again.duplicates) == (0, 0, 7)
    assert len(audit()) == 6 and model().meta == {"rev": "e3"}


def test_events_seen_in_an_earlier_batch_are_recognised_and_the_rest_applied(ctx):
    apply_batch([upload("a1", 1), upload("a2", 2, name="second")])
    result = apply_batch([upload("a1", 1), upload("a3", 3), upload(None, None, name="third"), upload("a2", 2)])
    assert (result.applied, result.stale, result.duplicates) == (2, 0, 2)
    assert model().meta == {"rev": "a3"} and model("third").meta == {"rev": None}
    assert [event_id for event_id, _, _ in audit()] == ["a1", "a2", "a3", None]


def test_text_that_needs_escaping_in_copy_is_stored_exactly(pg):
    """Defence in depth behind validation: tabs, line breaks and backslashes reach the registry as they are."""
    odd = "registry.local/a\tb\\c\nd\re\\N"
    event = upload("odd", 1, name="odd")
    event = replace(event, registration=replace(event.registration, image=odd, predict_path="/p\\\t"))
    assert apply_batch([event, upload("plain", 1, name="plain")]).applied == 2
    stored = model("odd")
    assert (stored.image, stored.predict_path) == (odd, "/p\\\t")
    assert model("plain").image == ECHO


def test_batches_of_one_partition_are_applied_one_after_the_other(app):
    """After a rebalance the new owner of a partition waits for the batch the old one has in flight."""
    with app.app_context():
        lock_kafka_partitions([("uploads", 0)])  # the old owner's transaction, still open
        holder = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
        finished = []

        def new_owner(partition: int) -> None:
            with app.app_context():
                try:
                    finished.append(
                        apply_batch([upload(f"p{partition}", 1, name=f"p{partition}", partition=partition)])
                    )
                finally:
                    db.session.remove()

        other = threading.Thread(target=new_owner, args=(1,))
        other.start()
        other.join(60)
        assert len(finished) == 1, "a batch of another partition waited"
        same = threading.Thread(target=new_owner, args=(0,))
        same.start()
        waiting = text(
            "SELECT count(*) FROM pg_locks l JOIN pg_locks h ON h.objid = l.objid AND h.classid = l.classid"
            " WHERE l.locktype = 'advisory' AND NOT l.granted AND h.granted AND h.pid = :holder"
        )
        with db.engine.connect() as probe:
            wait_for(lambda: probe.execute(waiting, {"holder": holder}).scalar() == 1, 30, "it never waited")
        assert len(finished) == 1 and same.is_alive()
        db.session.commit()  # the old owner's batch is done
        same.join(60)
        assert len(finished) == 2 and finished[1].applied == 1
        db.session.remove()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4), st.booleans())
def test_a_plain_json_text_passes_the_safety_walk_also_one_level_deeper(event, ascii_only):
    """plain_json_text may skip the walk only where the walk would find nothing, for the event and its metadata."""
    raw = json.dumps(event, ensure_ascii=ascii_only)
    if not plain_json_text(raw):
        return
    decoded = json.loads(raw)
    assert json_safety_problem(decoded) is None
    assert json_safety_problem(dict(decoded), depth=2, where="metadata") is None  # unknown fields kept in metadata


def test_plain_json_text_sends_escapes_and_deep_nesting_to_the_walk():
    assert plain_json_text('{"a": "b", "c": [1, {"d": 2}]}')
    assert not plain_json_text('{"a": "\\u0000"}') and not plain_json_text('{"a": "\\ud800"}')
    assert not plain_json_text('{"a": "\\u00e9"}')  # any \\u escape is walked, harmless or not
    assert not plain_json_text("{" + '"a": [' * 14 + "]" * 14 + "}")


TEXTS = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=6)  # astral ones too


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        TEXTS,
        st.recursive(
            st.none() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXTS,
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
            max_leaves=20,
        ),
        max_size=4,
    ),
    st.booleans(),
    st.sampled_from([(",", ":"), (", ", ": ")]),
)
def test_json_dumps_of_a_decoded_value_is_at_most_json_expansion_times_its_text(value, ascii_only, separators):
    """The bound that lets validation skip measuring the metadata of a short event."""
    text_ = json.dumps(value, ensure_ascii=ascii_only, separators=separators)
    assert len(json.dumps(json.loads(text_), default=str)) <= JSON_EXPANSION * len(text_)


@pytest.mark.parametrize("text_", ["9e15", "-9e15", "1e15", "[1,2,3]", '{"a":1,"b":[]}', '"\U0001f600"', '"\u00e9"'])
def test_json_expansion_holds_for_the_widest_small_texts(text_):
    assert len(json.dumps(json.loads(text_))) <= JSON_EXPANSION * len(text_)


def test_metadata_over_the_limit_in_an_event_is_still_refused():
    settings = Settings.from_env({"DATABASE_URL": "sqlite:///unused.db", "SECRET_KEY": "x" * 32})
    event = {"user_id": "u", "model_name": "m", "image": ECHO, "metadata": {"blob": "x" * MAX_METADATA_BYTES}}
    position = Position(settings.kafka_topic_uploaded, 0, 0)
    decoded = decode(position, json.dumps(event).encode(), settings)
    assert isinstance(decoded, Rejected) and "metadata must be at most" in decoded.reason
    event["metadata"] = {"blob": "x" * 100, "emoji": "\U0001f600" * 40}
    assert isinstance(decode(position, json.dumps(event).encode(), settings), Upload)
