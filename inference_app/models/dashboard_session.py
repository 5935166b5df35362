"""Dashboard sign-ins: the server's record of each session, so signing out really ends it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .served_model import utcnow
from .types import UTCDateTime


class DashboardSession(db.Model):
    """One signed-in browser: the cookie holds a random id, this row its hash, the token's hash and an end."""

    __tablename__ = "dashboard_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
