"""Making room under the caps: fair share across owners decides which model gives up its slot."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from ...extensions import db
from ...models import ACTIVE, EventKind, ServedModel, Status
from ..context import context
from . import stopping, transitions
from .decisions import Admission, Slot

logger = logging.getLogger(__name__)


def slots(excluding: int) -> list[Slot]:
    """Every model holding a slot, but one; read under the lifecycle lock, so they cannot change."""
    rows = db.session.execute(
        select(
            ServedModel.id,
            ServedModel.user_id,
            ServedModel.status,
            ServedModel.keep_warm,
            ServedModel.pinned_by_admin,
            ServedModel.last_used_at,
        ).where(ServedModel.status.in_([s.value for s in ACTIVE]), ServedModel.id != excluding)
    )
    return [
        Slot(
            row.id,
            row.user_id,
            row.status == Status.RUNNING.value,
            row.keep_warm,
            row.pinned_by_admin,
            row.last_used_at,
        )
        for row in rows
    ]


def claim_victim(admission: Admission, for_model: int, now: datetime) -> int | None:
    """Under the lifecycle lock: hold and claim the first candidate with nothing in flight."""
    ctx = context()
    for candidate in admission.candidates:
        if not ctx.activity.try_hold(candidate.model_id):
            continue
        victim = transitions.locked(candidate.model_id)
        transitions.claim(victim, Status.STOPPING, ctx.owner, ctx.settings.stop_timeout_seconds, now)
        why = "the owner's limit" if admission.reason == "owner_limit" else "fair share under the cap"
        transitions.record(victim.id, EventKind.EVICTED, detail=f"made room for model {for_model} ({why})")
        logger.info("evicting model %s to make room for model %s (%s)", victim.id, for_model, why)
        return victim.id
    return None


def finish(victim_id: int) -> None:
    """Remove a claimed victim's instances, mark it stopped and let requests for it in again."""
    try:
        stopping.finish(victim_id, EventKind.EVICTED)
    finally:
        context().activity.release(victim_id)
