"""No record can stop ingestion: hostile bytes on the topic, a batch PostgreSQL refuses, and
event times that try to freeze or downgrade a model; against real Kafka and PostgreSQL."""

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from conftest import ECHO, built_app
from kafka_support import committed_offsets, create_topics, fresh_topics, producer, require_kafka, send, wait_for
from sqlalchemy import func, select, text

from inference_app.events.contract import Position, Upload
from inference_app.events.ingest import apply_events
from inference_app.events.listener import KafkaListener
from inference_app.extensions import db
from inference_app.models import DeadLetter, IngestedEvent, ServedModel
from inference_app.services.context import context
from inference_app.services.validation import validate_registration

GOOD = {"user_id": "carol", "model_name": "after-the-storm", "image": ECHO, "event_id": "good-1"}


def reg(**extra) -> dict:
    return {"user_id": "u", "model_name": "m", "image": ECHO, **extra}


def raw(text_: str) -> bytes:
    return text_.encode("utf-8", "surrogatepass")


def nested(depth: int):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


# (payload, a piece of the dead letter's reason)
HOSTILE = [
    (json.dumps(reg(metadata={"note": "a\x00b"})).encode(), "metadata.note holds a NUL character"),
    (json.dumps(reg(model_name="m\x00")).encode(), "model_name holds a NUL character"),
    (json.dumps(reg(**{"odd\x00key": 1})).encode(), "holds a NUL character"),
    (b'{"user_id": "u", "model_name": "m", "image": "' + ECHO.encode() + b'", "metadata": {"x": NaN}}', "NaN"),
    (b'{"user_id": "u", "model_name": "m", "image": "' + ECHO.encode() + b'", "surprise": Infinity}', "Infinity"),
    (b'{"user_id": "u", "model_name": "m", "image": "' + ECHO.encode() + b'", "surprise": -Infinity}', "Infinity"),
    (b'{"user_id": "u", "model_name": "m", "image": "' + ECHO.encode() + b'", "big": 1e999}', "too large"),
    (raw(json.dumps(reg(metadata={"s": "\ud800"}), ensure_ascii=False)), "not UTF-8"),
    (json.dumps(reg(metadata={"s": "\ud800"})).encode(), "lone UTF-16 surrogate"),
    (bytes(range(256)) * 4, "not UTF-8"),
    (b"\x00\x00\x00\x00\x01binary\x00", "not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "exceeds the limit"),
    (b"[" * 5_000 + b"]" * 5_000, "nested too deeply"),
    (json.dumps(reg(metadata={"a": nested(20)})).encode(), "nested deeper than"),
    (json.dumps(reg(cpus="two")).encode(), "cpus must be a number"),
    (json.dumps(reg(cpus=[1])).encode(), "cpus must be a number"),
    (json.dumps(reg(cpus=10**400)).encode(), "cpus must be between"),
    (json.dumps(reg(port=80.5)).encode(), "port must be a whole number"),
    (json.dumps(reg(user_id={"a": 1})).encode(), "user_id must be a string"),
    (json.dumps(reg(env=["A=B"])).encode(), "env must be an object"),
    (json.dumps(reg(metadata=[1, 2])).encode(), "metadata must be an object"),
    (json.dumps(reg(event_id="e\x00")).encode(), "holds a NUL character"),
    (json.dumps(reg(event_type=["model.uploaded"])).encode(), "unknown event type"),
    (json.dumps(reg(occurred_at=12345)).encode(), "occurred_at must be an ISO 8601"),
    (json.dumps(reg(surprise={"deep": [None, True, {"k": "\u2028\u202e"}], "n": -(10**30)})).encode(), None),
    (b"", "not JSON"),
    (None, "not JSON"),
]


@pytest.fixture
def kafka_app(database, docker_client):
    require_kafka()
    topics = fresh_topics()
    create_topics(topics, partitions=1)
    with built_app(docker_client, **topics) as app:
        app.config["TOPICS"] = topics
        yield app


@pytest.fixture
def listener(kafka_app):
    running = KafkaListener(kafka_app, settings_of(kafka_app))
    running.start()
    yield running
    running.stop()


def settings_of(app):
    with app.app_context():
        return context().settings


def scalar(app, query):
    with app.app_context():
        try:
            return db.session.scalar(query)
        finally:
            db.session.remove()


def letters(app) -> list[DeadLetter]:
    with app.app_context():
        try:
            return list(db.session.scalars(select(DeadLetter).order_by(DeadLetter.offset)))
        finally:
            db.session.remove()


def test_hostile_records_are_dead_lettered_safely_and_the_stream_moves_on(kafka_app, listener):
    topics = kafka_app.config["TOPICS"]
    prod = producer()
    for payload, _reason in HOSTILE:
        send(prod, topics["kafka_topic_uploaded"], payload, key="one-partition")
    send(prod, topics["kafka_topic_uploaded"], GOOD, key="one-partition")
    prod.flush()
    prod.close()
    client = kafka_app.test_client()
    [model] = wait_for(
        lambda: [m for m in client.get("/api/models").get_json()["items"] if m["model_name"] == "after-the-storm"],
        30,
        "the good event after the hostile ones was never applied",
    )
    assert model["user_id"] == "carol"
    wait_for(lambda: committed_offsets(topics) == len(HOSTILE) + 1, 20, "the offsets were never committed")
    refused = [(p, r) for p, r in HOSTILE if r is not None]
    stored = letters(kafka_app)
    assert len(stored) == len(refused)
    for letter, (payload, reason) in zip(stored, refused, strict=True):
        assert reason in letter.reason, (reason, letter.reason)
        payload = payload or b""
        assert letter.payload_bytes == len(payload)
        assert len(letter.payload) <= 4096
        if letter.payload.startswith("base64:"):  # binary or NUL-bearing: encoded, a faithful prefix
            kept = base64.b64decode(letter.payload[len("base64:") :])
            assert kept and payload.startswith(kept)
            assert b"\x00" in payload or not _utf8(payload)
        else:
            assert payload.decode("utf-8").startswith(letter.payload)
    # the odd-but-valid unknown fields were kept in metadata, as JSON PostgreSQL accepted
    odd = scalar(kafka_app, select(ServedModel.meta).where(ServedModel.user_id == "u"))
    assert odd["surprise"]["deep"][2]["k"] == "\u2028\u202e" and odd["surprise"]["n"] == -(10**30)
    dead = client.get("/api/events/dead-letters?limit=100").get_json()["items"]
    assert len(dead) == len(refused)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@pytest.fixture
def poison_constraint(kafka_app):
    """PostgreSQL itself refuses one model name (a CHECK constraint), as it would refuse bad data."""
    with kafka_app.app_context():
        db.session.execute(
            text("ALTER TABLE models ADD CONSTRAINT test_no_poison CHECK (model_name NOT LIKE 'poison%') NOT VALID")
        )
        db.session.commit()
    yield
    with kafka_app.app_context():
        db.session.execute(text("ALTER TABLE models DROP CONSTRAINT IF EXISTS test_no_poison"))
        db.session.commit()
        db.session.remove()


def test_a_batch_the_database_refuses_is_split_and_only_the_refused_event_dead_lettered(kafka_app, poison_constraint):
    topics = kafka_app.config["TOPICS"]
    prod = producer()
    names = [f"model-{i}" for i in range(60)]
    names[37] = "poison-37"
    for name in names:
        send(prod, topics["kafka_topic_uploaded"], {"user_id": "dave", "model_name": name, "image": ECHO}, key="k")
    send(prod, topics["kafka_topic_uploaded"], {"user_id": "dave", "model_name": "model-1", "image": ECHO}, key="k")
    prod.flush()
    prod.close()
    listener = KafkaListener(kafka_app, settings_of(kafka_app))
    listener.start()  # started after the records are on the topic: they arrive as one batch
    try:
        wait_for(lambda: committed_offsets(topics) == 61, 60, "the offsets of the batch were never committed")
    finally:
        listener.stop()
    models = select(func.count()).select_from(ServedModel)
    assert scalar(kafka_app, models) == 59
    [letter] = letters(kafka_app)
    assert letter.offset == 37 and "the database refused this event" in letter.reason
    assert "test_no_poison" in letter.reason
    assert json.loads(letter.payload)["model_name"] == "poison-37"
    assert scalar(kafka_app, select(func.count()).select_from(IngestedEvent)) == 60
    # exactly once: a listener of the same group starts from the committed offsets
    prod = producer()
    send(prod, topics["kafka_topic_uploaded"], {"user_id": "dave", "model_name": "late", "image": ECHO}, key="k")
    prod.flush()
    prod.close()
    again = KafkaListener(kafka_app, settings_of(kafka_app))
    again.start()
    try:
        wait_for(lambda: scalar(kafka_app, models) == 60, 30, "the event after the split batch was not applied")
        wait_for(lambda: committed_offsets(topics) == 62, 20, "the last offset was never committed")
    finally:
        again.stop()
    assert scalar(kafka_app, select(func.count()).select_from(IngestedEvent)) == 61
    assert len(letters(kafka_app)) == 1


def test_values_the_driver_cannot_send_are_dead_lettered_too(app):
    """Defence in depth behind decoding: events built past it, with text psycopg2 refuses to send."""
    with app.app_context():
        settings = context().settings
        good = validate_registration({"user_id": "fay", "model_name": "fine", "image": ECHO}, settings)
        events = [
            Upload(Position("up", 0, 0), good, None, None, b"{}"),
            Upload(Position("up", 0, 1), replace(good, model_name="nul", image="echo\x00"), None, None, b"a\x00"),
            Upload(Position("up", 0, 2), replace(good, model_name="pair", image="\ud800"), None, None, b"\xed\xa0"),
            Upload(Position("up", 0, 3), replace(good, model_name="also-fine"), None, None, b"{}"),
        ]
        result = apply_events(events)
        assert (result.applied, result.dead_lettered) == (2, 2)
        names = set(db.session.scalars(select(ServedModel.model_name)))
        assert names == {"fine", "also-fine"}
        stored = list(db.session.scalars(select(DeadLetter).order_by(DeadLetter.offset)))
        assert [d.offset for d in stored] == [1, 2]
        assert "NUL" in stored[0].reason and stored[0].payload == "base64:" + base64.b64encode(b"a\x00").decode()
        assert "surrogates not allowed" in stored[1].reason and stored[1].payload.startswith("base64:")
        db.session.remove()


def test_occurred_at_far_in_the_future_is_refused_and_cannot_freeze_a_model(kafka_app, listener):
    topics = kafka_app.config["TOPICS"]
    now = datetime.now(UTC)
    prod = producer()
    frozen = dict(GOOD, event_id="future", occurred_at=(now + timedelta(days=365)).isoformat(), metadata={"rev": 1})
    send(prod, topics["kafka_topic_uploaded"], frozen, key="k")
    near = dict(GOOD, event_id="near", occurred_at=(now + timedelta(seconds=30)).isoformat(), metadata={"rev": 2})
    send(prod, topics["kafka_topic_uploaded"], near, key="k")
    later = dict(GOOD, event_id="later", occurred_at=(now + timedelta(seconds=31)).isoformat(), metadata={"rev": 3})
    send(prod, topics["kafka_topic_uploaded"], later, key="k")
    prod.flush()
    prod.close()
    client = kafka_app.test_client()
    wait_for(lambda: committed_offsets(topics) == 3, 30, "the events were never consumed")
    [model] = client.get("/api/models").get_json()["items"]
    assert model["metadata"] == {"rev": 3}, "a later event did not apply"
    [letter] = letters(kafka_app)
    assert letter.offset == 0
    assert "occurred_at" in letter.reason and "EVENT_MAX_FUTURE_SKEW_SECONDS" in letter.reason


def test_an_event_without_occurred_at_never_overrides_a_dated_one(kafka_app, listener):
    topics = kafka_app.config["TOPICS"]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    dated = {"user_id": "erin", "model_name": "dated", "image": ECHO}
    undated = {"user_id": "erin", "model_name": "undated", "image": ECHO}
    prod = producer()
    send(prod, topics["kafka_topic_uploaded"], dict(dated, occurred_at=t0.isoformat(), metadata={"rev": 2}), key="k")
    send(prod, topics["kafka_topic_uploaded"], dict(dated, metadata={"rev": "replayed"}), key="k")  # a replay
    send(prod, topics["kafka_topic_deleted"], {"user_id": "erin", "model_name": "dated"}, key="k")
    send(prod, topics["kafka_topic_uploaded"], dict(undated, metadata={"rev": 1}), key="k")
    send(prod, topics["kafka_topic_uploaded"], dict(undated, metadata={"rev": 2}), key="k")
    prod.flush()
    prod.close()
    client = kafka_app.test_client()
    wait_for(
        lambda: scalar(kafka_app, select(func.count()).select_from(IngestedEvent)) == 5, 30, "not all were consumed"
    )
    models = {m["model_name"]: m for m in client.get("/api/models").get_json()["items"]}
    assert models["dated"]["metadata"] == {"rev": 2}, "an undated replay overrode a dated registration"
    assert models["undated"]["metadata"] == {"rev": 2}, "with nothing dated known, undated events apply in order"
    outcomes = {(e["kind"], e["model_name"], e["outcome"]) for e in client.get("/api/events").get_json()["items"]}
    assert ("model.uploaded", "dated", "stale") in outcomes
    assert all(e["occurred_at"] is None for e in client.get("/api/events").get_json()["items"][:4])
