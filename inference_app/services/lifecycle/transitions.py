"""The state machine of a model's instances, and the only code that writes a state or a lease.

A model is stopped, starting, running, stopping or failed. Every change goes through move()
or claim() here, under the lifecycle lock (coordination.lifecycle_transaction), and each is
checked against TRANSITIONS. A claim marks who works on the model and until when: a crashed
worker's lease expires, and reconciliation or the next request takes over.

A running model has one or more replicas (one runtime instance each): starting, ready or
draining, checked against REPLICA_TRANSITIONS. The model is running while at least one is
ready, and its row carries the endpoint of its lowest-numbered ready replica. Stopping the
model drops them all.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from ...errors import ModelNotFound
from ...extensions import db
from ...models import ModelEvent, Replica, ReplicaStatus, ServedModel, Status, utcnow
from ...runtime import Endpoint

LEASE_GRACE = timedelta(seconds=15)  # on top of the start or stop timeout a lease covers

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.STOPPED: frozenset({Status.STARTING, Status.RUNNING}),  # RUNNING: adopted by reconciliation
    Status.FAILED: frozenset({Status.STARTING, Status.STOPPED, Status.RUNNING}),
    Status.STARTING: frozenset({Status.RUNNING, Status.FAILED, Status.STOPPING, Status.STOPPED, Status.STARTING}),
    Status.RUNNING: frozenset({Status.STOPPING, Status.STOPPED, Status.FAILED}),
    Status.STOPPING: frozenset({Status.STOPPED, Status.FAILED, Status.STOPPING}),
}

# A replica is removed (deleted) from any state; these are its other moves.
REPLICA_TRANSITIONS: dict[ReplicaStatus, frozenset[ReplicaStatus]] = {
    ReplicaStatus.STARTING: frozenset({ReplicaStatus.READY}),
    ReplicaStatus.READY: frozenset({ReplicaStatus.DRAINING}),
    ReplicaStatus.DRAINING: frozenset({ReplicaStatus.READY}),  # revived when the load comes back
}

# A model as the registry first stores it.
NEW_MODEL = {
    "status": Status.STOPPED.value,
    "keep_warm": False,
    "pinned_by_admin": False,
    "desired_replicas": 0,
    "scale_note": None,
}


class IllegalTransition(RuntimeError):
    """A change of state that is not an edge of the machine: a bug, never a user's error."""


def check(current: Status, target: Status) -> None:
    """Raise IllegalTransition unless current -> target is an edge of the machine."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current} -> {target} is not allowed")


def move(model: ServedModel, target: Status, now: datetime | None = None, error: str | None = None) -> None:
    """Apply one edge of the machine; the caller holds the lifecycle lock and the row lock."""
    check(model.state, target)
    model.status = target.value
    model.status_changed_at = now or utcnow()
    if target is not Status.RUNNING:
        model.host_port = None
    if target in (Status.STOPPED, Status.FAILED):
        model.container_id = None
        model.container_host = None
        model.started_at = None
        model.lease_owner = None
        model.lease_expires_at = None
        model.keep_warm = False
        model.pinned_by_admin = False
        model.replicas.clear()
        model.desired_replicas = 0
        model.scale_note = None
    if error is not None:
        model.last_error = error[:4000]


def claim(model: ServedModel, target: Status, owner: str, lease_seconds: float, now: datetime) -> None:
    """Move to STARTING or STOPPING and hold the model for `owner` for the work's time plus grace."""
    move(model, target, now)
    model.lease_owner = owner
    model.lease_expires_at = now + timedelta(seconds=lease_seconds) + LEASE_GRACE
    if target is Status.STARTING:
        model.last_error = None


def held_by(model: ServedModel, target: Status, owner: str) -> bool:
    """Whether `owner`'s claim for `target` still stands (nobody stopped or took it meanwhile)."""
    return model.state is target and model.lease_owner == owner


def lease_valid(model: ServedModel, now: datetime) -> bool:
    return model.lease_expires_at is not None and model.lease_expires_at > now


def busy(model: ServedModel, now: datetime) -> bool:
    """Someone is starting or stopping the model right now."""
    return model.state in (Status.STARTING, Status.STOPPING) and lease_valid(model, now)


def place(model: ServedModel, endpoint: Endpoint, now: datetime, fresh_start: bool = False, replica: int = 0) -> None:
    """Mark the model running with `replica` ready at `endpoint`, ending any claim; `fresh_start`
    starts its idle clock."""
    if model.state is not Status.RUNNING:
        move(model, Status.RUNNING, now)
        model.started_at = now
    if fresh_start:
        model.last_used_at = now
    model.lease_owner = None
    model.lease_expires_at = None
    row = replica_of(model, replica)
    if row is None:
        row = Replica(replica=replica, status=ReplicaStatus.READY.value, status_changed_at=now, started_at=now)
        model.replicas.append(row)
    elif row.state is not ReplicaStatus.READY:
        move_replica(row, ReplicaStatus.READY, now)
    _at(row, endpoint)
    sync_endpoint(model)
    model.desired_replicas = max(model.desired_replicas or 0, len(kept(model)))


# -- replicas --------------------------------------------------------------------------------------
def check_replica(current: ReplicaStatus, target: ReplicaStatus) -> None:
    if target not in REPLICA_TRANSITIONS[current]:
        raise IllegalTransition(f"replica {current} -> {target} is not allowed")


def move_replica(row: Replica, target: ReplicaStatus, now: datetime) -> None:
    """Apply one edge of a replica's machine; the caller holds the lifecycle lock."""
    check_replica(row.state, target)
    row.status = target.value
    row.status_changed_at = now
    if target is ReplicaStatus.READY:
        row.lease_owner = None
        row.lease_expires_at = None
        row.started_at = row.started_at or now


def replica_of(model: ServedModel, number: int) -> Replica | None:
    return next((r for r in model.replicas if r.replica == number), None)


def ready_replicas(model: ServedModel) -> list[Replica]:
    """The replicas taking traffic, lowest number first."""
    return sorted((r for r in model.replicas if r.state is ReplicaStatus.READY), key=lambda r: r.replica)


def kept(model: ServedModel) -> list[Replica]:
    """The replicas the model keeps: ready or starting (draining ones are on their way out)."""
    return sorted((r for r in model.replicas if r.state is not ReplicaStatus.DRAINING), key=lambda r: r.replica)


def claim_replica(model: ServedModel, owner: str, lease_seconds: float, now: datetime) -> Replica:
    """A new replica of a running model, starting under `owner`'s lease; numbered lowest free first."""
    taken = {r.replica for r in model.replicas}
    number = next(n for n in range(len(taken) + 1) if n not in taken)
    row = Replica(
        replica=number,
        status=ReplicaStatus.STARTING.value,
        status_changed_at=now,
        lease_owner=owner,
        lease_expires_at=now + timedelta(seconds=lease_seconds) + LEASE_GRACE,
    )
    model.replicas.append(row)
    return row


def replica_ready(model: ServedModel, row: Replica, endpoint: Endpoint, now: datetime) -> None:
    """A started replica answers: it takes traffic from now on."""
    move_replica(row, ReplicaStatus.READY, now)
    _at(row, endpoint)
    sync_endpoint(model)


def relocate(model: ServedModel, row: Replica, endpoint: Endpoint) -> None:
    """The runtime reports a replica at another address (its port changed, or it was recreated)."""
    _at(row, endpoint)
    sync_endpoint(model)


def drain(model: ServedModel, row: Replica, now: datetime) -> None:
    """Take a ready replica out of traffic; it is removed once nothing is in flight on it."""
    move_replica(row, ReplicaStatus.DRAINING, now)
    sync_endpoint(model)


def revive(model: ServedModel, row: Replica, now: datetime) -> None:
    """A draining replica takes traffic again (the load came back before it went)."""
    move_replica(row, ReplicaStatus.READY, now)
    sync_endpoint(model)


def drop_replica(model: ServedModel, row: Replica) -> None:
    """Forget a replica (removed, vanished, or its start failed); the model's endpoint follows."""
    model.replicas.remove(row)
    sync_endpoint(model)


def sync_endpoint(model: ServedModel) -> None:
    """The model row answers at its lowest-numbered ready replica (for clients of one endpoint)."""
    first = next(iter(ready_replicas(model)), None)
    if first is not None:
        model.container_id = first.instance_id
        model.container_host = first.host
        model.host_port = first.port


def set_scaling(model: ServedModel, desired: int, note: str | None) -> None:
    """What the autoscaler aims for, and why it holds fewer replicas than the load asks (or None)."""
    model.desired_replicas = desired
    model.scale_note = note[:4000] if note else None


def _at(row: Replica, endpoint: Endpoint) -> None:
    row.instance_id = endpoint.instance_id
    row.host = endpoint.host
    row.port = endpoint.port


def replica_endpoint(row: Replica) -> Endpoint | None:
    if row.instance_id and row.host and row.port:
        return Endpoint(row.host, row.port, row.instance_id)
    return None


def set_keep_warm(model: ServedModel, keep_warm: bool, by_admin: bool = False) -> None:
    """Pin a starting or running model against idle stops and eviction (or unpin it)."""
    if model.state in (Status.STARTING, Status.RUNNING):
        model.keep_warm = keep_warm
        model.pinned_by_admin = keep_warm and by_admin


def endpoint_of(model) -> Endpoint | None:
    """Where a running model answers, from its row (or a snapshot of it); None unless running."""
    if model.state is Status.RUNNING and model.host_port and model.container_host and model.container_id:
        return Endpoint(model.container_host, model.host_port, model.container_id)
    return None


def locked(model_id: int, include_deleted: bool = True) -> ServedModel:
    """The model's row, fresh from the database and locked for this transaction."""
    model = db.session.scalar(
        select(ServedModel)
        .where(ServedModel.id == model_id)
        .with_for_update(key_share=True)  # NO KEY UPDATE: foreign-key checks of other tables go on
        .execution_options(populate_existing=True)
    )
    if model is None or (model.deleted_at is not None and not include_deleted):
        raise ModelNotFound(f"no model with id {model_id}")
    return model


def record(model_id: int, kind: str, detail: str | None = None, duration_ms: int | None = None) -> None:
    """One lifecycle event of a model, in the same transaction as its change of state."""
    db.session.add(
        ModelEvent(model_id=model_id, kind=kind, detail=detail[:4000] if detail else detail, duration_ms=duration_ms)
    )
