"""The Kafka listener: poll -> validate -> registry -> commit, in the background role's process.

At least once from Kafka, exactly once in effect: auto-commit is off and offsets are
committed only after the database transaction that applied the batch has committed; a
batch seen again (after a crash between the two) is recognised by ingest.apply_batch.
It never talks to Docker: deletions are carried out by reconciliation.

Two threads share the work: while PostgreSQL applies one batch (an "applier" thread, which
waits on the database with the GIL released), the listener thread polls and decodes the next.
One batch at most is in flight; its offsets are committed once it is applied, before the next
one goes, and only for the partitions this consumer still owns. Should a rebalance hand a
partition to another consumer meanwhile, that one reads the batch again from the committed
offset, and waits in PostgreSQL for this one to finish it (coordination.lock_kafka_partitions):
the batch is applied twice in order, the second time as duplicates.
(No kafka-python rebalance listener that would wait for the batch: with one registered and
polls that do not wait, kafka-python 3.0.12 was seen to stop fetching for good after a rebalance.)
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from flask import Flask

from ..config import Settings
from ..extensions import db
from ..models import utcnow
from .connection import BrokerAccessError, check_access, client_options
from .contract import Decoded, Position, decode
from .ingest import BatchResult, apply_events

logger = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
LAG_EVERY = 5.0
EMPTY_ASSIGNMENT_LIMIT = 30.0


@dataclass
class InFlight:
    """A batch handed to the applier thread, and where each of its partitions resumes after it."""

    result: Future
    resume_at: dict  # TopicPartition -> OffsetAndMetadata


class KafkaListener:
    """One consumer thread; restartable; reports its state for /readyz."""

    def __init__(self, app: Flask, settings: Settings, on_deleted=None):
        self._app = app
        self.settings = settings
        self._on_deleted = on_deleted
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = "off" if not settings.kafka_bootstrap_servers else "starting"
        self.reason: str | None = None
        self.lag: int | None = None
        self.last_event_at = None
        self.applied = 0
        self.dead_lettered = 0
        self.restarts = 0
        self._in_flight: InFlight | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.settings.kafka_bootstrap_servers)

    def start(self) -> None:
        if not self.enabled:
            logger.info("Kafka listener off: KAFKA_BOOTSTRAP_SERVERS is not set (register models through the API)")
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kafka-listener", daemon=True)
        self._thread.start()

    def ensure_alive(self) -> None:
        """The supervisor's check: a dead listener thread is started again."""
        if self.enabled and not self._stop.is_set() and (self._thread is None or not self._thread.is_alive()):
            self.restarts += 1
            logger.error("Kafka listener thread was dead; restarting it (restart %s)", self.restarts)
            self.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def describe(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "lag": self.lag,
            "last_event_at": self.last_event_at.isoformat() if self.last_event_at else None,
            "applied": self.applied,
            "dead_lettered": self.dead_lettered,
            "restarts": self.restarts,
            "topics": [self.settings.kafka_topic_uploaded, self.settings.kafka_topic_deleted],
        }

    def _set_state(self, state: str, reason: str | None = None) -> None:
        if state != self.state or reason != self.reason:
            log = {"unauthorized": logger.error, "error": logger.warning, "disconnected": logger.warning}.get(
                state, logger.info
            )
            log("Kafka listener %s%s", state, f": {reason}" if reason else "")
        self.state, self.reason = state, reason

    # -- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        # What the process holds by now (modules, the app) lives as long as it does: out of the
        # collector's full passes, which ingestion's ~30 new objects an event would otherwise
        # trigger over all of it (3-6 µs an event of this thread's CPU, measured).
        gc.collect()
        gc.freeze()
        backoff = 1.0
        while not self._stop.is_set():
            consumer = None
            try:
                if self.state != "unauthorized":  # (refused again: one log line, not one per retry)
                    self._set_state("connecting")
                consumer = self._connect()
                self._set_state("connected")
                backoff = 1.0
                self._consume(consumer)
            except BrokerAccessError as exc:  # credentials or certificates: retried, slowly, until fixed
                self._set_state("unauthorized", str(exc))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception as exc:  # every failure: back off, reconnect, resume from committed offsets
                self._set_state("error", f"{exc.__class__.__name__}: {str(exc)[:200]}")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            finally:
                if consumer is not None:
                    try:
                        consumer.close(autocommit=False)
                    except Exception:
                        pass
        self._set_state("stopped")

    def _connect(self):
        from kafka import KafkaConsumer

        s = self.settings
        check_access(s)
        consumer = KafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap_servers.split(","),
            group_id=s.kafka_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.kafka_batch_size,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            request_timeout_ms=20_000,
            reconnect_backoff_max_ms=5_000,
            client_id=f"inference-service-{s.instance_name}",
            **client_options(s),
        )
        topics = [s.kafka_topic_uploaded, s.kafka_topic_deleted]
        for topic in topics:  # metadata first: subscribing before it is known can strand a consumer
            consumer.partitions_for_topic(topic)
        consumer.subscribe(topics)
        return consumer

    def _consume(self, consumer) -> None:
        last_lag = 0.0
        unassigned_since = time.monotonic()
        with ThreadPoolExecutor(1, thread_name_prefix="kafka-applier") as applier:
            try:
                while not self._stop.is_set():
                    self._take_next(consumer, applier)
                    now = time.monotonic()
                    if consumer.assignment():
                        unassigned_since = now
                    elif now - unassigned_since > EMPTY_ASSIGNMENT_LIMIT:
                        raise RuntimeError("no partitions assigned for 30 s; reconnecting")
                    if now - last_lag >= LAG_EVERY:
                        last_lag = now
                        self._measure_lag(consumer)
                self._finish(consumer)  # stopping: the last batch applied and its offsets committed
            finally:
                self._drop_in_flight()  # failing: applied or not, it is read again (and recognised)

    def _take_next(self, consumer, applier: ThreadPoolExecutor) -> None:
        """Poll and decode the next batch while the one in flight is applied, then hand it over.

        (A method of its own so that the records are let go of before the next poll.)
        """
        batch = consumer.poll(timeout_ms=1000, max_records=self.settings.kafka_batch_size)
        records = [r for part in batch.values() for r in part]
        events = self._decode(records)
        self._finish(consumer)
        if records:
            self._in_flight = InFlight(applier.submit(self._apply, events), _resume_at(records))

    def _decode(self, records) -> list[Decoded]:
        return [decode(Position(r.topic, r.partition, r.offset), r.value, self.settings) for r in records]

    def _apply(self, events: list[Decoded]) -> BatchResult:
        """In the applier thread: the batch in one transaction (ingest.apply_events)."""
        with self._app.app_context():
            try:
                return apply_events(events)
            finally:
                db.session.remove()

    def _finish(self, consumer) -> None:
        """Wait for the batch in flight to be applied, then commit its offsets; raises what applying raised."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is None:
            return
        result = in_flight.result.result()
        self.applied += result.applied
        self.dead_lettered += result.dead_lettered
        self.last_event_at = utcnow()
        if result.deleted_model_ids and self._on_deleted is not None:
            self._on_deleted(result.deleted_model_ids)
        owned = consumer.assignment()  # (a partition revoked meanwhile is committed by its new owner)
        offsets = {part: at for part, at in in_flight.resume_at.items() if part in owned}
        try:
            if offsets:
                consumer.commit(offsets)
        except Exception as exc:  # a rebalance or a broker restart: the batch comes again, harmlessly
            logger.warning("offset commit failed (%s); the batch may be seen again", exc.__class__.__name__)

    def _drop_in_flight(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            try:
                in_flight.result.result()
            except Exception:  # the error that stops the loop is the one reported
                pass

    def _measure_lag(self, consumer) -> None:
        parts = list(consumer.assignment())
        if not parts:
            self.lag = None
            return
        try:
            ends = consumer.end_offsets(parts)
            self.lag = sum(max(0, ends[p] - consumer.position(p)) for p in parts)
            if self.state != "connected":
                self._set_state("connected")
        except Exception as exc:
            self._set_state("disconnected", f"broker unreachable ({exc.__class__.__name__}); retrying")


def _resume_at(records) -> dict:
    """Per partition, the offset after the last of these records (what the group commits)."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    last: dict = {}
    for record in records:
        last[TopicPartition(record.topic, record.partition)] = record.offset
    return {part: OffsetAndMetadata(offset + 1, "", -1) for part, offset in last.items()}
