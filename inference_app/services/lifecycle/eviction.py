"""Making room under the cap: the least recently used idle model gives up its slot."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from ...extensions import db
from ...models import EventKind, ServedModel, Status
from ..context import context
from . import stopping, transitions

logger = logging.getLogger(__name__)

CANDIDATES = 20


def claim_victim(for_model: int, now: datetime) -> ServedModel | None:
    """Under the lifecycle lock: hold and claim the least recently used running model with nothing in flight."""
    ctx = context()
    candidates = db.session.scalars(
        select(ServedModel)
        .where(
            ServedModel.status == Status.RUNNING.value, ServedModel.keep_warm.is_(False), ServedModel.id != for_model
        )
        .order_by(ServedModel.last_used_at.asc().nulls_first(), ServedModel.id)
        .limit(CANDIDATES)
    ).all()  # no row locks needed: every status change happens under the lifecycle lock
    for victim in candidates:
        if ctx.activity.try_hold(victim.id):
            transitions.claim(victim, Status.STOPPING, ctx.owner, ctx.settings.stop_timeout_seconds, now)
            transitions.record(victim.id, EventKind.EVICTED, detail=f"made room for model {for_model}")
            logger.info("evicting model %s to make room for model %s", victim.id, for_model)
            return victim
    return None


def finish(victim_id: int) -> None:
    """Remove a claimed victim's instances, mark it stopped and let requests for it in again."""
    try:
        stopping.finish(victim_id, EventKind.EVICTED)
    finally:
        context().activity.release(victim_id)
