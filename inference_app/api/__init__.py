"""JSON API blueprint: parse, call one service function, serialise."""

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api")

from . import access, media_type, params  # noqa: E402

bp.before_request(media_type.require_json_writes)
bp.before_request(params.refuse_nul_in_query)
access.install(bp)

from . import events_routes, models_routes, openapi  # noqa: E402,F401  (routes attach to bp)
