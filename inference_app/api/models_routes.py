"""The model routes: list, register, show, start, infer, stop."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Response, g, jsonify, request

from ..errors import InvalidInput
from ..services import inference, lifecycle, registry
from ..services.context import context
from ..services.model_view import ModelView
from . import bp
from .access import caller, enter_inference, limit_rate
from .params import bool_arg, int_arg, json_body
from .serializers import model_to_dict


def _idle_default() -> int:
    return context().settings.idle_timeout_seconds


@bp.get("/models")
def list_models():
    page = registry.list_models(
        user_id=request.args.get("user_id") or None,
        status=request.args.get("status") or None,
        search=request.args.get("q") or None,
        page=int_arg("page", 1),
        per_page=int_arg("per_page", 20, 1, registry.MAX_PER_PAGE),
        visible_to=caller(),
    )
    idle = _idle_default()
    return jsonify(
        items=[model_to_dict(m, idle) for m in page.items], total=page.total, page=page.page, per_page=page.per_page
    )


@bp.post("/models")
def register_model():
    model, created = registry.register_model(json_body(), context().settings, principal=caller())
    return jsonify(model_to_dict(model, _idle_default())), 201 if created else 200


@bp.get("/models/<int:model_id>")
def show_model(model_id: int):
    return jsonify(model_to_dict(registry.get_model(model_id, visible_to=caller()), _idle_default()))


@bp.post("/models/<int:model_id>/start")
def start_model(model_id: int):
    limit_rate()  # a start costs a container: the same per-token budget as an inference
    body = json_body(required=False)
    if not isinstance(body, dict):
        raise InvalidInput('the body must be a JSON object like {"keep_warm": true}')
    keep_warm = body.get("keep_warm", False)
    if not isinstance(keep_warm, bool):
        raise InvalidInput("keep_warm must be true or false", field="keep_warm")
    unknown = sorted(set(body) - {"keep_warm"})
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}; allowed: keep_warm", field=unknown[0][:64])
    wait = bool_arg("wait", True)
    model = registry.get_model(model_id, visible_to=caller())
    readiness = lifecycle.request_start(model, wait=wait, keep_warm=keep_warm, by_admin=caller().is_admin)
    model = registry.get_model(model_id, fresh=True)
    response = jsonify(model_to_dict(model, _idle_default()))
    if readiness is None:
        response.status_code = 202
        response.headers["Location"] = f"/api/models/{model_id}"
    else:
        response.headers["X-Cold-Start"] = "true" if readiness.cold else "false"
        response.headers["X-Start-Wait-Ms"] = str(round(readiness.waited_s * 1000))
    return response


@bp.post("/models/<int:model_id>/infer")
def infer(model_id: int):
    args = request.args  # a missing key costs MultiDict.get an exception (BadRequestKeyError) to make
    version = (args.get("version") or None) if "version" in args else None
    model = inference.admit(model_id, version, caller())  # rate limit, scope
    release = enter_inference()
    try:
        response = _forward_inference(model)
    except BaseException:
        release()
        raise
    if response.is_streamed:
        response.call_on_close(release)  # a streamed answer stays in flight until it is sent
    else:
        release()
    return response


# The model's answer is served from our origin: it must never be sniffed into HTML or run script here.
MODEL_ANSWER_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "X-Content-Type-Options": "nosniff",
}


def _forward_inference(model: ModelView) -> Response:
    request_id = g.request_id
    body = request.get_data(cache=False)
    query = urlencode([(k, v) for k, v in request.args.items(multi=True) if k != "version"])
    result = inference.infer(model, body, request.headers, request_id, query)
    headers = dict(result.headers)
    headers.update(
        {
            "X-Cold-Start": "true" if result.cold else "false",
            "X-Start-Wait-Ms": str(round(result.waited_s * 1000)),
            "X-Request-ID": request_id,
            "X-Model-Id": str(result.model_id),
            "X-Model-Version": result.version,
            **MODEL_ANSWER_HEADERS,
        }
    )
    content_type = headers.pop("Content-Type", "application/octet-stream")
    payload = result.body if result.stream is None else result.stream
    return Response(payload, status=result.status, headers=headers, content_type=content_type, direct_passthrough=True)


@bp.post("/models/<int:model_id>/stop")
def stop_model(model_id: int):
    registry.get_model(model_id, visible_to=caller())  # 404 for unknown, deleted or others' models
    model = lifecycle.stop(model_id)
    return jsonify(model_to_dict(model, _idle_default()))
