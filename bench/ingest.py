"""Ingestion: Kafka -> PostgreSQL through the real listener, in a `flask worker` process.

Each run pre-produces EVENTS upload events (each with an event_id, as the upload service
sends them) to fresh topics, then starts a background-role process on them and watches
PostgreSQL count the applied events. The rate is taken from the first applied batch to the
last, so the consumer group join is not in it. The baseline is a bare kafka-python consumer
reading the same topic with the same batch size (no decoding, no database).

Over the same span it takes the CPU time of the listener's process and of its PostgreSQL
backends (read from /proc: the bench's PostgreSQL runs on this machine), per event: steadier
than the rate on a shared machine, and what the rate is made of. Memory is the process's peak
resident set (VmHWM) over its whole life.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from . import database
from .config import BenchError
from .processes import cpu_seconds
from .report import Row
from .session import Session
from .stats import median

logger = logging.getLogger(__name__)

EVENTS = 100_000  # 10 s at the target rate: sustained, not one burst of buffered records
RUNS = 3
PARTITIONS = 3
BATCH = 2000  # the service's KAFKA_BATCH_SIZE default
TARGET_RATE = 10_000
TARGET_RSS_MB = 120  # the listener's process while it ingests at that rate
POLL = 0.1  # seconds between counts: fine against runs of 10-20 s, light on PostgreSQL
# Events applied so far: per partition, the last offset recorded (applied in order, each event
# once) plus one; three index lookups, where count(*) read every row of the topic ten times a second.
APPLIED = """SELECT coalesce(sum(last + 1), 0)::bigint FROM generate_series(0, %(partitions)s - 1) AS p(partition),
LATERAL (SELECT max("offset") AS last FROM ingested_events e WHERE e.topic = %(topic)s AND e.partition = p.partition) x"""


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


@dataclass
class Pass:
    """One listener run: events/s, CPU µs per event of its process and of PostgreSQL, peak RSS in MB."""

    rate: float
    cpu_us: float
    pg_us: float | None
    peak_mb: float


def through_listener(s: Session, topics: dict[str, str], name: str) -> Pass:
    """A `flask worker` applying the topic's events, measured from its first applied batch to the last."""
    worker = s.start_worker(name, KAFKA_BOOTSTRAP_SERVERS=s.cfg.kafka_bootstrap, **topics)
    params = {"topic": topics["KAFKA_TOPIC_UPLOADED"], "partitions": PARTITIONS}
    try:
        conn = database.connect(s.cfg.database_url)
        first_at, first_count, count = None, 0, 0
        deadline = time.monotonic() + 300
        with conn.cursor() as cur:
            while count < EVENTS:
                time.sleep(POLL)
                cur.execute(APPLIED, params)
                count = cur.fetchone()[0]
                now = time.monotonic()
                if count and first_at is None:
                    first_at, first_count = now, count
                    first_cpu, first_pg = cpu_seconds([worker.pid]), _backends_cpu(cur)
                if not worker.alive() or now > deadline:
                    raise BenchError(f"the listener applied {count} of {EVENTS} events; see {worker.log_path}")
            used, pg = cpu_seconds([worker.pid]) - first_cpu, _backends_cpu(cur)
        conn.close()
        done = count - first_count
        pg_us = None
        if pg is not None and first_pg is not None:
            pg_us = sum(seconds - first_pg.get(pid, 0.0) for pid, seconds in pg.items()) / done * 1e6
        return Pass(done / (now - first_at), used / done * 1e6, pg_us, _peak_rss_mb(worker.pid))
    finally:
        worker.stop()


def _backends_cpu(cur) -> dict[int, float] | None:
    """CPU seconds of the bench database's other backends (the listener's), or None if not readable here."""
    cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
    pids = [pid for (pid,) in cur.fetchall()]
    seconds = {}
    for pid in pids:
        try:
            seconds[pid] = cpu_seconds([pid])
        except OSError:  # a backend just gone (autovacuum), or PostgreSQL on another machine
            continue
    return seconds if seconds or not pids else None


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB (MiB)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise BenchError(f"no VmHWM for pid {pid}")


def run(s: Session) -> tuple[list[Row], list[float]]:
    """The rows, and the listener processes' peak RSS in each run (for the memory rows)."""
    passes: list[Pass] = []
    bare: list[float] = []
    for i in range(RUNS):
        tag = uuid.uuid4().hex[:8]
        topics = topics_for(tag)
        began = time.monotonic()
        produce(s.cfg.kafka_bootstrap, topics, tag)
        logger.info("ingest run %s: produced %s events in %.1f s", i + 1, EVENTS, time.monotonic() - began)
        if i % 2 == 0:
            bare.append(bare_consume(s.cfg.kafka_bootstrap, topics["KAFKA_TOPIC_UPLOADED"]))
            passes.append(through_listener(s, topics, f"ingest-worker-{i + 1}"))
        else:
            passes.append(through_listener(s, topics, f"ingest-worker-{i + 1}"))
            bare.append(bare_consume(s.cfg.kafka_bootstrap, topics["KAFKA_TOPIC_UPLOADED"]))
        p = passes[-1]
        logger.info(
            "ingest run %s: listener %.0f events/s (%.0f µs CPU an event, PostgreSQL %s; peak RSS %.0f MB), "
            "bare consumer %.0f events/s",
            i + 1,
            p.rate,
            p.cpu_us,
            "?" if p.pg_us is None else f"{p.pg_us:.0f} µs",
            p.peak_mb,
            bare[-1],
        )
    name = f"Ingestion (Kafka → PostgreSQL, {EVENTS:,} events)"
    rates = [p.rate for p in passes]
    rss = [p.peak_mb for p in passes]
    fractions = [r / b for r, b in zip(rates, bare, strict=True)]
    cpu = [p.cpu_us for p in passes]
    pg = [p.pg_us for p in passes if p.pg_us is not None]
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
        Row(
            name,
            "CPU an event: the listener's process",
            f"{median(cpu):.0f} µs",
            f"{min(cpu):.0f}..{max(cpu):.0f} µs",
        ),
    ]
    if pg:
        rows.append(
            Row(
                name,
                "CPU an event: its PostgreSQL backends",
                f"{median(pg):.0f} µs",
                f"{min(pg):.0f}..{max(pg):.0f} µs",
            )
        )
    return rows, rss
