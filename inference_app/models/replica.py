"""The replicas of a running model: one row per runtime instance, written only by the lifecycle."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .served_model import utcnow
from .types import UTCDateTime


class ReplicaStatus(str, enum.Enum):
    STARTING = "starting"  # claimed, its instance not answering yet: no traffic
    READY = "ready"  # answers: takes traffic
    DRAINING = "draining"  # on its way out: no new traffic, removed once nothing is in flight

    def __str__(self) -> str:
        return self.value


class Replica(db.Model):
    __tablename__ = "replicas"
    __table_args__ = (UniqueConstraint("model_id", "replica", name="uq_replicas_model_replica"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    replica: Mapped[int] = mapped_column(Integer)  # the runtime names the instance by it
    status: Mapped[str] = mapped_column(String(16), default=ReplicaStatus.STARTING.value)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    instance_id: Mapped[str | None] = mapped_column(String(80))
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(80))  # who starts it, while it starts
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def state(self) -> ReplicaStatus:
        return ReplicaStatus(self.status)

    def __repr__(self) -> str:
        return f"<Replica {self.model_id}/{self.replica} {self.status}>"
