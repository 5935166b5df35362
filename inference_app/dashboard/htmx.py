"""htmx conventions: one route renders the page or the partial it includes, Vary, going back."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Response, make_response, redirect, render_template, request, url_for

from . import bp

_UNSAFE_PATH = re.compile(r"[\x00-\x1f\\]")


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def wants_partial() -> bool:
    """An htmx request that swaps part of a page (not a history restore, which needs the page)."""
    return is_htmx() and request.headers.get("HX-History-Restore-Request") != "true"


def page_or_partial(page_template: str, partial_template: str, status: int = 200, **context) -> Response:
    """The full page, or for an htmx request the partial that page includes."""
    return make_response(render_template(partial_template if wants_partial() else page_template, **context), status)


@bp.after_request
def vary_on_htmx(response: Response) -> Response:
    # Every dashboard route answers htmx requests differently: caches must keep both.
    response.vary.add("HX-Request")
    return response


def local_path(candidate: str | None, default: str) -> str:
    """candidate if it is a path on this site (never another host), else default."""
    if (
        candidate
        and candidate.startswith("/")
        and not candidate.startswith("//")
        and not _UNSAFE_PATH.search(candidate)
    ):
        return candidate
    return default


def current_page() -> str:
    """The dashboard address the user is looking at; for htmx requests, the browser's, not ours."""
    if is_htmx():
        parts = urlsplit(request.headers.get("HX-Current-URL", ""))
        if parts.netloc == request.host:
            return local_path(parts.path + (f"?{parts.query}" if parts.query else ""), url_for("dashboard.models"))
        return url_for("dashboard.models")
    return request.full_path.rstrip("?")


def redirect_back(default: str) -> Response:
    """After a form POST without JavaScript: back to the page it came from (303: see other)."""
    return redirect(local_path(request.form.get("next"), default), code=303)


@bp.context_processor
def page_helpers() -> dict:
    return {"current_page": current_page, "is_htmx": is_htmx}
