"""Kafka ingestion against the real Apache Kafka broker: none lost, none doubled, bad ones dead-lettered."""

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from conftest import ECHO, built_app, managed_containers
from kafka_support import PrivateBroker, caught_up, create_topics, fresh_topics, producer, require_kafka, send, wait_for
from sqlalchemy import func, select

from inference_app.events.listener import KafkaListener
from inference_app.extensions import db
from inference_app.models import DeadLetter, IngestedEvent, ServedModel
from inference_app.services.context import context

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def kafka_app(database, docker_client):
    require_kafka()
    topics = fresh_topics()
    create_topics(topics)
    with built_app(docker_client, **topics) as app:
        app.config["TOPICS"] = topics
        yield app


@pytest.fixture
def listener(kafka_app):
    running = KafkaListener(kafka_app, context_settings(kafka_app))
    running.start()
    yield running
    running.stop()


def context_settings(app):
    with app.app_context():
        return context().settings


def count(app, query):
    with app.app_context():
        try:
            return db.session.scalar(query)
        finally:
            db.session.remove()


def upload(i: int, **extra) -> dict:
    event = {"user_id": f"user{i % 7}", "model_name": f"model-{i}", "image": ECHO}
    event.update(extra)
    return event


def test_uploaded_event_is_registered_and_answers(kafka_app, listener):
    topics = kafka_app.config["TOPICS"]
    prod = producer()
    send(prod, topics["kafka_topic_uploaded"], upload(1, event_id="e-1", owner_team="vision"), key="user1/model-1")
    prod.flush()
    client = kafka_app.test_client()
    items = wait_for(lambda: client.get("/api/models").get_json()["items"], 10, "the uploaded model never appeared")
    [model] = items
    assert model["model_name"] == "model-1" and model["metadata"]["owner_team"] == "vision"
    answer = client.post(f"/api/models/{model['id']}/infer", json={"hello": "kafka"})
    assert answer.status_code == 200 and answer.get_json()["echo"] == {"hello": "kafka"}
    applied = client.get("/api/events").get_json()["items"]
    assert [(e["event_id"], e["outcome"], e["model_id"]) for e in applied] == [("e-1", "applied", model["id"])]
    prod.close()


def test_ten_thousand_events_with_duplicates_and_reordering_give_exactly_the_right_rows(kafka_app, listener):
    topics = kafka_app.config["TOPICS"]
    rng = random.Random(7)
    identities = 3000
    events = []
    for i in range(identities):
        revisions = [
            upload(
                i, event_id=f"m{i}-r{rev}", occurred_at=(T0 + timedelta(minutes=rev)).isoformat(), metadata={"rev": rev}
            )
            for rev in (1, 2, 3)
        ]
        if i % 10 == 0:
            revisions.reverse()  # some arrive out of order
        events.extend(revisions)
    duplicates = rng.sample(events, 1000)  # 10% of the 10,000 are copies of earlier events
    stream = events + duplicates
    assert len(stream) == 10_000
    prod = producer()
    for event in stream:
        send(prod, topics["kafka_topic_uploaded"], event, key=f"{event['user_id']}/{event['model_name']}")
    prod.flush()
    prod.close()
    total = select(func.count()).select_from(IngestedEvent)
    wait_for(lambda: count(kafka_app, total) == 9000, 90, "not every distinct event was recorded")
    wait_for(lambda: caught_up(topics), 30, "the listener never committed the end of the topic")  # nothing more to come
    assert count(kafka_app, total) == 9000
    assert count(kafka_app, select(func.count()).select_from(ServedModel)) == identities
    revs = count(kafka_app, select(func.count()).where(ServedModel.meta["rev"].as_integer() == 3))
    assert revs == identities, "an older event overwrote a newer one"
    stale = count(kafka_app, select(func.count()).where(IngestedEvent.outcome == "stale"))
    assert stale == 2 * (identities // 10)  # the reversed ones: rev 2 and rev 1 came after rev 3
    assert count(kafka_app, select(func.count()).select_from(DeadLetter)) == 0


def test_a_second_listener_joining_mid_stream_loses_nothing_and_doubles_nothing(kafka_app, listener):
    """The group rebalances while the first listener has a batch in flight: it is applied once."""
    topics = kafka_app.config["TOPICS"]
    events = 12_000
    prod = producer()
    for i in range(events):
        send(prod, topics["kafka_topic_uploaded"], upload(i, event_id=f"r-{i}"), key=f"user{i % 7}/model-{i}")
    prod.flush()
    prod.close()
    total = select(func.count()).select_from(IngestedEvent)
    wait_for(lambda: count(kafka_app, total) >= 2000, 60, "ingestion never started")
    second = KafkaListener(kafka_app, context_settings(kafka_app))
    second.start()
    try:
        wait_for(lambda: caught_up(topics), 120, "the group never committed the end of the topic")
        assert count(kafka_app, total) == events
        assert count(kafka_app, select(func.count(func.distinct(IngestedEvent.event_id)))) == events
        assert count(kafka_app, select(func.count()).select_from(ServedModel)) == events
        assert count(kafka_app, select(func.count()).select_from(DeadLetter)) == 0
        assert listener.applied + second.applied >= events
    finally:
        second.stop()


def test_bad_events_are_dead_lettered_and_ingestion_continues(kafka_app, listener):
    topics = kafka_app.config["TOPICS"]
    up = topics["kafka_topic_uploaded"]
    bad = [
        (b"this is not json", "not JSON"),
        (json.dumps([1, 2]).encode(), "must be a JSON object"),
        (json.dumps({"model_name": "m", "image": ECHO}).encode(), "user_id is required"),
        (
            json.dumps({"user_id": "u", "model_name": "m", "image": ECHO, "port": "eighty"}).encode(),
            "port must be a whole number",
        ),
        (
            json.dumps({"user_id": "u", "model_name": "m", "image": ECHO, "metadata": {"x": "y" * 70_000}}).encode(),
            "exceeds the limit",
        ),
        (
            json.dumps({"user_id": "u", "model_name": "m", "image": ECHO, "event_type": "model.exploded"}).encode(),
            "unknown event type",
        ),
        (json.dumps({"user_id": "../root", "model_name": "m", "image": ECHO}).encode(), "user_id may contain only"),
        (json.dumps({"user_id": "u", "model_name": "m\x00x", "image": ECHO}).encode(), "model_name holds a NUL"),
        (
            json.dumps({"user_id": "u", "model_name": "m" * 200, "image": ECHO}).encode(),
            "model_name must be at most 128",
        ),
        (
            json.dumps({"user_id": "u", "model_name": "m", "image": ECHO, "occurred_at": "yesterday"}).encode(),
            "occurred_at",
        ),
    ]
    prod = producer()
    for payload, _reason in bad:
        send(prod, up, payload, key="same")
    send(prod, up, upload(5, event_id="good-after-bad"), key="same")
    prod.flush()
    prod.close()
    client = kafka_app.test_client()
    wait_for(
        lambda: client.get("/api/models").get_json()["total"] == 1,
        20,
        "the good event after the bad ones was not applied",
    )
    letters = wait_for(
        lambda: (items := client.get("/api/events/dead-letters").get_json()["items"])
        and len(items) == len(bad)
        and items,
        10,
        "not every bad event was dead-lettered",
    )
    by_offset = sorted(letters, key=lambda d: d["offset"])
    for letter, (payload, reason) in zip(by_offset, bad, strict=True):
        assert reason in letter["reason"], (reason, letter["reason"])
        assert letter["topic"] == up and letter["payload_bytes"] == len(payload)
        assert len(letter["payload"]) <= 4096
    assert by_offset[0]["payload"] == "this is not json"


def test_deleted_event_stops_the_container_and_hides_the_model(kafka_app, listener, docker_client):
    topics = kafka_app.config["TOPICS"]
    prod = producer()
    send(prod, topics["kafka_topic_uploaded"], upload(9, occurred_at=T0.isoformat()), key="k")
    prod.flush()
    client = kafka_app.test_client()
    [model] = wait_for(lambda: client.get("/api/models").get_json()["items"], 10, "upload never applied")
    assert client.post(f"/api/models/{model['id']}/start").status_code == 200
    # an older deletion never removes a newer upload, nor does one without a time
    send(
        prod,
        topics["kafka_topic_deleted"],
        {"user_id": "user2", "model_name": "model-9", "occurred_at": (T0 - timedelta(days=1)).isoformat()},
    )
    send(prod, topics["kafka_topic_deleted"], {"user_id": "user2", "model_name": "model-9"})
    send(
        prod,
        topics["kafka_topic_deleted"],
        {"user_id": "user2", "model_name": "model-9", "event_id": "del-9", "occurred_at": T0.isoformat()},
    )
    prod.flush()
    prod.close()
    wait_for(lambda: client.get("/api/models").get_json()["total"] == 0, 10, "the deletion was not applied")
    assert client.get(f"/api/models/{model['id']}").status_code == 404
    with kafka_app.app_context():
        from inference_app.jobs.reconcile import reconcile

        reconcile()
        assert db.session.get(ServedModel, model["id"]).status == "stopped"
    assert managed_containers(docker_client, model["id"]) == []


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory):
    """A broker of this module's own: the restart test stops it, never the shared one."""
    broker = PrivateBroker(tmp_path_factory.mktemp("kafka-private"))
    broker.start()
    yield broker
    broker.stop()


def test_broker_restart_mid_stream_loses_nothing(database, docker_client, private_broker):
    topics = fresh_topics(private_broker.bootstrap)
    create_topics(topics)
    total = select(func.count()).select_from(ServedModel)
    with built_app(docker_client, **topics) as app:
        listener = KafkaListener(app, context_settings(app))
        listener.start()
        try:
            prod = producer(private_broker.bootstrap)
            for i in range(1500):
                send(prod, topics["kafka_topic_uploaded"], upload(i, event_id=f"b-{i}"), key=str(i))
            prod.flush()
            prod.close()
            wait_for(lambda: count(app, total) > 0, 20, "ingestion never started")
            private_broker.stop()
            try:
                wait_for(
                    lambda: listener.state in ("disconnected", "error"), 60, "the listener never noticed the outage"
                )
            finally:
                private_broker.start()
            prod = producer(private_broker.bootstrap)
            for i in range(1500, 3000):
                send(prod, topics["kafka_topic_uploaded"], upload(i, event_id=f"b-{i}"), key=str(i))
            prod.flush()
            prod.close()
            wait_for(lambda: count(app, total) == 3000, 120, "events were lost across the broker restart")
            assert count(app, select(func.count()).select_from(IngestedEvent)) == 3000
        finally:
            listener.stop()


def test_listener_off_without_bootstrap_servers(app, client):
    runner = app.extensions["background"]
    runner.run_heartbeat()
    body = client.get("/readyz").get_json()
    assert client.get("/readyz").status_code == 200
    assert body["checks"]["background"]["kafka"]["state"] == "off"


def test_dead_listener_thread_is_restarted(kafka_app, listener):
    listener._stop.set()
    listener._thread.join(timeout=10)
    assert not listener._thread.is_alive()
    listener._stop.clear()
    listener.ensure_alive()
    assert listener._thread.is_alive() and listener.restarts == 1
    topics = kafka_app.config["TOPICS"]
    prod = producer()
    send(prod, topics["kafka_topic_uploaded"], upload(3), key="x")
    prod.flush()
    prod.close()
    client = kafka_app.test_client()
    wait_for(lambda: client.get("/api/models").get_json()["total"] == 1, 15, "the restarted listener did not consume")
