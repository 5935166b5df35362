"""A registered model and the live state of its container."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, String, Text, UniqueConstraint, false, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .status import Status
from .types import UTCDateTime

if TYPE_CHECKING:
    from .replica import Replica


def utcnow() -> datetime:
    return datetime.now(UTC)


_LIVE = text("deleted_at IS NULL")


class ServedModel(db.Model):
    __tablename__ = "models"
    __table_args__ = (
        UniqueConstraint("user_id", "model_name", "version", name="uq_models_identity"),
        Index("ix_models_status", "status"),
        Index("ix_models_user_id", "user_id", "id"),
        Index("ix_models_model_name", "model_name", "id"),
        # the models not deleted, for an index-only count of every list (migration 0005)
        Index("ix_models_live", "id", postgresql_where=_LIVE, sqlite_where=_LIVE),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64), default="1")
    image: Mapped[str] = mapped_column(String(512))
    port: Mapped[int] = mapped_column(Integer, default=8080)
    health_path: Mapped[str] = mapped_column(String(512), default="/health")
    predict_path: Mapped[str] = mapped_column(String(512), default="/predict")
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    memory_bytes: Mapped[int | None] = mapped_column(Integer().with_variant(db.BigInteger(), "postgresql"))
    cpus: Mapped[float | None] = mapped_column(Float)
    idle_timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    min_replicas: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    max_replicas: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    target_concurrency: Mapped[int] = mapped_column(Integer, default=4, server_default=text("4"))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    status: Mapped[str] = mapped_column(String(16), default=Status.STOPPED.value)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    container_id: Mapped[str | None] = mapped_column(String(80))
    container_host: Mapped[str | None] = mapped_column(String(255))
    host_port: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    keep_warm: Mapped[bool] = mapped_column(Boolean, default=False)
    pinned_by_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    lease_owner: Mapped[str | None] = mapped_column(String(80))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    desired_replicas: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    scale_note: Mapped[str | None] = mapped_column(Text)  # why it holds fewer replicas than its load asks for
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    event_occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # newest event applied

    # Its instances while it runs (services.lifecycle.transitions keeps them); dropped when it stops.
    replicas: Mapped[list[Replica]] = relationship(
        order_by="Replica.replica", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def state(self) -> Status:
        return Status(self.status)

    def effective_idle_timeout(self, default: int) -> int:
        return self.idle_timeout_seconds or default

    def idle_deadline(self, default_timeout: int) -> datetime | None:
        """When idle shutdown will stop this model if nothing uses it before then."""
        if self.state is not Status.RUNNING or self.keep_warm or self.min_replicas > 0:
            return None
        since = self.last_used_at or self.started_at
        return since + timedelta(seconds=self.effective_idle_timeout(default_timeout)) if since else None

    def __repr__(self) -> str:
        return f"<ServedModel {self.id} {self.user_id}/{self.model_name}:{self.version} {self.status}>"
