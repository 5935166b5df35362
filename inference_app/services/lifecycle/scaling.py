"""Scaling a running model between its min_replicas and max_replicas, one replica at a time.

The autoscaler (jobs.scale) judges the load (decisions.scale_verdict); these operations carry
a verdict out under the lifecycle lock: grow claims new replicas within the caps (making room
only by taking another model's extra replica, never anyone's last one), start_replica starts
one outside the lock, take_out removes one (or, with a request in flight on it, drains it),
and finish_drains removes drained replicas once nothing is in flight on them in any process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ...coordination import lifecycle_transaction
from ...errors import ServiceError
from ...extensions import db
from ...models import EventKind, Replica, ReplicaStatus, ServedModel, Status, utcnow
from ...runtime import Instance
from ..activity import FLUSH_INTERVAL
from ..context import context
from ..model_view import CACHE_SECONDS, REFRESH_GRACE
from . import eviction, transitions
from .decisions import admit, owner_limit
from .starting import check_allowed, instance_spec

logger = logging.getLogger(__name__)

# A drained replica stays this long at least: every process's snapshot has seen it leave traffic.
DRAIN_GRACE = timedelta(seconds=CACHE_SECONDS + REFRESH_GRACE + FLUSH_INTERVAL)


@dataclass(frozen=True)
class ReplicaClaim:
    """A replica claimed for starting: its row, and the number the runtime names it by."""

    model_id: int
    replica_id: int
    replica: int


@dataclass
class Growth:
    claims: list[ReplicaClaim] = field(default_factory=list)
    revived: int = 0
    held: str | None = None  # why fewer replicas were added than asked for


def grow(model_id: int, add: int, desired: int, reason: str) -> Growth:
    """Add up to `add` replicas to a running model: revive draining ones, then claim new ones."""
    ctx = context()
    settings = ctx.settings
    growth = Growth()
    victims = []
    with lifecycle_transaction():
        model = transitions.locked(model_id, include_deleted=False)
        if model.state is not Status.RUNNING:
            return growth
        now = utcnow()
        draining = sorted((r for r in model.replicas if r.state is ReplicaStatus.DRAINING), key=lambda r: -r.replica)
        for row in draining[:add]:
            transitions.revive(model, row, now)
            growth.revived += 1
        cap = settings.max_running_containers
        per_owner = owner_limit(cap, settings.max_running_per_owner)
        claimed = []
        for _ in range(add - growth.revived):
            admission = admit(model.user_id, eviction.slots(), cap, per_owner)
            if not admission.free:
                victim = eviction.claim_victim(admission, model_id, now, extras_only=True)
                if victim is None:
                    growth.held = _held(admission.reason, model, desired, cap, per_owner)
                    break
                victims.append(victim)
            claimed.append(transitions.claim_replica(model, ctx.owner, settings.start_timeout_seconds, now))
        if growth.held and model.scale_note is None:  # once per episode, not on every look
            transitions.record(model_id, EventKind.SCALE_HELD, detail=growth.held)
            logger.info("model %s: %s", model_id, growth.held)
        transitions.set_scaling(model, desired, growth.held)
        if growth.revived:
            transitions.record(model_id, EventKind.SCALED_UP, detail=f"{growth.revived} draining revived: {reason}")
        db.session.flush()
        growth.claims = [ReplicaClaim(model_id, row.id, row.replica) for row in claimed]
    for victim in victims:
        eviction.finish(victim)
    if growth.claims:
        logger.info("model %s: adding %s replica(s): %s", model_id, len(growth.claims), reason)
    return growth


def _held(reason: str, model: ServedModel, desired: int, cap: int, per_owner: int) -> str:
    holds = len(transitions.kept(model))
    if reason == "owner_limit":
        why = f"owner {model.user_id!r} holds all {per_owner} of their container slots (MAX_RUNNING_PER_OWNER)"
    else:
        why = (
            f"all {cap} container slots are taken (MAX_RUNNING_CONTAINERS) and no other model has an idle extra replica"
        )
    return f"at the cap: the load asks for {desired} replicas; it stays at {holds} because {why}"


def start_replica(claim: ReplicaClaim) -> bool:
    """Start a claimed replica and put it into traffic once it answers; False if it did not."""
    ctx = context()
    runtime = ctx.runtime
    model = db.session.get(ServedModel, claim.model_id, populate_existing=True)
    spec = instance_spec(model, replica=claim.replica)
    health_path = model.health_path
    db.session.commit()  # no database locks held while the runtime works
    began = time.monotonic()
    instance = None
    try:
        check_allowed(spec)
        instance = runtime.start(spec)
        endpoint = runtime.wait_ready(instance, health_path, began + ctx.settings.start_timeout_seconds)
    except ServiceError as exc:
        _abandon(claim, exc.message, instance)
        return False
    except Exception as exc:
        logger.exception("starting replica %s of model %s failed unexpectedly", claim.replica, claim.model_id)
        _abandon(claim, f"start failed: {exc.__class__.__name__}", instance)
        return False
    duration = time.monotonic() - began
    with lifecycle_transaction():
        model = transitions.locked(claim.model_id)
        row = _claimed_row(model, claim)
        if row is not None:
            transitions.replica_ready(model, row, endpoint, utcnow())
            detail = f"replica {claim.replica} ready"
            transitions.record(claim.model_id, EventKind.SCALED_UP, detail=detail, duration_ms=int(duration * 1000))
    if row is None:
        runtime.remove(endpoint.instance_id, timeout=0)  # the model stopped, or the claim was taken back
        return False
    logger.info("model %s: replica %s ready on %s:%s", claim.model_id, claim.replica, endpoint.host, endpoint.port)
    return True


def _claimed_row(model: ServedModel, claim: ReplicaClaim) -> Replica | None:
    """The claim's row, if the model still runs and the replica is still ours to start."""
    row = next((r for r in model.replicas if r.id == claim.replica_id), None)
    if model.state is not Status.RUNNING or row is None or row.state is not ReplicaStatus.STARTING:
        return None
    return row if row.lease_owner == context().owner else None


def _abandon(claim: ReplicaClaim, message: str, instance: Instance | None) -> None:
    """Remove what a failed replica start left and forget the replica; the model keeps running."""
    try:
        if instance is not None:  # else the runtime created nothing, or removed it itself
            context().runtime.remove(instance.instance_id, timeout=0)
    except ServiceError as exc:
        logger.warning("could not remove replica %s of model %s: %s", claim.replica, claim.model_id, exc.message)
    with lifecycle_transaction():
        model = transitions.locked(claim.model_id)
        row = _claimed_row(model, claim)
        if row is not None:
            transitions.drop_replica(model, row)
            transitions.set_scaling(model, len(transitions.kept(model)), model.scale_note)
            transitions.record(claim.model_id, EventKind.REPLICA_FAILED, detail=f"replica {claim.replica}: {message}")
    logger.warning("model %s: replica %s failed to start: %s", claim.model_id, claim.replica, message.splitlines()[0])


def take_out(model_id: int, reason: str) -> bool:
    """Take the highest-numbered ready replica out (never the last ready one).

    With nothing in flight on it in any process, it goes at once: its row now, its instance
    right after, and its hold a DRAIN_GRACE later, so a process still routing by an older
    snapshot picks another replica instead of reaching a removed one. With a request in flight,
    it drains instead (finish_drains removes it later). True if it went at once.
    """
    ctx = context()
    with lifecycle_transaction():
        model = transitions.locked(model_id)
        ready = transitions.ready_replicas(model)
        if model.state is not Status.RUNNING or len(ready) < 2:
            return False
        row = ready[-1]
        gone = (row.id, row.instance_id) if ctx.activity.try_hold_replica(row.id) else None
        if gone is not None:
            transitions.drop_replica(model, row)
        else:
            transitions.drain(model, row, utcnow())
        transitions.set_scaling(model, len(transitions.kept(model)), None)
        transitions.record(model_id, EventKind.SCALED_DOWN, detail=f"replica {row.replica}: {reason}")
        number = row.replica
    if gone is None:
        logger.info("model %s: draining replica %s (%s)", model_id, number, reason)
        return False
    replica_id, instance_id = gone
    try:
        if instance_id:
            ctx.runtime.remove(instance_id)
    finally:
        ctx.activity.release_replica_after(replica_id, DRAIN_GRACE.total_seconds())
    logger.info("model %s: replica %s removed (%s)", model_id, number, reason)
    return True


def finish_drains(model_id: int, now: datetime | None = None) -> int:
    """Remove the model's drained replicas that nothing is in flight on any more; returns how many."""
    ctx = context()
    now = now or utcnow()
    gone = []
    with lifecycle_transaction():
        model = transitions.locked(model_id)
        for row in [r for r in model.replicas if r.state is ReplicaStatus.DRAINING]:
            if now - row.status_changed_at < DRAIN_GRACE or not ctx.activity.try_hold_replica(row.id):
                continue
            gone.append((row.id, row.instance_id, row.replica))
            transitions.drop_replica(model, row)
    for replica_id, instance_id, number in gone:
        try:
            if instance_id:
                ctx.runtime.remove(instance_id)
        finally:
            ctx.activity.release_replica(replica_id)
        logger.info("model %s: replica %s removed", model_id, number)
    return len(gone)


def settle(model_id: int, desired: int, note: str | None) -> None:
    """Record what the autoscaler aims for now (and clear a note that no longer holds)."""
    with lifecycle_transaction():
        model = transitions.locked(model_id)
        if model.state is Status.RUNNING:
            transitions.set_scaling(model, desired, note)
