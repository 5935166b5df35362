"""Liveness and readiness probes (outside /api, as orchestrators expect)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from ..errors import ServiceError
from ..extensions import db
from ..services.context import context

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


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
    try:
        context().engine.ping()
        checks["docker"] = {"ok": True}
    except ServiceError as exc:
        ready = False
        checks["docker"] = {"ok": False, "reason": exc.message}
    background = current_app.extensions.get("background")
    checks["background"] = background.describe() if background else {"role": "off"}
    response = jsonify(status="ready" if ready else "not_ready", checks=checks)
    response.status_code = 200 if ready else 503
    return response
