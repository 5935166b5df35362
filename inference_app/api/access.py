"""Authentication for the JSON API: every route but the public ones needs a Bearer token."""

from __future__ import annotations

import logging

from flask import Blueprint, g, request

from ..services import auth
from ..services.context import context

logger = logging.getLogger(__name__)

PUBLIC_ENDPOINTS = {"api.openapi_document", "api.openapi_page"}


def caller() -> auth.Principal:
    return g.principal


def install(bp: Blueprint) -> None:
    @bp.before_request
    def identify() -> None:
        if request.endpoint in PUBLIC_ENDPOINTS:
            return
        if context().settings.auth_disabled:
            g.principal = auth.ANONYMOUS_ADMIN
            return
        g.principal = auth.authenticate(request.headers.get("Authorization"))
