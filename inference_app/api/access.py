"""Authentication for the JSON API: every route but the public ones needs a Bearer token."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, g, request

from ..services import auth, rate_limit
from ..services.context import context

logger = logging.getLogger(__name__)

PUBLIC_ENDPOINTS = {"api.openapi_document", "api.openapi_page"}


def caller() -> auth.Principal:
    return g.principal


def limit_rate() -> None:
    """Take one request from the caller's RATE_LIMIT_PER_MINUTE bucket (inference and starts)."""
    context().rate_limiter.check(rate_limit.key_of(caller()))


def enter_inference() -> Callable[[], None]:
    return rate_limit.enter_inference(caller())


def install(bp: Blueprint) -> None:
    @bp.before_request
    def identify() -> None:
        if request.endpoint in PUBLIC_ENDPOINTS:
            return
        if context().settings.auth_disabled:
            g.principal = auth.ANONYMOUS_ADMIN
            return
        g.principal = auth.authenticate(request.headers.get("Authorization"))
