"""Idle shutdown: stop containers nobody has used for longer than their idle timeout."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select

from ..errors import ServiceError
from ..extensions import db
from ..models import EventKind, ServedModel, Status, utcnow
from ..services import lifecycle
from ..services.activity import FLUSH_INTERVAL
from ..services.claims import claim_transaction, locked_model
from ..services.context import context

logger = logging.getLogger(__name__)

GRACE = timedelta(seconds=FLUSH_INTERVAL)  # last use reaches the database within this interval


def should_stop(
    last_used_at: datetime | None,
    started_at: datetime | None,
    now: datetime,
    idle_limit: int,
    in_flight: int,
    state: Status,
    keep_warm: bool,
) -> bool:
    """The idle verdict, from facts alone: running, not kept warm, nothing in flight, past its deadline."""
    if state is not Status.RUNNING or keep_warm or in_flight > 0:
        return False
    since = last_used_at or started_at
    if since is None:
        return True
    return now >= since + timedelta(seconds=idle_limit) + GRACE


def reap_idle(now: datetime | None = None) -> list[int]:
    """Stop every model past its idle deadline; returns the ids stopped."""
    ctx = context()
    now = now or utcnow()
    default = ctx.settings.idle_timeout_seconds
    running = db.session.scalars(
        select(ServedModel).where(ServedModel.status == Status.RUNNING.value, ServedModel.keep_warm.is_(False))
    ).all()
    db.session.commit()
    stopped = []
    for model in running:
        used = max(filter(None, (model.last_used_at, ctx.activity.last_used(model.id))), default=None)
        facts = (used, model.started_at, now, model.effective_idle_timeout(default))
        if not should_stop(*facts, ctx.activity.in_flight(model.id), model.state, model.keep_warm):
            continue
        if not ctx.activity.try_hold(model.id):
            continue  # a request arrived: it is not idle any more
        try:
            if _claim_idle(model.id, default, now):
                lifecycle._finish_stop(model.id, EventKind.IDLE_STOPPED, detail="idle timeout", release=False)
                stopped.append(model.id)
        except ServiceError as exc:
            logger.warning("idle stop of model %s failed: %s", model.id, exc.message)
        finally:
            ctx.activity.release(model.id)
    return stopped


def _claim_idle(model_id: int, default_timeout: int, now: datetime) -> bool:
    """Re-check under the lock and move to STOPPING; False if it was used meanwhile."""
    ctx = context()
    with claim_transaction():
        model = locked_model(model_id, include_deleted=True)
        if not should_stop(
            model.last_used_at,
            model.started_at,
            now,
            model.effective_idle_timeout(default_timeout),
            0,
            model.state,
            model.keep_warm,
        ):
            return False
        model.move_to(Status.STOPPING, now)
        model.lease_owner = ctx.owner
        model.lease_expires_at = now + timedelta(seconds=ctx.settings.stop_timeout_seconds) + lifecycle.LEASE_GRACE
        logger.info("model %s idle since %s: stopping it", model_id, model.last_used_at)
        return True
