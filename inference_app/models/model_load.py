"""Requests in flight per model, as each web process last reported them: the autoscaler's input."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, PrimaryKeyConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime


class ModelLoad(db.Model):
    __tablename__ = "model_load"
    __table_args__ = (PrimaryKeyConstraint("model_id", "process", name="pk_model_load"),)

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    process: Mapped[str] = mapped_column(String(128))  # host:pid
    in_flight: Mapped[float] = mapped_column(Float, default=0.0)  # average over the process's last flush interval
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime())
