"""Errors on dashboard pages: plain words where the user is looking, never a stack trace."""

from __future__ import annotations

import logging

from flask import Response, current_app, make_response, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..errors import ServiceError
from ..extensions import db
from . import bp
from .htmx import wants_partial

logger = logging.getLogger(__name__)

CSRF_MESSAGE = "This form was not sent from a current dashboard page, so it was refused. Reload the page and try again."


def error_page(status: int, message: str) -> Response:
    """A page saying what went wrong; for htmx, a notice at the top of the page it came from."""
    if wants_partial():
        response = make_response(render_template("partials/notice.html", message=message, kind="error"), status)
        response.headers["HX-Retarget"] = "#notices"
        response.headers["HX-Reswap"] = "innerHTML"
        return response
    return make_response(render_template("error.html", status=status, message=message), status)


@bp.errorhandler(ServiceError)
def service_error(exc: ServiceError):
    db.session.rollback()
    return error_page(exc.status, exc.message)


@bp.errorhandler(CSRFError)
def csrf_error(exc: CSRFError):
    logger.info("dashboard form refused: %s", exc.description)
    return error_page(400, CSRF_MESSAGE)


@bp.errorhandler(RequestEntityTooLarge)
def too_large(exc: RequestEntityTooLarge):
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or 0
    return error_page(413, f"The request is larger than the limit of {limit:,} bytes.")


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    return error_page(exc.code or 500, exc.description or exc.name)


@bp.errorhandler(Exception)
def unexpected(exc: Exception):
    logger.exception("dashboard request failed")
    db.session.rollback()
    return error_page(500, "Something went wrong on our side. It has been logged; please try again.")
