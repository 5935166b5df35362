"""The signed-cookie session with its signing serializer made once per key, not on every request.

Flask builds a new URLSafeTimedSerializer in every request's open_session; with a secret key set,
that is a measurable part of a warm inference, which has no use for the cookie at all.
"""

from __future__ import annotations

import threading

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
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


def init_app(app: Flask) -> None:
    app.session_interface = CookieSessions()
