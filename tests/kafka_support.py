"""Helpers for the tests that talk to the real Kafka broker provisioned by `make test`."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from waiting import wait_for  # noqa: F401  (test_kafka.py imports it from here)

BOOTSTRAP = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS", "")


def require_kafka() -> str:
    if not BOOTSTRAP:
        pytest.fail("TEST_KAFKA_BOOTSTRAP_SERVERS is not set: run the suite with `make test`, which starts a broker")
    return BOOTSTRAP


def fresh_topics() -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {
        "kafka_bootstrap_servers": BOOTSTRAP,
        "kafka_topic_uploaded": f"test-{tag}.model.uploaded",
        "kafka_topic_deleted": f"test-{tag}.model.deleted",
        "kafka_group_id": f"test-{tag}",
    }


def create_topics(settings: dict[str, str], partitions: int = 3) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=20_000)
    try:
        admin.create_topics(
            [
                NewTopic(settings["kafka_topic_uploaded"], partitions, 1),
                NewTopic(settings["kafka_topic_deleted"], partitions, 1),
            ]
        )
    finally:
        admin.close()


def producer():
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5, batch_size=65536, retries=10)


def send(prod, topic: str, event, key: str | None = None) -> None:
    value = event if isinstance(event, bytes) else json.dumps(event).encode()
    prod.send(topic, value=value, key=key.encode() if key else None)


def caught_up(settings: dict[str, str]) -> bool:
    """The consumer group has committed the end of every partition of the uploaded topic: nothing is left to read."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=20_000)
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP)
    try:
        topic = settings["kafka_topic_uploaded"]
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        group = settings["kafka_group_id"]
        committed = admin.list_group_offsets({group: None}).get(group, {})
        ends = consumer.end_offsets(parts)
        return bool(parts) and all(p in committed and committed[p].offset == ends[p] for p in parts)
    finally:
        consumer.close()
        admin.close()
