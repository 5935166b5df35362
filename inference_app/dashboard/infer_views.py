"""The Infer panel: a JSON editor pre-filled with the model's example, and the model's answer."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from http import HTTPStatus

from flask import make_response, render_template, request

from ..errors import InvalidInput, ServiceError
from ..extensions import db
from ..models import ServedModel
from ..services import inference, rate_limit, registry
from . import bp
from .formatting import pretty_json
from .htmx import page_or_partial, wants_partial
from .signin import viewer

SHOWN_BYTES = 64 * 1024  # the panel shows this much of an answer; the rest is read and dropped


@dataclass(frozen=True)
class Answer:
    """The model's answer as the panel shows it."""

    status: int
    reason: str
    content_type: str
    text: str
    truncated: bool
    latency_ms: float
    cold: bool
    waited_ms: float
    request_id: str

    @property
    def ok(self) -> bool:
        return self.status < 400


def example_body(model: ServedModel) -> str:
    """The model's metadata.example_request as indented JSON, else an empty object."""
    meta = model.meta if isinstance(model.meta, dict) else {}
    if "example_request" in meta:
        return pretty_json(meta["example_request"])
    return "{}"


def _parse(text: str) -> bytes:
    if not text.strip():
        raise InvalidInput("the request body is empty: write a JSON value, for example {}", field="body")
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"the request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", field="body"
        ) from None
    except RecursionError:
        raise InvalidInput("the request body is nested too deeply to be read as JSON", field="body") from None
    except ValueError as exc:  # int() of more than 4,300 digits
        raise InvalidInput(f"the request body is not valid JSON: {exc}", field="body") from None
    return text.encode("utf-8")


def _ask(target: inference.ModelView, body: bytes) -> Answer:
    request_id = inference.request_id_from(None)
    began = time.monotonic()
    result = inference.infer(
        target, body, {"Content-Type": "application/json", "Accept": "application/json"}, request_id
    )
    raw, truncated = _read(result)
    latency_ms = (time.monotonic() - began) * 1000
    content_type = result.headers.get("Content-Type", "")
    try:
        reason = HTTPStatus(result.status).phrase
    except ValueError:
        reason = ""
    return Answer(
        status=result.status,
        reason=reason,
        content_type=content_type,
        text=_readable(raw, content_type, truncated),
        truncated=truncated,
        latency_ms=latency_ms,
        cold=result.cold,
        waited_ms=result.waited_s * 1000,
        request_id=request_id,
    )


def _read(result: inference.InferenceResult) -> tuple[bytes, bool]:
    """The first SHOWN_BYTES of the answer; a streamed answer is read to its end (so it is accounted)."""
    if result.stream is None:
        data = result.body or b""
        return data[:SHOWN_BYTES], len(data) > SHOWN_BYTES
    kept, seen = [], 0
    for chunk in result.stream:
        if seen < SHOWN_BYTES:
            kept.append(chunk[: SHOWN_BYTES - seen])
        seen += len(chunk)
    return b"".join(kept), seen > SHOWN_BYTES


def _readable(raw: bytes, content_type: str, truncated: bool) -> str:
    text = raw.decode("utf-8", errors="replace")
    if "json" in content_type and not truncated:
        try:
            return pretty_json(json.loads(text))
        except (ValueError, RecursionError):  # not JSON after all, or too deep to lay out: as it came
            pass
    return text


@bp.get("/models/<int:model_id>/infer")
def infer_panel(model_id: int):
    """The Infer page; for htmx, the panel that opens under the model's row."""
    model = registry.get_model(model_id, visible_to=viewer())
    return page_or_partial("infer.html", "partials/infer_panel.html", model=model, body_text=example_body(model))


@bp.post("/models/<int:model_id>/infer")
def infer_model(model_id: int):
    """Send the editor's JSON through the inference service (starting the model if needed)."""
    model = registry.get_model(model_id, visible_to=viewer())
    text = request.form.get("body", "")
    answer, error, status = None, None, 200
    try:
        body = _parse(text)
        # the API's way in, in the API's order: the rate and the model (admit), then the caller's
        # concurrent inferences; this version, as the API's ?version=
        target = inference.admit(model.id, model.version, viewer())
        release = rate_limit.enter_inference(viewer())
        try:
            answer = _ask(target, body)
        finally:
            release()
    except ServiceError as exc:
        db.session.rollback()
        error, status = exc.message, exc.status
    if not wants_partial():
        page = render_template("infer.html", model=model, body_text=text, answer=answer, error=error)
        return make_response(page, status)
    response = make_response(render_template("partials/infer_result.html", answer=answer, error=error), status)
    response.headers["HX-Trigger"] = f"model-{model_id}-changed"  # its row/status may have changed
    return response
