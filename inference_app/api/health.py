"""Liveness and readiness probes (outside /api, as orchestrators expect)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import text

from ..errors import ServiceError
from ..extensions import db
from ..models import Heartbeat, utcnow
from ..services.context import context
from .errors import error_response

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/metrics")
def metrics():
    """Prometheus text exposition (see inference_app/metrics.py); behind METRICS_TOKEN when it is set."""
    from ..metrics import exposition, scrape_allowed

    settings = context().settings
    if not scrape_allowed(settings.metrics_token, request.headers.get("Authorization")):
        response = error_response(401, "unauthorized", "/metrics needs 'Authorization: Bearer <METRICS_TOKEN>'")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return Response(exposition(settings), mimetype="text/plain; version=0.0.4; charset=utf-8")


@bp.get("/readyz")
def readyz():
    checks: dict[str, dict] = {}
    ready = True
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
        checks["database"] = {"ok": True}
    except Exception as exc:  # the reason is the answer here
        db.session.rollback()
        ready = False
        checks["database"] = {"ok": False, "reason": f"database unreachable: {exc.__class__.__name__}"}
    runtime = context().runtime
    try:
        runtime.ping()
        checks[runtime.name] = {"ok": True}
    except ServiceError as exc:
        ready = False
        checks[runtime.name] = {"ok": False, "reason": exc.message}
    checks["background"] = _background_state()
    response = jsonify(status="ready" if ready else "not_ready", checks=checks)
    response.status_code = 200 if ready else 503
    return response


STALE_AFTER = 15.0


def _background_state() -> dict:
    """What the background role last reported; informative only, it never fails readiness."""
    try:
        beat = db.session.get(Heartbeat, "background")
        db.session.rollback()
    except Exception:
        db.session.rollback()
        return {"ok": False, "reason": "unknown (database unreachable)"}
    if beat is None:
        return {"ok": False, "reason": "no background runner has reported yet"}
    age = (utcnow() - beat.beat_at).total_seconds()
    state = dict(beat.state or {})
    state.update({"ok": age <= STALE_AFTER, "owner": beat.owner, "seconds_since_heartbeat": round(age, 1)})
    if age > STALE_AFTER:
        state["reason"] = f"no heartbeat from the background runner for {age:.0f} s"
    return state
