"""Signing in to the dashboard with an API token.

The cookie (signed, HttpOnly, SameSite=Lax, Secure with SESSION_COOKIE_SECURE) holds a random
session id; the server keeps the session (auth.open_session), so it ends at SESSION_LIFETIME_SECONDS
or at sign-out, whoever holds a copy of the cookie.
"""

from __future__ import annotations

from flask import Response, g, make_response, redirect, render_template, request, session, url_for

from ..services import auth
from ..services.context import context
from . import bp
from .htmx import current_page, is_htmx, local_path

SESSION_KEY = "session_id"
OPEN_ENDPOINTS = {"dashboard.login", "dashboard.login_form", "dashboard.logout"}


def viewer() -> auth.Principal:
    """Who is looking: their models only, or every model for an admin."""
    return g.principal


@bp.before_request
def require_signin():
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if context().settings.auth_disabled:
        g.principal = auth.ANONYMOUS_ADMIN
        return None
    session_id = session.get(SESSION_KEY)
    principal = auth.session_principal(session_id) if isinstance(session_id, str) else None
    if principal is not None:
        g.principal = principal
        return None
    session.pop(SESSION_KEY, None)
    target = url_for("dashboard.login_form", next=current_page())
    if is_htmx():  # a swap cannot show a sign-in page: send the whole window there
        response = make_response("", 401)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target)


@bp.get("/login")
def login_form():
    return render_template("login.html", next=local_path(request.args.get("next"), url_for("dashboard.models")))


@bp.post("/login")
def login() -> Response:
    token = request.form.get("token", "").strip()
    next_page = local_path(request.form.get("next"), url_for("dashboard.models"))
    principal = auth.principal_for_token(token) if token else None
    if principal is None:
        error = "Paste an API token." if not token else "That token is unknown or has been revoked."
        return make_response(render_template("login.html", next=next_page, error=error), 401)
    session.clear()
    session[SESSION_KEY] = auth.open_session(auth.hash_token(token), context().settings.session_lifetime_seconds)
    session.permanent = True
    return redirect(next_page, code=303)


@bp.post("/logout")
def logout() -> Response:
    session_id = session.get(SESSION_KEY)
    if isinstance(session_id, str):
        auth.end_session(session_id)
    session.clear()
    return redirect(url_for("dashboard.login_form"), code=303)
