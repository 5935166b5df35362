"""Idle shutdown: stop the models nobody has used for longer than their idle timeout."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from ..errors import ServiceError
from ..extensions import db
from ..models import ServedModel, Status, utcnow
from ..services import lifecycle
from ..services.context import context
from ..services.lifecycle.decisions import should_stop

logger = logging.getLogger(__name__)


def reap_idle(now: datetime | None = None) -> list[int]:
    """Stop every model past its idle deadline; returns the ids stopped."""
    ctx = context()
    now = now or utcnow()
    default = ctx.settings.idle_timeout_seconds
    running = db.session.scalars(
        select(ServedModel).where(
            ServedModel.status == Status.RUNNING.value,
            ServedModel.keep_warm.is_(False),
            ServedModel.min_replicas == 0,  # min_replicas >= 1 keeps it up, like keep_warm
        )
    ).all()
    db.session.commit()
    stopped = []
    for model in running:
        used = max(filter(None, (model.last_used_at, ctx.activity.last_used(model.id))), default=None)
        facts = (used, model.started_at, now, model.effective_idle_timeout(default))
        if not should_stop(*facts, ctx.activity.in_flight(model.id), model.state, model.keep_warm):
            continue
        try:
            if lifecycle.stop_if_idle(model.id, default, now):
                stopped.append(model.id)
        except ServiceError as exc:
            logger.warning("idle stop of model %s failed: %s", model.id, exc.message)
    return stopped
