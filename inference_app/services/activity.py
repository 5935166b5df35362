"""Inference activity: requests in flight and when each model was last used.

Only inference counts as activity. A model with a request in flight, in any process, cannot
be held for stopping (idle shutdown or eviction); while a stopper holds a model, new requests
wait for the stop to finish and then start it again.

Within one process the ledger is in memory. With PostgreSQL (services.shared_activity), each
process also takes a shared advisory lock per model while it has requests in flight, and a
stopper must win the exclusive lock: the database itself arbitrates between processes and
service replicas. The same goes, one level down, for each replica of a model that has several
(keyed by the replica's row id): a replica is removed only once its drainer wins its lock.

The flusher also reports this process's requests in flight per model, averaged over its
interval (services.load), for the autoscaler.

Last-use times are written by a small flusher thread (per process, started on first use,
never at import or in the factory) every FLUSH_INTERVAL, not on every request; idle
verdicts add that interval as grace.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine

from ..coordination import greatest, insert_for
from ..models import InferenceMinute, ServedModel, utcnow
from . import load

logger = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.5


class Activity:
    """In-process ledger of in-flight requests and stopping holds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[int, int] = {}
        self._held: set[int] = set()
        self._last_used: dict[int, datetime] = {}
        self._last_leave: dict[int, float] = {}
        self._dirty: set[int] = set()
        self._minutes: dict[tuple[int, datetime], list[int]] = {}
        self._replica_in_flight: dict[int, int] = {}
        self._replica_held: set[int] = set()
        self._replica_last_leave: dict[int, float] = {}
        self._replica_release_at: dict[int, float] = {}
        self._meter = load.LoadMeter(time.monotonic())
        self._engine: Engine | None = None
        self._flusher: threading.Thread | None = None
        self._closed = threading.Event()
        self._pid = os.getpid()

    # -- requests ------------------------------------------------------------------------------
    def enter(self, model_id: int) -> bool:
        """Count a request in; False while a stopper holds the model (the caller waits and retries)."""
        with self._lock:
            if model_id in self._held:
                return False
            count = self._in_flight.get(model_id, 0)
            self._meter.accrue(model_id, count, time.monotonic())
            self._in_flight[model_id] = count + 1
        if not self._share(model_id):
            with self._lock:
                self._decrement(model_id, time.monotonic())
            return False
        return True

    def leave(self, model_id: int, duration_ms: int = 0, failed: bool = False, cold: bool = False) -> None:
        """Count a request out, with what it cost: its minute's counters are flushed later."""
        now = utcnow()
        minute = now.replace(second=0, microsecond=0)
        clock = time.monotonic()
        with self._lock:
            self._decrement(model_id, clock)
            self._last_used[model_id] = now
            self._last_leave[model_id] = clock
            self._dirty.add(model_id)
            counters = self._minutes.setdefault((model_id, minute), [0, 0, 0, 0, 0])
            counters[0] += 1
            counters[1] += int(failed)
            counters[2] += int(cold)
            counters[3] += duration_ms
            counters[4] = max(counters[4], duration_ms)

    def _decrement(self, model_id: int, clock: float) -> None:
        count = self._in_flight.get(model_id, 0)
        self._meter.accrue(model_id, count, clock)
        if count > 1:
            self._in_flight[model_id] = count - 1
        else:
            self._in_flight.pop(model_id, None)

    def in_flight(self, model_id: int) -> int:
        with self._lock:
            return self._in_flight.get(model_id, 0)

    # -- replicas of a model with several --------------------------------------------------------
    def enter_replica(self, replica_id: int) -> bool:
        """Count a request in on one replica; False while its drainer holds it (pick another)."""
        with self._lock:
            if replica_id in self._replica_held:
                return False
            self._replica_in_flight[replica_id] = self._replica_in_flight.get(replica_id, 0) + 1
        if not self._share_replica(replica_id):
            self.leave_replica(replica_id)
            return False
        return True

    def leave_replica(self, replica_id: int) -> None:
        with self._lock:
            left = self._replica_in_flight.get(replica_id, 0) - 1
            if left > 0:
                self._replica_in_flight[replica_id] = left
            else:
                self._replica_in_flight.pop(replica_id, None)
            self._replica_last_leave[replica_id] = time.monotonic()

    def replica_loads(self, replica_ids: list[int]) -> list[int]:
        """Requests in flight in this process on each of these replicas."""
        with self._lock:
            return [self._replica_in_flight.get(r, 0) for r in replica_ids]

    def try_hold_replica(self, replica_id: int) -> bool:
        """Claim a replica for removal; False while any request is in flight on it anywhere."""
        with self._lock:
            if self._replica_in_flight.get(replica_id) or replica_id in self._replica_held:
                return False
            self._replica_held.add(replica_id)
        if not self._exclusive_replica(replica_id):
            with self._lock:
                self._replica_held.discard(replica_id)
            return False
        return True

    def release_replica(self, replica_id: int) -> None:
        with self._lock:
            self._replica_release_at.pop(replica_id, None)
            if replica_id not in self._replica_held:
                return
            self._replica_held.discard(replica_id)
        self._unexclusive_replica(replica_id)

    def release_replica_after(self, replica_id: int, seconds: float) -> None:
        """Keep a removed replica held a while (no process routes to it), then let it go (the flusher)."""
        with self._lock:
            self._replica_release_at[replica_id] = time.monotonic() + seconds

    def _release_due_replicas(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [r for r, at in self._replica_release_at.items() if at <= now]
        for replica_id in due:
            self.release_replica(replica_id)

    # -- stoppers ------------------------------------------------------------------------------
    def try_hold(self, model_id: int) -> bool:
        """Claim a model for stopping; False while any request for it is in flight anywhere.

        Also False while its last use here is not yet in the database: the stopper's verdict
        would rest on an old clock.
        """
        with self._lock:
            if self._in_flight.get(model_id) or model_id in self._held or model_id in self._dirty:
                return False
            self._held.add(model_id)
        if not self._exclusive(model_id):
            with self._lock:
                self._held.discard(model_id)
            return False
        return True

    def release(self, model_id: int) -> None:
        with self._lock:
            if model_id not in self._held:
                return
            self._held.discard(model_id)
        self._unexclusive(model_id)

    def last_used(self, model_id: int) -> datetime | None:
        with self._lock:
            return self._last_used.get(model_id)

    # -- cross-process hooks (no-ops in one process) -----------------------------------------------
    def _share(self, model_id: int) -> bool:
        return True

    def _exclusive(self, model_id: int) -> bool:
        return True

    def _unexclusive(self, model_id: int) -> None:
        return None

    def _share_replica(self, replica_id: int) -> bool:
        return True

    def _exclusive_replica(self, replica_id: int) -> bool:
        return True

    def _unexclusive_replica(self, replica_id: int) -> None:
        return None

    def _release_lingering(self) -> None:
        return None

    # -- persisting last use ------------------------------------------------------------------------
    def started(self) -> bool:
        """Whether this process's flusher is running (start has nothing left to do)."""
        return self._flusher is not None and self._pid == os.getpid() and self._flusher.is_alive()

    def start(self, engine: Engine) -> None:
        """Bind to the database and start the per-process flusher (once, after fork, on first use)."""
        if self.started():
            return
        with self._lock:
            if self._flusher is not None and self._flusher.is_alive() and self._pid == os.getpid():
                return
            if self._pid != os.getpid():
                self._forked()
            self._engine = engine
            self._flusher = threading.Thread(target=self._flush_forever, name="activity-flusher", daemon=True)
            self._flusher.start()

    def _forked(self) -> None:
        """A child process inherits no requests, holds and connections of its parent."""
        self._pid = os.getpid()
        self._in_flight.clear()
        self._held.clear()
        self._dirty.clear()
        self._replica_in_flight.clear()
        self._replica_held.clear()
        self._replica_release_at.clear()
        self._meter = load.LoadMeter(time.monotonic())

    def close(self) -> None:
        """Stop the flusher after a last flush (app teardown, process exit)."""
        self._closed.set()
        if self._flusher is not None and self._flusher.is_alive():
            self._flusher.join(timeout=5)
        if self._engine is not None:
            self.flush()

    def _flush_forever(self) -> None:
        while not self._closed.wait(FLUSH_INTERVAL):
            try:
                self.flush()
                self._release_lingering()
                self._release_due_replicas()
            except Exception:
                logger.exception("could not persist model activity; will retry")
            try:
                self.report_load()
            except Exception:
                logger.exception("could not report the load; will retry")

    def report_load(self) -> None:
        """Write this process's requests in flight per model, averaged since the last report."""
        with self._lock:
            clock = time.monotonic()
            averages = self._meter.averages(self._in_flight, clock)
            busy = {m: self._meter.busy_until(m) for m in averages}
        if averages and self._engine is not None:
            now = utcnow()
            busy_at = {m: now - timedelta(seconds=clock - t) for m, t in busy.items() if t is not None}
            with self._engine.begin() as conn:
                load.report(conn, averages, now, busy_at=busy_at)

    def flush(self) -> None:
        """Write pending last-use times (never moving a clock backwards) and minute counters."""
        with self._lock:
            pending = {m: self._last_used[m] for m in self._dirty}
            minutes, self._minutes = self._minutes, {}
            self._dirty.clear()
        if (not pending and not minutes) or self._engine is None:
            with self._lock:
                self._merge(minutes)
            return
        # one short transaction per row: never holding one row lock while waiting for another
        written_uses: set[int] = set()
        written_minutes: set[tuple[int, datetime]] = set()
        try:
            for model_id, stamp in sorted(pending.items()):
                with self._engine.begin() as conn:
                    conn.execute(
                        update(ServedModel)
                        .where(ServedModel.id == model_id)
                        .where((ServedModel.last_used_at.is_(None)) | (ServedModel.last_used_at < stamp))
                        .values(last_used_at=stamp)
                    )
                written_uses.add(model_id)
            for key, (requests, errors, colds, total, longest) in sorted(minutes.items()):
                with self._engine.begin() as conn:
                    conn.execute(_upsert_minute(conn.dialect.name, *key, requests, errors, colds, total, longest))
                written_minutes.add(key)
        except Exception:
            with self._lock:  # what was not written goes back for the next flush
                self._dirty.update(set(pending) - written_uses)
                self._merge({k: v for k, v in minutes.items() if k not in written_minutes})
            raise

    def _merge(self, minutes: dict[tuple[int, datetime], list[int]]) -> None:
        for key, (requests, errors, colds, total, longest) in minutes.items():
            counters = self._minutes.setdefault(key, [0, 0, 0, 0, 0])
            counters[0] += requests
            counters[1] += errors
            counters[2] += colds
            counters[3] += total
            counters[4] = max(counters[4], longest)


def _upsert_minute(dialect: str, model_id: int, minute: datetime, requests, errors, colds, total, longest):
    table = InferenceMinute.__table__
    statement = insert_for(table, dialect).values(
        model_id=model_id,
        minute=minute,
        requests=requests,
        errors=errors,
        cold_starts=colds,
        total_ms=total,
        max_ms=longest,
    )
    return statement.on_conflict_do_update(
        index_elements=[table.c.model_id, table.c.minute],
        set_={
            "requests": table.c.requests + statement.excluded.requests,
            "errors": table.c.errors + statement.excluded.errors,
            "cold_starts": table.c.cold_starts + statement.excluded.cold_starts,
            "total_ms": table.c.total_ms + statement.excluded.total_ms,
            "max_ms": greatest(dialect)(table.c.max_ms, statement.excluded.max_ms),
        },
    )
