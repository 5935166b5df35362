"""JSON API blueprint: parse, call one service function, serialise."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")

from . import access  # noqa: E402

access.install(bp)

from . import events_routes, models_routes, openapi  # noqa: E402,F401  (routes attach to bp)
