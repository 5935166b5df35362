"""Making the registry agree with the runtime: vanished instances, adoption, abandoned claims.

A model may run several replicas: each live instance of it (the runtime names it by model and
replica number) is kept, adopted up to max_replicas, or removed; a replica whose instance is
gone is dropped, and the model is marked vanished when none is left ready.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from ...coordination import lifecycle_transaction
from ...models import EventKind, ReplicaStatus, ServedModel, Status, utcnow
from ...runtime import Endpoint, Instance
from ..context import context
from . import transitions
from .decisions import Verdict, reconcile_verdict

logger = logging.getLogger(__name__)

VANISHED = "the container disappeared (killed or removed outside the service)"
SETTLE_SECONDS = 1.0  # how long a broken connection waits for the runtime to see its instance end


@dataclass
class Report:
    adopted: list[int] = field(default_factory=list)
    vanished: list[int] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    ports_updated: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.adopted or self.vanished or self.removed or self.ports_updated)


def _mark_vanished(model, now: datetime) -> None:
    transitions.move(model, Status.STOPPED, now, error=VANISHED)
    transitions.record(model.id, EventKind.VANISHED, detail=VANISHED)


def _drop_vanished_replica(model: ServedModel, row, now: datetime) -> None:
    """A replica's instance is gone: drop it; the model vanishes with its last ready replica."""
    number = row.replica
    transitions.drop_replica(model, row)
    if model.state is Status.RUNNING and not transitions.ready_replicas(model):
        _mark_vanished(model, now)
        return
    transitions.set_scaling(model, len(transitions.kept(model)), model.scale_note)
    transitions.record(model.id, EventKind.VANISHED, detail=f"replica {number}: {VANISHED}")
    logger.warning("model %s: replica %s vanished", model.id, number)


def report_unreachable(model_id: int, endpoint: Endpoint, settle: bool = False) -> bool:
    """A forward could not reach an instance: if it is gone, drop its replica (or mark the model stopped).

    `settle`: the connection broke mid-request, so give the runtime a moment to see the instance
    end before believing it still runs. Returns True when the instance was found gone, or alive
    but unreachable from this process until now (so the caller may try it again).
    """
    ctx = context()
    ctx.running_models.forget(model_id)
    instance = ctx.runtime.inspect(endpoint.instance_id)
    deadline = time.monotonic() + (SETTLE_SECONDS if settle else 0)
    while instance is not None and instance.running and time.monotonic() < deadline:
        time.sleep(0.05)
        instance = ctx.runtime.inspect(endpoint.instance_id)
    if instance is not None and instance.running:
        return ctx.runtime.reach(instance)  # alive: worth another try only if a path was missing
    with lifecycle_transaction():
        model = transitions.locked(model_id, include_deleted=True)
        now = utcnow()
        row = next((r for r in model.replicas if r.instance_id == endpoint.instance_id), None)
        if model.state is Status.RUNNING and row is not None:
            _drop_vanished_replica(model, row, now)
        elif model.state is Status.RUNNING and model.container_id == endpoint.instance_id:
            _mark_vanished(model, now)
            logger.warning("model %s: instance %s vanished", model_id, endpoint.instance_id[:12])
    if instance is not None:
        ctx.runtime.remove(endpoint.instance_id, timeout=0)
    return True


def remove_unowned(instances: list[Instance], report: Report) -> None:
    """Remove instances that carry our labels but belong to no model the registry knows as live."""
    for instance in instances:
        context().runtime.remove(instance.instance_id, timeout=0)
        report.removed.append(instance.name)


def reconcile_model(model_id: int, instances: list[Instance], observed_at: datetime, report: Report) -> None:
    """Settle one model against the instances the runtime listed for it at `observed_at`."""
    ctx = context()
    live: dict[int, Instance] = {}
    remove = []
    for instance in sorted(instances, key=lambda i: i.replica):
        if instance.running and instance.endpoint is not None and instance.replica not in live:
            live[instance.replica] = instance
        else:
            remove.append(instance.instance_id)
    with lifecycle_transaction():
        model = transitions.locked(model_id, include_deleted=True)
        now = utcnow()
        verdict = reconcile_verdict(
            model.state,
            busy=transitions.busy(model, now),
            moved_since_observed=model.status_changed_at > observed_at,
            deleted=model.deleted_at is not None,
            alive=bool(live),
        )
        if verdict is Verdict.LEAVE:
            return
        if verdict is Verdict.CLEAN_UP:
            remove += [i.instance_id for i in live.values()]
            if model.state not in (Status.STOPPED, Status.FAILED):
                transitions.move(model, Status.STOPPED, now)
        elif verdict is Verdict.VANISHED:
            _mark_vanished(model, now)
            report.vanished.append(model_id)
        else:
            remove += _settle_replicas(model, live, observed_at, verdict, now, report)
    for instance_id in remove:
        ctx.runtime.remove(instance_id, timeout=0)
        report.removed.append(instance_id[:12])


def _settle_replicas(
    model: ServedModel,
    live: dict[int, Instance],
    observed_at: datetime,
    verdict: Verdict,
    now: datetime,
    report: Report,
) -> list[str]:
    """Keep, adopt or drop each replica of a model that runs (or ran); returns the instances to remove."""
    remove = []
    unclaimed = dict(live)
    gone = []
    if verdict is Verdict.ADOPT:
        for row in list(model.replicas):  # left by a crash: the live instances decide now (place reuses a row)
            if row.replica not in live:
                transitions.drop_replica(model, row)
        return remove + _adopt(model, unclaimed, 0, now, report)
    for row in list(model.replicas):
        instance = unclaimed.pop(row.replica, None)
        if row.status_changed_at > observed_at:
            continue  # it moved after the runtime was looked at
        if row.state is ReplicaStatus.STARTING:
            if row.lease_expires_at is not None and row.lease_expires_at > now:
                continue  # its start is under way
            transitions.drop_replica(model, row)  # an abandoned start
            if instance is not None:
                remove.append(instance.instance_id)
        elif instance is None:
            gone.append(row)
        elif transitions.replica_endpoint(row) != instance.endpoint:
            transitions.relocate(model, row, instance.endpoint)
            report.ports_updated.append(model.id)
    remove += _adopt(model, unclaimed, len(model.replicas) - len(gone), now, report)
    for row in gone:
        if model.state is not Status.RUNNING:
            break  # it vanished with its last ready replica: the rest went with it
        if row.state is ReplicaStatus.DRAINING:
            transitions.drop_replica(model, row)  # it was on its way out anyway
            continue
        _drop_vanished_replica(model, row, now)
        if model.id not in report.vanished:
            report.vanished.append(model.id)
    return remove


def _adopt(model: ServedModel, unclaimed: dict[int, Instance], held: int, now: datetime, report: Report) -> list[str]:
    """Take over live instances the registry does not know, up to max_replicas; returns the rest."""
    remove = []
    limit = max(1, model.max_replicas or 1)
    for number, instance in sorted(unclaimed.items()):
        if number >= limit or held >= limit:
            remove.append(instance.instance_id)
            continue
        adopting_model = model.state is not Status.RUNNING
        transitions.place(model, instance.endpoint, now, replica=number)
        held += 1
        detail = instance.name if adopting_model else f"replica {number}: {instance.name}"
        transitions.record(model.id, EventKind.ADOPTED, detail=detail)
        if model.id not in report.adopted:
            report.adopted.append(model.id)
    return remove
