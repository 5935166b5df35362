"""The signed-cookie session, made cheap for the requests that carry no cookie (every API call).

Flask builds a new URLSafeTimedSerializer in every request's open_session and looks the cookie up
with a MultiDict.get that raises inside when it is missing; with a secret key set, that is a
measurable part of a warm inference, which has no use for the cookie at all. The serializer is
made once per key here, and a request without the cookie gets its empty session at once.
"""

from __future__ import annotations

import threading

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer


class CookieSessions(SecureCookieSessionInterface):
    """Flask's cookie sessions, unchanged but for the serializer kept while the keys stay the same."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: tuple[tuple, URLSafeTimedSerializer | None] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))
        made = self._made
        if made is not None and made[0] == keys:
            return made[1]
        serializer = super().get_signing_serializer(app)
        with self._lock:
            self._made = (keys, serializer)
        return serializer

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # no cookie (every API call): an empty session, without parsing the cookies (a pass over every
        # header) or the MultiDict.get miss that raises inside
        if self.get_signing_serializer(app) is not None and (
            "HTTP_COOKIE" not in request.environ or self.get_cookie_name(app) not in request.cookies
        ):
            return self.session_class()
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    app.session_interface = CookieSessions()
