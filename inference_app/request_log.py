"""One log line per request, with the request id that is also returned (and forwarded to models)."""

from __future__ import annotations

import logging
import time

from flask import Flask, g, request

from .logs import one_line
from .metrics import HTTP_REQUESTS
from .services.inference import request_id_from

logger = logging.getLogger("inference_app.requests")
QUIET = {"/healthz", "/metrics"}


def init_app(app: Flask) -> None:
    @app.before_request
    def stamp() -> None:
        g.request_id = request_id_from(request.headers.get("X-Request-ID"))
        g.request_began = time.monotonic()

    @app.after_request
    def record(response):
        request_id = getattr(g, "request_id", None) or request_id_from(None)
        response.headers.setdefault("X-Request-ID", request_id)
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        HTTP_REQUESTS.labels(route, str(response.status_code)).inc()
        if request.path not in QUIET:
            took = (time.monotonic() - getattr(g, "request_began", time.monotonic())) * 1000
            model_id = (request.view_args or {}).get("model_id")
            method, path = one_line(request.method[:16]), one_line(request.path[:2048])  # caller-controlled
            logger.info(
                "%s %s %s %.1fms",
                method,
                path,
                response.status_code,
                took,
                extra={
                    "request_id": request_id,
                    "status": response.status_code,
                    "duration_ms": round(took, 1),
                    "model_id": model_id,
                    "cold_start": response.headers.get("X-Cold-Start"),
                    "method": method,
                    "path": path,
                },
            )
        return response
