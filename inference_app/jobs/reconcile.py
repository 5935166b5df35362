"""Reconciliation: make the registry and the Docker engine agree.

Adopts running containers that carry our labels, marks models whose containers vanished
as stopped, removes exited or orphaned managed containers, and releases expired leases.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select

from ..extensions import db
from ..models import ACTIVE, EventKind, ModelEvent, ServedModel, Status, utcnow
from ..services.claims import claim_transaction, lease_valid, locked_model
from ..services.context import context

logger = logging.getLogger(__name__)


@dataclass
class Report:
    adopted: list[int] = field(default_factory=list)
    vanished: list[int] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    ports_updated: list[int] = field(default_factory=list)


def reconcile() -> Report:
    """One pass; safe to run at any time and from any process."""
    ctx = context()
    report = Report()
    listed = ctx.engine.list_managed()
    containers = {c.model_id: c for c in listed if c.model_id is not None}
    strays = [c for c in listed if c.model_id is None or c.name != ctx.engine.name_for(c.model_id)]
    models = {
        m.id: m
        for m in db.session.scalars(
            select(ServedModel).where(
                (ServedModel.status.in_([s.value for s in ACTIVE])) | (ServedModel.id.in_(list(containers)))
            )
        )
    }
    db.session.commit()
    for model_id in models:
        _reconcile_model(model_id, report)
    for info in strays:
        ctx.engine.remove(info.container_id, timeout=0)
        report.removed.append(info.name)
    for model_id, info in containers.items():
        if model_id not in models:
            ctx.engine.remove(info.container_id, timeout=0)
            report.removed.append(info.name)
    if report.adopted or report.vanished or report.removed or report.ports_updated:
        logger.info(
            "reconciled: adopted %s, vanished %s, removed %s, ports updated %s",
            report.adopted,
            report.vanished,
            report.removed,
            report.ports_updated,
        )
    return report


def _reconcile_model(model_id: int, report: Report) -> None:
    ctx = context()
    observed_at = utcnow()
    info = ctx.engine.inspect(ctx.engine.name_for(model_id))
    remove = info.container_id if info is not None else None
    with claim_transaction():
        model = locked_model(model_id, include_deleted=True)
        now = utcnow()
        state = model.state
        if model.status_changed_at > observed_at:
            return  # it moved since we looked at Docker: look again next time
        if state in (Status.STARTING, Status.STOPPING) and lease_valid(model, now):
            return  # somebody is working on it right now
        alive = info is not None and info.running and info.endpoint is not None
        if model.deleted_at is not None or state is Status.STOPPING or (not alive and state is not Status.RUNNING):
            # deleted, an abandoned stop, or nothing running where nothing should run: clean up
            if state is not Status.STOPPED and state is not Status.FAILED:
                model.move_to(Status.STOPPED, now)
        elif not alive:
            model.move_to(Status.STOPPED, now)
            model.last_error = "the container disappeared (killed or removed outside the service)"
            db.session.add(ModelEvent(model_id=model_id, kind=EventKind.VANISHED, detail=model.last_error))
            report.vanished.append(model_id)
        else:
            remove = None
            if state is not Status.RUNNING:
                model.move_to(Status.RUNNING, now)
                model.started_at = now
                db.session.add(ModelEvent(model_id=model_id, kind=EventKind.ADOPTED, detail=info.name))
                report.adopted.append(model_id)
            elif model.container_id != info.container_id or model.host_port != info.endpoint.port:
                report.ports_updated.append(model_id)
            model.container_id = info.container_id
            model.container_host = info.endpoint.host
            model.host_port = info.endpoint.port
            model.lease_owner = None
            model.lease_expires_at = None
    if remove:
        ctx.engine.remove(remove, timeout=0)
        report.removed.append(remove[:12])
