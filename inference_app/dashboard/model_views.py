"""Models: the searchable list, one row, the detail page, and Start/Stop that update in place."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from flask import Response, flash, make_response, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from ..api.params import whole_number
from ..errors import InvalidInput, ServiceError
from ..extensions import db
from ..models import ServedModel, Status
from ..services import insights, lifecycle, rate_limit, registry
from ..services.context import context
from . import bp
from .chart import inference_chart
from .htmx import is_htmx, page_or_partial, redirect_back
from .infer_views import example_body
from .model_state import live_model
from .signin import viewer

PER_PAGE = 20
STATUSES = [s.value for s in Status]


@dataclass(frozen=True)
class Filters:
    q: str = ""
    user_id: str = ""
    status: str = ""
    page: int = 1

    @classmethod
    def from_args(cls, args: MultiDict) -> Filters:
        raw_page = (args.get("page") or "1").strip()
        page = whole_number("page", raw_page)
        if page < 1:
            raise InvalidInput(f"page must be a whole number from 1, got {raw_page[:16]!r}", field="page")
        return cls(
            q=(args.get("q") or "").strip(),
            user_id=(args.get("user_id") or "").strip(),
            status=(args.get("status") or "").strip(),
            page=min(page, 10**7),
        )

    def url(self, page: int) -> str:
        """This search, on another page."""
        params = {k: v for k, v in (("q", self.q), ("user_id", self.user_id), ("status", self.status)) if v}
        if page > 1:
            params["page"] = page
        return url_for("dashboard.models", **params)


def since_arg() -> float | None:
    """When the user pressed Start (epoch seconds), carried by the polling URL."""
    raw = request.args.get("since", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


@bp.get("/")
def models():
    """The models page; for htmx (search, filters, pages) just the list it includes."""
    error = None
    try:
        filters = Filters.from_args(request.args)
        page = registry.list_models(
            user_id=filters.user_id or None,
            status=filters.status or None,
            search=filters.q or None,
            page=filters.page,
            per_page=PER_PAGE,
            visible_to=viewer(),
        )
    except InvalidInput as exc:
        db.session.rollback()
        error = exc.message
        filters = Filters(q=request.args.get("q", "")[:128], user_id=request.args.get("user_id", "")[:64], status="")
        page = registry.Page(items=[], total=0, page=1, per_page=PER_PAGE)
    rows = [live_model(m) for m in page.items]
    response = page_or_partial(
        "index.html",
        "partials/models.html",
        400 if error else 200,
        page=page,
        rows=rows,
        filters=filters,
        error=error,
        statuses=STATUSES,
        polling=any(r.progress.polling for r in rows),
    )
    if is_htmx() and error is None:
        response.headers["HX-Push-Url"] = filters.url(filters.page)  # the address bar, without empty fields
    return response


@bp.get("/models/<int:model_id>/row")
def model_row(model_id: int):
    """One model's row: what the list polls while its container starts or stops."""
    return render_template(
        "partials/model_row.html", row=live_model(registry.get_model(model_id, visible_to=viewer()), since_arg())
    )


def _detail(model: ServedModel, since: float | None, error: str | None = None) -> dict:
    history = insights.inference_history(model.id)
    return {
        "row": live_model(model, since, error),
        "container": insights.container_report(model),
        "history": history,
        "chart": inference_chart(history),
        "events": insights.recent_events(model_id=model.id, limit=10, visible_to=viewer()),
    }


@bp.get("/models/<int:model_id>")
def model_detail(model_id: int):
    """A model's page; for htmx, its live part (status, container, activity, log, events)."""
    model = registry.get_model(model_id, visible_to=viewer())
    context = _detail(model, since_arg())
    context["polling"] = context["row"].progress.polling
    return page_or_partial(
        "model.html", "partials/model_live.html", model=model, body_text=example_body(model), **context
    )


@bp.post("/models/<int:model_id>/start")
def start_model(model_id: int):
    """Ask for a start without waiting; the row then shows its progress."""
    model = registry.get_model(model_id, visible_to=viewer())
    since = time.time()
    try:
        context().rate_limiter.check(rate_limit.key_of(viewer()))  # the API's per-token budget
        lifecycle.request_start(model, wait=False, keep_warm=False)
    except ServiceError as exc:
        return _after_action(model_id, since, exc)
    return _after_action(model_id, since)


@bp.post("/models/<int:model_id>/stop")
def stop_model(model_id: int):
    """Stop and remove the container (waits for it: a stop takes at most the stop timeout)."""
    registry.get_model(model_id, visible_to=viewer())  # unknown or deleted models are a 404, as in the API
    try:
        lifecycle.stop(model_id)
    except ServiceError as exc:
        return _after_action(model_id, None, exc)
    return _after_action(model_id, None)


def _after_action(model_id: int, since: float | None, error: ServiceError | None = None) -> Response:
    """htmx: the updated fragment the button belongs to. Without JavaScript: back where it came from."""
    if error is not None:
        db.session.rollback()
    model = registry.get_model(model_id, fresh=True, visible_to=viewer())
    if not is_htmx():
        label = f"{model.user_id}/{model.model_name}:{model.version}"
        if error is not None:
            flash(f"{label}: {error.message}", "error")
        else:
            flash(f"{label} is {model.status}.", "info")
        return redirect_back(url_for("dashboard.model_detail", model_id=model_id))
    message = error.message if error is not None else None
    if request.form.get("fragment") == "live":
        html = render_template("partials/model_live.html", model=model, **_detail(model, since, message))
    else:
        html = render_template("partials/model_row.html", row=live_model(model, since, message))
    return make_response(html, error.status if error is not None else 200)
