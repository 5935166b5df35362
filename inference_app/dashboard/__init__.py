"""HTML blueprint: the same service calls as the API, rendered as pages and partials."""

from flask import Blueprint

bp = Blueprint("dashboard", __name__)

from ..api.params import refuse_nul_in_query  # noqa: E402

bp.before_request(refuse_nul_in_query)

from . import errors, formatting, htmx, infer_views, model_views, ops_views, signin  # noqa: E402,F401  (attach to bp)
