"""The PostgreSQL form of the activity ledger: advisory locks make requests in flight visible to every process.

Each process takes a shared advisory lock per model (and per replica of a model with several)
while it has requests in flight there, kept for LINGER seconds after the last one, so a busy
model costs no round trip per request. A stopper (or a replica's drainer) must win the
exclusive lock: the database itself arbitrates between processes and service replicas.
"""

from __future__ import annotations

import threading
import time

from ..coordination import (
    ACTIVITY_NAMESPACE,
    REPLICA_NAMESPACE,
    TRY_EXCLUSIVE_PAIR,
    TRY_SHARED_PAIR,
    UNLOCK_EXCLUSIVE_PAIR,
    UNLOCK_SHARED_PAIR,
    dedicated_connection,
)
from .activity import Activity

LINGER = 1.0


class SharedActivity(Activity):
    """The PostgreSQL ledger: advisory locks make in-flight requests visible to every process.

    Lock keys are (namespace, id) pairs: (ACTIVITY_NAMESPACE, model id) and (REPLICA_NAMESPACE,
    replica row id).
    """

    def __init__(self) -> None:
        super().__init__()
        self._conn = None
        self._conn_lock = threading.Lock()
        self._shared: set[tuple[int, int]] = set()

    def _forked(self) -> None:
        super()._forked()
        self._conn = None
        self._shared.clear()

    def close(self) -> None:
        """Also end the lock session: every shared lock it still holds goes with it."""
        super().close()
        with self._conn_lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # already broken: nothing left to release
                    pass
            self._conn = None
            self._shared.clear()

    def _query(self, sql: str, key: tuple[int, int]) -> bool:
        with self._conn_lock:
            return self._query_locked(sql, key)

    def _query_locked(self, sql: str, key: tuple[int, int]) -> bool:
        """Run one lock function on the lock session; the caller holds _conn_lock."""
        try:
            if self._conn is None:
                self._conn = dedicated_connection(self._engine)
                self._shared.clear()
            with self._conn.cursor() as cursor:
                cursor.execute(sql, key)
                row = cursor.fetchone()
            return bool(row[0]) if row else True
        except Exception:
            # The session is gone, and with it every lock it held: start afresh.
            self._conn = None
            self._shared.clear()
            raise

    def _share(self, model_id: int) -> bool:
        return self._share_key((ACTIVITY_NAMESPACE, model_id))

    def _exclusive(self, model_id: int) -> bool:
        return self._exclusive_key((ACTIVITY_NAMESPACE, model_id))

    def _unexclusive(self, model_id: int) -> None:
        self._query(UNLOCK_EXCLUSIVE_PAIR, (ACTIVITY_NAMESPACE, model_id))

    def _share_replica(self, replica_id: int) -> bool:
        return self._share_key((REPLICA_NAMESPACE, replica_id))

    def _exclusive_replica(self, replica_id: int) -> bool:
        return self._exclusive_key((REPLICA_NAMESPACE, replica_id))

    def _unexclusive_replica(self, replica_id: int) -> None:
        self._query(UNLOCK_EXCLUSIVE_PAIR, (REPLICA_NAMESPACE, replica_id))

    def _share_key(self, key: tuple[int, int]) -> bool:
        if key in self._shared:
            return True
        # Checked and taken under one lock: PostgreSQL counts a session's advisory locks, so two
        # threads taking it at once would hold it twice, and the one unlock of _release_lingering
        # would leave it held for as long as the process lives (no stop, no drain ever again).
        with self._conn_lock:
            if key in self._shared:
                return True
            won = self._query_locked(TRY_SHARED_PAIR, key)
            if won:
                self._shared.add(key)
        return won

    def _exclusive_key(self, key: tuple[int, int]) -> bool:
        with self._conn_lock:
            held = key in self._shared
            self._shared.discard(key)
        if held:
            self._query(UNLOCK_SHARED_PAIR, key)
        return self._query(TRY_EXCLUSIVE_PAIR, key)

    def _idle_for(self, key: tuple[int, int], now: float) -> bool:
        """Nothing in flight under this key for LINGER seconds (and, for a model, its last use written)."""
        namespace, ident = key
        if namespace == REPLICA_NAMESPACE:
            return not self._replica_in_flight.get(ident) and now - self._replica_last_leave.get(ident, 0) >= LINGER
        return (
            not self._in_flight.get(ident)
            and now - self._last_leave.get(ident, 0) >= LINGER
            and (ident not in self._dirty)
        )

    def _release_lingering(self) -> None:
        """Give up shared locks with nothing in flight under them for LINGER seconds."""
        now = time.monotonic()
        with self._lock:
            idle = [k for k in list(self._shared) if self._idle_for(k, now)]
        for key in idle:
            with self._lock:
                if not self._idle_for(key, now):  # a request came in meanwhile
                    continue
                # released under the ledger lock so that a concurrent enter re-acquires it
                self._drop_shared_locked(key)

    def _drop_shared_locked(self, key: tuple[int, int]) -> None:
        with self._conn_lock:
            if key not in self._shared or self._conn is None:
                return
            self._shared.discard(key)
            try:
                with self._conn.cursor() as cursor:
                    cursor.execute(UNLOCK_SHARED_PAIR, key)
            except Exception:
                self._conn = None
                self._shared.clear()
                raise
