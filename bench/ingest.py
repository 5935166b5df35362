"""Ingestion: Kafka -> PostgreSQL through the real listener, in a `flask worker` process.

Each run pre-produces EVENTS upload events (each with an event_id, as the upload service
sends them) to fresh topics, then starts a background-role process on them and watches
PostgreSQL count the applied events. The rate is taken from the first applied batch to the
last, so the consumer group join is not in it. The baseline is a bare kafka-python consumer
reading the same topic with the same batch size (no decoding, no database).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import UTC, datetime

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from . import database
from .config import BenchError
from .processes import rss_mb
from .report import Row
from .session import Session
from .stats import median

logger = logging.getLogger(__name__)

EVENTS = 50_000
RUNS = 3
PARTITIONS = 3
BATCH = 2000  # the service's KAFKA_BATCH_SIZE default
TARGET_RATE = 10_000
TARGET_RSS_MB = 120  # the listener's process while it ingests at that rate
POLL = 0.1  # seconds between counts: fine against runs of 10-20 s, light on PostgreSQL


def topics_for(tag: str) -> dict[str, str]:
    return {
        "KAFKA_TOPIC_UPLOADED": f"bench-{tag}.model.uploaded",
        "KAFKA_TOPIC_DELETED": f"bench-{tag}.model.deleted",
        "KAFKA_GROUP_ID": f"bench-{tag}",
    }


def produce(bootstrap: str, topics: dict[str, str], tag: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20_000)
    try:
        admin.create_topics(
            [NewTopic(topics[k], PARTITIONS, 1) for k in ("KAFKA_TOPIC_UPLOADED", "KAFKA_TOPIC_DELETED")]
        )
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
    now = datetime.now(UTC).isoformat()
    for i in range(EVENTS):
        event = {
            "event_id": f"{tag}-{i}",
            "occurred_at": now,
            "user_id": f"user-{i % 997}",
            "model_name": f"{tag}-model-{i}",
            "version": "1",
            "image": "registry.example/models/classifier:1",
            "memory": "256m",
            "metadata": {"source": "bench", "framework": "sklearn"},
        }
        producer.send(
            topics["KAFKA_TOPIC_UPLOADED"],
            value=json.dumps(event).encode(),
            key=event["user_id"].encode(),
        )
    producer.flush(timeout=120)
    producer.close()


def bare_consume(bootstrap: str, topic: str) -> float:
    """Events per second a bare consumer reads the topic at, first record to last."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=BATCH)
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        seen, first = 0, None
        deadline = time.monotonic() + 120
        while seen < EVENTS:
            batch = consumer.poll(timeout_ms=1000, max_records=BATCH)
            got = sum(len(records) for records in batch.values())
            if got and first is None:
                first, seen = time.monotonic(), got
                first_batch = got
                continue
            seen += got
            if time.monotonic() > deadline:
                raise BenchError(f"bare consumer read only {seen} of {EVENTS} events")
        return (seen - first_batch) / (time.monotonic() - first)
    finally:
        consumer.close()


def through_listener(s: Session, topics: dict[str, str], name: str) -> tuple[float, float]:
    """(events/s applied by a `flask worker`, its RSS in MB after the run)."""
    worker = s.start_worker(name, KAFKA_BOOTSTRAP_SERVERS=s.cfg.kafka_bootstrap, **topics)
    topic = topics["KAFKA_TOPIC_UPLOADED"]
    try:
        conn = database.connect(s.cfg.database_url)
        first_at, first_count, count = None, 0, 0
        deadline = time.monotonic() + 180
        with conn.cursor() as cur:
            while count < EVENTS:
                time.sleep(POLL)
                cur.execute("SELECT count(*) FROM ingested_events WHERE topic = %s", (topic,))
                count = cur.fetchone()[0]
                now = time.monotonic()
                if count and first_at is None:
                    first_at, first_count = now, count
                if not worker.alive() or now > deadline:
                    raise BenchError(f"the listener applied {count} of {EVENTS} events; see {worker.log_path}")
        conn.close()
        rate = (count - first_count) / (now - first_at)
        return rate, rss_mb(worker.pid)
    finally:
        worker.stop()


def run(s: Session) -> tuple[list[Row], list[float]]:
    """The rows, and the listener processes' RSS after each run (for the memory rows)."""
    rates, bare, rss = [], [], []
    for i in range(RUNS):
        tag = uuid.uuid4().hex[:8]
        topics = topics_for(tag)
        began = time.monotonic()
        produce(s.cfg.kafka_bootstrap, topics, tag)
        logger.info(
            "ingest run %s: produced %s events in %.1f s",
            i + 1,
            EVENTS,
            time.monotonic() - began,
        )
        if i % 2 == 0:
            bare.append(bare_consume(s.cfg.kafka_bootstrap, topics["KAFKA_TOPIC_UPLOADED"]))
            rate, mem = through_listener(s, topics, f"ingest-worker-{i + 1}")
        else:
            rate, mem = through_listener(s, topics, f"ingest-worker-{i + 1}")
            bare.append(bare_consume(s.cfg.kafka_bootstrap, topics["KAFKA_TOPIC_UPLOADED"]))
        rates.append(rate)
        rss.append(mem)
        logger.info(
            "ingest run %s: listener %.0f events/s, bare consumer %.0f events/s",
            i + 1,
            rate,
            bare[-1],
        )
    name = f"Ingestion (Kafka → PostgreSQL, {EVENTS:,} events)"
    fractions = [r / b for r, b in zip(rates, bare, strict=True)]
    rows = [
        Row(
            name,
            "events/s through the listener",
            f"{median(rates):,.0f}/s",
            f"{min(rates):,.0f}..{max(rates):,.0f}/s",
            f"bare consumer {median(bare):,.0f}/s; listener RSS up to {max(rss):.0f} MB",
            f"≥ {TARGET_RATE:,}/s with RSS ≤ {TARGET_RSS_MB} MB",
            median(rates) >= TARGET_RATE and max(rss) <= TARGET_RSS_MB,
        ),
        Row(
            name,
            "fraction of the bare consumer's rate",
            f"{median(fractions):.1%}",
            f"{min(fractions):.1%}..{max(fractions):.1%}",
        ),
    ]
    return rows, rss
