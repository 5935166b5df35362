"""Making the registry agree with the runtime: vanished instances, adoption, abandoned claims."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from ...coordination import lifecycle_transaction
from ...models import EventKind, Status, utcnow
from ...runtime import Endpoint, Instance
from ..context import context
from . import transitions
from .decisions import Verdict, reconcile_verdict

logger = logging.getLogger(__name__)

VANISHED = "the container disappeared (killed or removed outside the service)"


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


def report_unreachable(model_id: int, endpoint: Endpoint) -> bool:
    """A forward could not connect: if the instance is gone, mark the model stopped.

    Returns True when the model was found gone (so the caller may start it again), or alive but
    unreachable from this process until now (so the caller may try it again).
    """
    ctx = context()
    ctx.running_models.forget(model_id)
    instance = ctx.runtime.inspect(endpoint.instance_id)
    if instance is not None and instance.running:
        return ctx.runtime.reach(instance)  # alive: worth another try only if a path was missing
    with lifecycle_transaction():
        model = transitions.locked(model_id, include_deleted=True)
        if model.state is Status.RUNNING and model.container_id == endpoint.instance_id:
            _mark_vanished(model, utcnow())
            logger.warning("model %s: instance %s vanished", model_id, endpoint.instance_id[:12])
    if instance is not None:
        ctx.runtime.remove(endpoint.instance_id, timeout=0)
    return True


def reconcile_model(model_id: int, instances: list[Instance], observed_at: datetime, report: Report) -> None:
    """Settle one model against the instances the runtime listed for it at `observed_at`."""
    ctx = context()
    live = next((i for i in instances if i.running and i.endpoint is not None), None)
    remove = [i.instance_id for i in instances if i is not live]
    with lifecycle_transaction():
        model = transitions.locked(model_id, include_deleted=True)
        now = utcnow()
        verdict = reconcile_verdict(
            model.state,
            busy=transitions.busy(model, now),
            moved_since_observed=model.status_changed_at > observed_at,
            deleted=model.deleted_at is not None,
            alive=live is not None,
        )
        if verdict is Verdict.LEAVE:
            return
        if verdict is Verdict.CLEAN_UP:
            if live is not None:
                remove.append(live.instance_id)
            if model.state not in (Status.STOPPED, Status.FAILED):
                transitions.move(model, Status.STOPPED, now)
        elif verdict is Verdict.VANISHED:
            _mark_vanished(model, now)
            report.vanished.append(model_id)
        else:
            if verdict is Verdict.ADOPT:
                transitions.record(model_id, EventKind.ADOPTED, detail=live.name)
                report.adopted.append(model_id)
            elif transitions.endpoint_of(model) != live.endpoint:
                report.ports_updated.append(model_id)
            transitions.place(model, live.endpoint, now)
    for instance_id in remove:
        ctx.runtime.remove(instance_id, timeout=0)
        report.removed.append(instance_id[:12])
