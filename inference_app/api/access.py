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


def limit_key(principal: auth.Principal) -> str:
    """What the per-token limits count by: the token, or one shared key when auth is off."""
    return principal.name if principal.token_id is None else f"token:{principal.token_id}"


def limit_rate() -> None:
    """Take one request from the caller's RATE_LIMIT_PER_MINUTE bucket (inference and starts)."""
    context().rate_limiter.check(limit_key(caller()))


def enter_inference() -> Callable[[], None]:
    """Count an inference in against MAX_CONCURRENT_INFERENCES_PER_TOKEN; returns its release.

    Only tokens are limited: with AUTH_DISABLED every caller is the same anonymous admin.
    """
    principal = caller()
    if principal.token_id is None:
        return lambda: None
    return rate_limit.concurrency().acquire(limit_key(principal))


def install(bp: Blueprint) -> None:
    @bp.before_request
    def identify() -> None:
        if request.endpoint in PUBLIC_ENDPOINTS:
            return
        if context().settings.auth_disabled:
            g.principal = auth.ANONYMOUS_ADMIN
            return
        g.principal = auth.authenticate(request.headers.get("Authorization"))
