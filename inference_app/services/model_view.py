"""What an inference needs to know about a model, as a plain snapshot, and a short-lived cache of it.

A warm inference then touches no database at all: the snapshot of a running model is kept
for CACHE_SECONDS per process (and REFRESH_GRACE more while one request re-reads it). Staleness is safe: a stop in this process forgets the entry,
and a stop elsewhere shows up as a refused connection, which the inference path answers by
re-reading the model and starting it again (services.inference). The snapshot of a model
that may have several replicas also lists its ready ones (services.balancing picks one);
a replica drained meanwhile refuses new requests through the activity ledger.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import select

from ..extensions import db
from ..models import Replica, ReplicaStatus, ServedModel, Status
from ..runtime import Endpoint

CACHE_SECONDS = 1.0
REFRESH_GRACE = 0.5  # an expired snapshot still serves this long while one caller re-reads it


@dataclass(frozen=True)
class Route:
    """One ready replica a request may go to; replica_id None: the model's one endpoint, unaccounted."""

    replica_id: int | None
    replica: int
    endpoint: Endpoint


@dataclass(frozen=True)
class ModelView:
    id: int
    user_id: str
    model_name: str
    version: str
    status: str
    predict_path: str
    host_port: int | None
    container_host: str | None
    container_id: str | None
    routes: tuple[Route, ...] = ()  # the ready replicas, for a model that may have several

    @property
    def state(self) -> Status:
        return Status(self.status)

    @classmethod
    def of(cls, model: ServedModel) -> ModelView:
        routes = ()
        if model.state is Status.RUNNING and (model.max_replicas or 1) > 1:
            routes = ready_routes(model.id)
        return cls(
            id=model.id,
            user_id=model.user_id,
            model_name=model.model_name,
            version=model.version,
            status=model.status,
            predict_path=model.predict_path,
            host_port=model.host_port,
            container_host=model.container_host,
            container_id=model.container_id,
            routes=routes,
        )


def ready_routes(model_id: int) -> tuple[Route, ...]:
    """The ready replicas of a model, lowest number first."""
    rows = db.session.execute(
        select(Replica.id, Replica.replica, Replica.host, Replica.port, Replica.instance_id)
        .where(Replica.model_id == model_id, Replica.status == ReplicaStatus.READY.value)
        .order_by(Replica.replica)
    )
    return tuple(Route(r.id, r.replica, Endpoint(r.host, r.port, r.instance_id)) for r in rows if r.host and r.port)


class RunningModels:
    """Snapshots of running models by (model id, version asked for, caller scope).

    When a snapshot expires, the first caller to notice re-reads it; the others go on with the
    old one for up to REFRESH_GRACE meanwhile, rather than all reading the database at once.
    """

    def __init__(self, ttl: float = CACHE_SECONDS):
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[tuple, tuple[float, ModelView]] = {}
        self._refreshing: set[tuple] = set()

    def get(self, key: tuple) -> ModelView | None:
        """The snapshot, or None: then the caller reads the model and puts it (or calls abandon)."""
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            age = now - hit[0]
            if age <= self.ttl or (key in self._refreshing and age <= self.ttl + REFRESH_GRACE):
                return hit[1]
            self._refreshing.add(key)
            return None

    def put(self, key: tuple, view: ModelView) -> None:
        with self._lock:
            self._refreshing.discard(key)
            if view.state is not Status.RUNNING:
                self._entries.pop(key, None)
                return
            if len(self._entries) > 50_000:
                self._entries.clear()
                self._refreshing.clear()
            self._entries[key] = (time.monotonic(), view)

    def abandon(self, key: tuple) -> None:
        """The caller could not re-read it: drop the snapshot (the next caller reads the model)."""
        with self._lock:
            self._refreshing.discard(key)
            self._entries.pop(key, None)

    def forget(self, model_id: int) -> None:
        """Drop every entry that resolves to, or was asked as, this model."""
        with self._lock:
            for key in [k for k, (_, v) in self._entries.items() if v.id == model_id or k[0] == model_id]:
                del self._entries[key]
                self._refreshing.discard(key)
