"""Operations views: running containers against the cap, and the lifecycle event log."""

from __future__ import annotations

from flask import request, url_for

from ..models import EventKind
from ..services import auth, insights
from . import bp
from .htmx import is_htmx, page_or_partial, wants_partial
from .model_state import live_model
from .signin import viewer

EVENT_KINDS = sorted(v for k, v in vars(EventKind).items() if k.isupper())
STOP_KINDS = [EventKind.EVICTED, EventKind.IDLE_STOPPED]
SCALE_KINDS = [EventKind.SCALED_UP, EventKind.SCALED_DOWN, EventKind.SCALE_HELD, EventKind.REPLICA_FAILED]
EVENTS_PER_PAGE = 50
KAFKA_ROWS = 20


@bp.get("/running")
def running():
    """Models holding a container slot, the capacity, recent scaling, and recent evictions and idle stops."""
    rows = [live_model(m) for m in insights.active_models(visible_to=viewer())]
    return page_or_partial(
        "running.html",
        "partials/running.html",
        capacity=insights.capacity(),
        rows=rows,
        scaling=insights.recent_events(kinds=SCALE_KINDS, limit=20, visible_to=viewer()),
        stops=insights.recent_events(kinds=STOP_KINDS, limit=20, visible_to=viewer()),
        polling=any(r.progress.polling for r in rows),
    )


@bp.get("/events")
def events():
    """Lifecycle events (newest first, of one kind, older pages by event id); Kafka registrations and dead letters."""
    kind = request.args.get("kind", "")
    raw_before = request.args.get("before", "")
    error = None
    if kind and kind not in EVENT_KINDS:
        error = f"kind must be one of {', '.join(EVENT_KINDS)}"
    elif raw_before and not (raw_before.isascii() and raw_before.isdigit() and len(raw_before) <= 18):
        error = "before must be an event number"
    rows = []
    if error is None:
        rows = insights.recent_events(
            kinds=[kind] if kind else None,
            limit=EVENTS_PER_PAGE,
            before_id=int(raw_before) if raw_before else None,
            visible_to=viewer(),
        )
    older = rows[-1].event.id if len(rows) == EVENTS_PER_PAGE else None
    response = page_or_partial(
        "events.html",
        "partials/events.html",
        400 if error else 200,
        rows=rows,
        kind=kind if kind in EVENT_KINDS else "",
        kinds=EVENT_KINDS,
        before=raw_before if error is None else "",
        older=older,
        error=error,
        **({} if wants_partial() else _kafka()),
    )
    if is_htmx() and error is None:
        clean = {k: v for k, v in (("kind", kind), ("before", raw_before)) if v}
        response.headers["HX-Push-Url"] = url_for("dashboard.events", **clean)
    return response


def _kafka() -> dict:
    """What the Kafka listener applied and refused: shown to admins under the lifecycle events."""
    if not auth.sees_everything(viewer()):
        return {"ingested": [], "dead_letters": [], "kafka_hidden": True}
    return {"ingested": insights.recent_ingested(KAFKA_ROWS), "dead_letters": insights.recent_dead_letters(KAFKA_ROWS)}
