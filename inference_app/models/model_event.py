"""What happened to a model's container: starts, stops and their reasons, evictions, failures."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .served_model import utcnow
from .types import UTCDateTime


class EventKind:
    STARTED = "started"
    STOPPED = "stopped"
    FAILED = "failed"
    EVICTED = "evicted"
    IDLE_STOPPED = "idle_stopped"
    VANISHED = "vanished"
    ADOPTED = "adopted"
    REMOVED_ORPHAN = "removed_orphan"
    SCALED_UP = "scaled_up"  # a replica was added for the load
    SCALED_DOWN = "scaled_down"  # a replica was drained and removed (low load, or to make room)
    SCALE_HELD = "scale_held"  # the load asked for more replicas than the caps allow
    REPLICA_FAILED = "replica_failed"  # an extra replica could not start; the model keeps running


class ModelEvent(db.Model):
    __tablename__ = "model_events"
    __table_args__ = (
        Index("ix_model_events_model_at", "model_id", "at"),
        Index("ix_model_events_kind_at", "kind", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
