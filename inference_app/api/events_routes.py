"""Lifecycle events: starts, stops, evictions and failures, newest first."""

from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import select

from ..errors import Forbidden, InvalidInput
from ..extensions import db
from ..models import DeadLetter, EventKind, IngestedEvent, ModelEvent, ServedModel
from ..services import registry
from . import bp
from .access import caller
from .params import int_arg
from .serializers import dead_letter_to_dict, event_to_dict, ingested_to_dict

KINDS = {v for k, v in vars(EventKind).items() if k.isupper()}


@bp.get("/lifecycle-events")
def lifecycle_events():
    query = select(ModelEvent).order_by(ModelEvent.id.desc()).limit(int_arg("limit", 50, 1, 500))
    principal = caller()
    if not principal.is_admin:
        owned = select(ServedModel.id).where(ServedModel.user_id == principal.user_id)
        query = query.where(ModelEvent.model_id.in_(owned))
    kind = request.args.get("kind")
    if kind:
        if kind not in KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(sorted(KINDS))}", field="kind")
        query = query.where(ModelEvent.kind == kind)
    if request.args.get("model_id"):
        query = query.where(ModelEvent.model_id == int_arg("model_id", 0))
    return jsonify(items=[event_to_dict(e) for e in db.session.scalars(query)])


@bp.get("/models/<int:model_id>/lifecycle-events")
def model_lifecycle_events(model_id: int):
    registry.get_model(model_id, include_deleted=True, visible_to=caller())
    query = (
        select(ModelEvent)
        .where(ModelEvent.model_id == model_id)
        .order_by(ModelEvent.id.desc())
        .limit(int_arg("limit", 50, 1, 500))
    )
    return jsonify(items=[event_to_dict(e) for e in db.session.scalars(query)])


@bp.get("/events")
def ingested_events():
    """Recent events from Kafka and what became of them (applied, duplicate, stale); admins only."""
    require_admin()
    query = select(IngestedEvent).order_by(IngestedEvent.id.desc()).limit(int_arg("limit", 50, 1, 500))
    return jsonify(items=[ingested_to_dict(e) for e in db.session.scalars(query)])


@bp.get("/events/dead-letters")
def dead_letters():
    """Events that could not be applied, with the reason and the (truncated) payload; admins only."""
    require_admin()
    query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(int_arg("limit", 50, 1, 500))
    return jsonify(items=[dead_letter_to_dict(d) for d in db.session.scalars(query)])


def require_admin() -> None:
    if not caller().is_admin:
        raise Forbidden("only admin tokens may read the ingestion log")
