"""Taking a model down: on request, when idle, or to make room; always removing its instances.

A stop is claimed under the lifecycle lock (STOPPING, with a lease), the runtime removes the
instances outside the lock, and the model is then marked STOPPED. Idle and eviction stops
first hold the model in the activity ledger, so no request is in flight while it goes.
"""

from __future__ import annotations

import logging
from datetime import datetime

from ...coordination import lifecycle_transaction
from ...extensions import db
from ...models import EventKind, ServedModel, Status, utcnow
from ..context import context
from . import transitions
from .decisions import should_stop

logger = logging.getLogger(__name__)


def stop(model_id: int, kind: str = EventKind.STOPPED, detail: str | None = None) -> ServedModel:
    """Stop and remove the model's instances; stopping a stopped model is not an error."""
    ctx = context()
    with lifecycle_transaction():
        model = transitions.locked(model_id, include_deleted=True)
        now = utcnow()
        if model.state is Status.FAILED:
            transitions.move(model, Status.STOPPED, now)
        needs_stop = model.state is not Status.STOPPED
        if needs_stop:
            transitions.claim(model, Status.STOPPING, ctx.owner, ctx.settings.stop_timeout_seconds, now)
    ctx.running_models.forget(model_id)
    if not needs_stop:
        ctx.runtime.remove_model(model_id)  # a stray instance left by a crash
        return db.session.get(ServedModel, model_id)
    return finish(model_id, kind, detail=detail)


def finish(model_id: int, kind: str, detail: str | None = None) -> ServedModel:
    """Remove the instances of a model we moved to STOPPING, then mark it stopped."""
    ctx = context()
    ctx.running_models.forget(model_id)
    ctx.runtime.remove_model(model_id)
    with lifecycle_transaction():
        model = transitions.locked(model_id, include_deleted=True)
        if model.state is Status.STOPPING:
            transitions.move(model, Status.STOPPED)
            if kind != EventKind.EVICTED:  # an eviction was recorded when it was decided
                transitions.record(model_id, kind, detail=detail)
    logger.info("model %s stopped (%s)", model_id, kind)
    return model


def stop_if_idle(model_id: int, default_timeout: int, now: datetime) -> bool:
    """Stop the model if it is still idle once held; False if it was used meanwhile."""
    ctx = context()
    if not ctx.activity.try_hold(model_id):
        return False  # a request is in flight: it is not idle any more
    try:
        with lifecycle_transaction():
            model = transitions.locked(model_id, include_deleted=True)
            idle = should_stop(
                model.last_used_at,
                model.started_at,
                now,
                model.effective_idle_timeout(default_timeout),
                0,
                model.state,
                model.keep_warm or model.min_replicas > 0,
            )
            if idle:
                transitions.claim(model, Status.STOPPING, ctx.owner, ctx.settings.stop_timeout_seconds, now)
                logger.info("model %s idle since %s: stopping it", model_id, model.last_used_at)
        if idle:
            finish(model_id, EventKind.IDLE_STOPPED, detail="idle timeout")
        return idle
    finally:
        ctx.activity.release(model_id)
