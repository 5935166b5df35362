"""Lifecycle events: starts, stops, evictions and failures, newest first."""

from __future__ import annotations

from flask import jsonify, request

from ..errors import Forbidden, InvalidInput
from ..models import EventKind
from ..services import auth, insights, registry
from . import bp
from .access import caller
from .params import int_arg
from .serializers import dead_letter_to_dict, event_to_dict, ingested_to_dict

KINDS = {v for k, v in vars(EventKind).items() if k.isupper()}


@bp.get("/lifecycle-events")
def lifecycle_events():
    limit = int_arg("limit", 50, 1, 500)
    kind = request.args.get("kind")
    if kind and kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(sorted(KINDS))}", field="kind")
    model_id = int_arg("model_id", 0) if request.args.get("model_id") else None
    rows = insights.recent_events(kinds=[kind] if kind else None, model_id=model_id, limit=limit, visible_to=caller())
    return jsonify(items=[event_to_dict(row.event) for row in rows])


@bp.get("/models/<int:model_id>/lifecycle-events")
def model_lifecycle_events(model_id: int):
    registry.get_model(model_id, include_deleted=True, visible_to=caller())
    rows = insights.recent_events(model_id=model_id, limit=int_arg("limit", 50, 1, 500), visible_to=caller())
    return jsonify(items=[event_to_dict(row.event) for row in rows])


@bp.get("/events")
def ingested_events():
    """Recent events from Kafka and what became of them (applied, duplicate, stale); admins only."""
    require_admin()
    return jsonify(items=[ingested_to_dict(e) for e in insights.recent_ingested(int_arg("limit", 50, 1, 500))])


@bp.get("/events/dead-letters")
def dead_letters():
    """Events that could not be applied, with the reason and the (truncated) payload; admins only."""
    require_admin()
    return jsonify(items=[dead_letter_to_dict(d) for d in insights.recent_dead_letters(int_arg("limit", 50, 1, 500))])


def require_admin() -> None:
    if not auth.sees_everything(caller()):
        raise Forbidden("only admin tokens may read the ingestion log")
