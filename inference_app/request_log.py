"""One log line per request, with the request id that is also returned (and forwarded to models)."""

from __future__ import annotations

import logging
import time

from flask import Flask, g, request

from .logs import one_line
from .metrics import HTTP_REQUESTS, labelled
from .services.inference import request_id_from

logger = logging.getLogger("inference_app.requests")
QUIET = {"/healthz", "/metrics"}


def init_app(app: Flask) -> None:
    @app.before_request
    def stamp() -> None:
        g.request_began = time.monotonic()
        g.request_id = request_id_from(request.headers.get("X-Request-ID"))

    @app.after_request
    def record(response):
        # the proxies (request, g) resolved once: this runs on every request
        req, ctx_g, status = request._get_current_object(), g._get_current_object(), response.status_code
        request_id = ctx_g.get("request_id") or request_id_from(None)
        headers = response.headers
        if "X-Request-ID" not in headers:
            headers.add("X-Request-ID", request_id)
        rule = req.url_rule
        labelled(HTTP_REQUESTS, rule.rule if rule is not None else "unmatched", str(status)).inc()
        path = req.path
        if path not in QUIET:
            now = time.monotonic()
            took = (now - ctx_g.get("request_began", now)) * 1000
            model_id = (req.view_args or {}).get("model_id")
            method, path = one_line(req.method[:16]), one_line(path[:2048])  # caller-controlled
            logger.info(
                "%s %s %s %.1fms",
                method,
                path,
                status,
                took,
                extra={
                    "request_id": request_id,
                    "status": status,
                    "duration_ms": round(took, 1),
                    "model_id": model_id,
                    "cold_start": headers.get("X-Cold-Start"),
                    "method": method,
                    "path": path,
                },
            )
        return response
