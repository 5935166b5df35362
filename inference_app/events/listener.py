"""The Kafka listener: poll -> validate -> registry -> commit, in the background role's process.

At least once from Kafka, exactly once in effect: auto-commit is off and offsets are
committed only after the database transaction that applied the batch has committed; a
batch seen again (after a crash between the two) is recognised by ingest.apply_batch.
It never talks to Docker: deletions are carried out by reconciliation.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Flask

from ..config import Settings
from ..extensions import db
from ..models import utcnow
from .connection import BrokerAccessError, check_access, client_options
from .contract import Position, decode
from .ingest import apply_events

logger = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
LAG_EVERY = 5.0
EMPTY_ASSIGNMENT_LIMIT = 30.0


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
        while not self._stop.is_set():
            batch = consumer.poll(timeout_ms=1000, max_records=self.settings.kafka_batch_size)
            records = [r for part in batch.values() for r in part]
            if records:
                self._apply(records)
                try:
                    consumer.commit()
                except Exception as exc:  # a rebalance or a broker restart: the batch comes again, harmlessly
                    logger.warning("offset commit failed (%s); the batch may be seen again", exc.__class__.__name__)
            now = time.monotonic()
            if consumer.assignment():
                unassigned_since = now
            elif now - unassigned_since > EMPTY_ASSIGNMENT_LIMIT:
                raise RuntimeError("no partitions assigned for 30 s; reconnecting")
            if now - last_lag >= LAG_EVERY:
                last_lag = now
                self._measure_lag(consumer)

    def _apply(self, records) -> None:
        events = [decode(Position(r.topic, r.partition, r.offset), r.value, self.settings) for r in records]
        with self._app.app_context():
            try:
                result = apply_events(events)
            finally:
                db.session.remove()
        self.applied += result.applied
        self.dead_lettered += result.dead_lettered
        self.last_event_at = utcnow()
        if result.deleted_model_ids and self._on_deleted is not None:
            self._on_deleted(result.deleted_model_ids)

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
