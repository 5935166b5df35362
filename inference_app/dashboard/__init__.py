"""HTML blueprint: the same service calls as the API, rendered as pages and partials."""

from flask import Blueprint

bp = Blueprint("dashboard", __name__)

from . import views  # noqa: E402,F401
