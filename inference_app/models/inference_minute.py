"""Per-model inference counts and latency, one row a minute: the dashboard's chart and rates."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, PrimaryKeyConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime


class InferenceMinute(db.Model):
    __tablename__ = "inference_minutes"
    __table_args__ = (PrimaryKeyConstraint("model_id", "minute", name="pk_inference_minutes"),)

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    minute: Mapped[datetime] = mapped_column(UTCDateTime())
    requests: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    cold_starts: Mapped[int] = mapped_column(Integer, default=0)
    total_ms: Mapped[int] = mapped_column(Integer, default=0)
    max_ms: Mapped[int] = mapped_column(Integer, default=0)
