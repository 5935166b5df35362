"""Making room under the caps: fair share across owners decides which replica gives up its slot.

Every replica holds a slot (a model starting from nothing holds one). An extra replica gives
its slot up by being removed, which scales its model down; a model's last replica gives it up
by stopping the model.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from ...extensions import db
from ...models import ACTIVE, EventKind, Replica, ReplicaStatus, ServedModel, Status
from ..context import context
from . import stopping, transitions
from .decisions import Admission, Slot

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Victim:
    """A claimed slot to free outside the lock: a whole model, or one replica of it (replica_id)."""

    model_id: int
    replica_id: int | None = None
    instance_id: str | None = None


def slots(excluding: int | None = None) -> list[Slot]:
    """Every replica holding a slot (but those of `excluding`); read under the lifecycle lock."""
    models = db.session.execute(
        select(
            ServedModel.id,
            ServedModel.user_id,
            ServedModel.status,
            ServedModel.keep_warm,
            ServedModel.pinned_by_admin,
            ServedModel.last_used_at,
            ServedModel.min_replicas,
        ).where(ServedModel.status.in_([s.value for s in ACTIVE]), ServedModel.id != (excluding or -1))
    ).all()
    replicas: dict[int, list[tuple[int, str]]] = defaultdict(list)
    if models:
        for row in db.session.execute(
            select(Replica.model_id, Replica.replica, Replica.status).where(
                Replica.model_id.in_([m.id for m in models])
            )
        ):
            replicas[row.model_id].append((row.replica, row.status))
    found = []
    for m in models:
        running = m.status == Status.RUNNING.value
        # the last one first: the lowest-numbered ready replica keeps the model up
        held = sorted(replicas[m.id], key=lambda r: (r[1] != ReplicaStatus.READY.value, r[0])) or [(0, "")]
        for position, (number, status) in enumerate(held):
            extra = position > 0
            found.append(
                Slot(
                    m.id,
                    m.user_id,
                    running and (not extra or status == ReplicaStatus.READY.value),
                    (m.keep_warm and not extra) or position < m.min_replicas,
                    m.pinned_by_admin and not extra,
                    m.last_used_at,
                    replica=number,
                    extra=extra,
                )
            )
    return found


def claim_victim(admission: Admission, for_model: int, now: datetime, extras_only: bool = False) -> Victim | None:
    """Under the lifecycle lock: hold and claim the first candidate with nothing in flight.

    `extras_only`: only another model's extra replica may go (a scale-up never stops a model).
    """
    ctx = context()
    why = "the owner's limit" if admission.reason == "owner_limit" else "fair share under the cap"
    for candidate in admission.candidates:
        if candidate.extra:
            if candidate.model_id == for_model:
                continue
            victim = _claim_replica(candidate, for_model, why, now)
            if victim is not None:
                return victim
            continue
        if extras_only or not ctx.activity.try_hold(candidate.model_id):
            continue
        victim = transitions.locked(candidate.model_id)
        transitions.claim(victim, Status.STOPPING, ctx.owner, ctx.settings.stop_timeout_seconds, now)
        transitions.record(victim.id, EventKind.EVICTED, detail=f"made room for model {for_model} ({why})")
        logger.info("evicting model %s to make room for model %s (%s)", victim.id, for_model, why)
        return Victim(victim.id)
    return None


def _claim_replica(candidate: Slot, for_model: int, why: str, now: datetime) -> Victim | None:
    """Scale a model down by one ready replica, if nothing is in flight on it."""
    activity = context().activity
    model = transitions.locked(candidate.model_id)
    row = transitions.replica_of(model, candidate.replica)
    ready = transitions.ready_replicas(model)
    if model.state is not Status.RUNNING or row is None or row not in ready or len(ready) < 2:
        return None
    if not activity.try_hold_replica(row.id):
        return None
    victim = Victim(model.id, row.id, row.instance_id)
    transitions.drop_replica(model, row)
    transitions.set_scaling(model, len(transitions.kept(model)), model.scale_note)
    detail = f"replica {candidate.replica} made room for model {for_model} ({why})"
    transitions.record(model.id, EventKind.SCALED_DOWN, detail=detail)
    logger.info("model %s: %s", model.id, detail)
    return victim


def finish(victim: Victim) -> None:
    """Remove a claimed victim's instances (or its one replica) and let requests for it in again."""
    ctx = context()
    if victim.replica_id is not None:
        try:
            if victim.instance_id:
                ctx.runtime.remove(victim.instance_id)
        finally:
            ctx.activity.release_replica(victim.replica_id)
        return
    try:
        stopping.finish(victim.model_id, EventKind.EVICTED)
    finally:
        ctx.activity.release(victim.model_id)
