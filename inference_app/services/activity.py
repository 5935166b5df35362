"""Inference activity: requests in flight and when each model was last used.

Only inference counts as activity. A model with a request in flight cannot be claimed for
stopping (idle shutdown or eviction) until the request ends; a stopper that holds a model
makes new requests wait for the stop to finish and start the model again.

The last-use time is written to the database at most once a second per model per process,
so the hot path does not write on every request; idle decisions add that second as grace.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import update

from ..extensions import db
from ..models import ServedModel, utcnow

FLUSH_INTERVAL = 1.0


class Activity:
    """In-process ledger of in-flight requests and exclusive (stopping) claims."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[int, int] = {}
        self._held: set[int] = set()
        self._last_used: dict[int, datetime] = {}
        self._flushed_at: dict[int, float] = {}

    def enter(self, model_id: int) -> bool:
        """Count a request in; False when a stopper holds the model (caller waits, then retries)."""
        with self._lock:
            if model_id in self._held:
                return False
            self._in_flight[model_id] = self._in_flight.get(model_id, 0) + 1
            return True

    def leave(self, model_id: int) -> None:
        now = utcnow()
        with self._lock:
            left = self._in_flight.get(model_id, 0) - 1
            if left > 0:
                self._in_flight[model_id] = left
            else:
                self._in_flight.pop(model_id, None)
            self._last_used[model_id] = now

    def in_flight(self, model_id: int) -> int:
        with self._lock:
            return self._in_flight.get(model_id, 0)

    def total_in_flight(self) -> int:
        with self._lock:
            return sum(self._in_flight.values())

    def try_hold(self, model_id: int) -> bool:
        """Claim a model for stopping; False while any request for it is in flight."""
        with self._lock:
            if self._in_flight.get(model_id) or model_id in self._held:
                return False
            self._held.add(model_id)
            return True

    def release(self, model_id: int) -> None:
        with self._lock:
            self._held.discard(model_id)

    @contextmanager
    def holding(self, model_id: int):
        if not self.try_hold(model_id):
            yield False
            return
        try:
            yield True
        finally:
            self.release(model_id)

    def last_used(self, model_id: int) -> datetime | None:
        with self._lock:
            return self._last_used.get(model_id)

    def record_use(self, model_id: int, force: bool = False) -> None:
        """Persist the last-use time, at most once per FLUSH_INTERVAL per model."""
        now_mono = time.monotonic()
        with self._lock:
            if not force and now_mono - self._flushed_at.get(model_id, -1e9) < FLUSH_INTERVAL:
                return
            self._flushed_at[model_id] = now_mono
            stamp = self._last_used.get(model_id) or utcnow()
        db.session.execute(
            update(ServedModel)
            .where(ServedModel.id == model_id)
            .where((ServedModel.last_used_at.is_(None)) | (ServedModel.last_used_at < stamp))
            .values(last_used_at=stamp)
        )
        db.session.commit()
