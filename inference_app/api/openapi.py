"""The OpenAPI 3 description of the JSON API, served at /api/openapi.json and /api/docs."""

from __future__ import annotations

from flask import jsonify, render_template

from ..models import EventKind, Status
from ..services.validation import FIELDS
from . import bp

NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}},
        }
    },
}
REGISTRATION = {
    "type": "object",
    "required": ["user_id", "model_name", "image"],
    "additionalProperties": False,
    "properties": {
        "user_id": {**NAME, "maxLength": 64},
        "model_name": {**NAME, "maxLength": 128},
        "version": {**NAME, "maxLength": 64},
        "image": {"type": "string", "maxLength": 512, "example": "inference-examples/iris:1"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "health_path": {"type": "string", "pattern": "^/", "maxLength": 512},
        "predict_path": {"type": "string", "pattern": "^/", "maxLength": 512},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
        "memory": {"oneOf": [{"type": "string", "example": "512m"}, {"type": "integer"}]},
        "cpus": {"type": "number", "exclusiveMinimum": 0},
        "idle_timeout_seconds": {"type": "integer", "minimum": 1},
        "min_replicas": {
            "type": "integer",
            "minimum": 0,
            "default": 0,
            "description": "Replicas kept while it runs; 0 lets idle shutdown stop it. At most max_replicas",
        },
        "max_replicas": {
            "type": "integer",
            "minimum": 1,
            "default": 1,
            "description": "Replicas the autoscaler may run; at most MAX_REPLICAS_PER_MODEL",
        },
        "target_concurrency": {
            "type": "integer",
            "minimum": 1,
            "default": 4,
            "description": "Requests in flight per ready replica above which another replica is added",
        },
        "metadata": {"type": "object"},
    },
}
assert set(REGISTRATION["properties"]) == set(FIELDS)  # one contract: the validator's fields
MODEL = {
    "type": "object",
    "properties": {
        **{k: v for k, v in REGISTRATION["properties"].items() if k != "memory"},
        "id": {"type": "integer"},
        "memory": {"type": ["string", "null"]},
        "status": {"type": "string", "enum": [s.value for s in Status]},
        "last_error": {"type": ["string", "null"]},
        "host_port": {"type": ["integer", "null"]},
        "last_used_at": {"type": ["string", "null"], "format": "date-time"},
        "idle_deadline": {"type": ["string", "null"], "format": "date-time"},
        "keep_warm": {"type": "boolean"},
        "replicas": {
            "type": "object",
            "description": "The model's replicas by state, and how many the autoscaler aims for",
            "properties": {
                "ready": {"type": "integer"},
                "starting": {"type": "integer"},
                "draining": {"type": "integer"},
                "desired": {"type": "integer"},
            },
        },
        "scale_note": {
            "type": ["string", "null"],
            "description": "Why it runs fewer replicas than its load asks for (at the cap), else null",
        },
    },
}
MODEL_ID = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    described = {
        400: "Bad input; details.field names the field",
        401: "Missing, malformed, unknown or revoked token",
        403: "The token may not do this",
        404: "Unknown model (or another owner's)",
        413: "Body larger than MAX_REQUEST_BYTES",
        415: "A write needs Content-Type: application/json (infer: see its description)",
        429: "Rate limited, or too many inferences in flight for this token; see Retry-After",
        502: "The container failed, or its image is missing",
        503: "Docker engine unreachable, no capacity, or too many waiting; see Retry-After",
        504: "Start or inference timeout",
    }
    return {str(code): _json({"$ref": "#/components/schemas/Error"}, described[code]) for code in codes}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def document() -> dict:
    model_ref = {"$ref": "#/components/schemas/Model"}
    events = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object"}}}}
    limit = _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "How many, newest first")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Inference service",
            "version": "1",
            "description": "Registers models (container images) and serves inference, starting containers on demand.",
        },
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR, "Registration": REGISTRATION, "Model": MODEL},
        },
        "paths": {
            "/api/models": {
                "get": {
                    "summary": "List models (the caller's, or all for an admin)",
                    "parameters": [
                        _query("user_id", {**NAME, "maxLength": 64}, "Only this owner's models"),
                        _query("status", {"type": "string", "enum": [s.value for s in Status]}, "Only this status"),
                        _query("q", {"type": "string", "maxLength": 128}, "Model name starts with"),
                        _query("page", {"type": "integer", "minimum": 1, "maximum": 1000000}, "Page, from 1"),
                        _query("per_page", {"type": "integer", "minimum": 1, "maximum": 100}, "Page size"),
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "items": {"type": "array", "items": model_ref},
                                    "total": {"type": "integer"},
                                    "page": {"type": "integer"},
                                    "per_page": {"type": "integer"},
                                },
                            },
                            "A page of models",
                        ),
                        **_errors(400, 401),
                    },
                },
                "post": {
                    "summary": "Register a model, or update it (same user_id, model_name and version)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Registration"}}},
                    },
                    "responses": {
                        "201": _json(model_ref, "Registered"),
                        "200": _json(model_ref, "Updated"),
                        **_errors(400, 401, 403, 413, 415),
                    },
                },
            },
            "/api/models/{model_id}": {
                "get": {
                    "summary": "One model with its live status",
                    "parameters": [MODEL_ID],
                    "responses": {"200": _json(model_ref, "The model"), **_errors(401, 404)},
                }
            },
            "/api/models/{model_id}/start": {
                "post": {
                    "summary": "Start the model's container and wait until it is ready (or not: wait=false)",
                    "parameters": [MODEL_ID, _query("wait", {"type": "boolean"}, "false: answer 202 at once")],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {"keep_warm": {"type": "boolean"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(model_ref, "Running"),
                        "202": _json(model_ref, "Starting"),
                        **_errors(400, 401, 404, 415, 429, 502, 503, 504),
                    },
                }
            },
            "/api/models/{model_id}/infer": {
                "post": {
                    "summary": "Forward an inference request to the model (starting it if needed)",
                    "description": "The body and Content-Type (JSON or any other) go to the model's predict_path; the model's status, "
                    "body and content type come back, with X-Cold-Start, X-Start-Wait-Ms and X-Request-ID, and with "
                    "`Content-Security-Policy: sandbox; default-src 'none'` and `X-Content-Type-Options: nosniff`. "
                    "text/plain and form bodies (which any web page can send) need an X-Requested-With header.",
                    "parameters": [
                        MODEL_ID,
                        _query("version", {**NAME, "maxLength": 64}, "This version, not the newest"),
                    ],
                    "requestBody": {"required": False, "content": {"application/json": {"schema": {}}}},
                    "responses": {
                        "200": {"description": "The model's answer (any status the model gives is passed on)"},
                        "default": {"description": "The model's own status and body, passed on"},
                        **_errors(401, 404, 413, 415, 429, 502, 503, 504),
                    },
                }
            },
            "/api/models/{model_id}/stop": {
                "post": {
                    "summary": "Stop and remove the container (idempotent)",
                    "parameters": [MODEL_ID],
                    "responses": {"200": _json(model_ref, "Stopped"), **_errors(401, 404, 415, 503)},
                }
            },
            "/api/models/{model_id}/lifecycle-events": {
                "get": {
                    "summary": "Starts, stops, evictions and failures of one model",
                    "parameters": [MODEL_ID, limit],
                    "responses": {"200": _json(events, "Newest first"), **_errors(400, 401, 404)},
                }
            },
            "/api/lifecycle-events": {
                "get": {
                    "summary": "Starts, stops, evictions and failures (the caller's models, or all for an admin)",
                    "parameters": [
                        limit,
                        _query(
                            "kind",
                            {"type": "string", "enum": sorted(v for k, v in vars(EventKind).items() if k.isupper())},
                            "Only this kind",
                        ),
                        _query("model_id", {"type": "integer", "minimum": 0, "maximum": 1000000}, "Only this model"),
                    ],
                    "responses": {"200": _json(events, "Newest first"), **_errors(400, 401)},
                }
            },
            "/api/events": {
                "get": {
                    "summary": "Recent Kafka events and their outcome (admins)",
                    "parameters": [limit],
                    "responses": {"200": _json(events, "Newest first"), **_errors(400, 401, 403)},
                }
            },
            "/api/events/dead-letters": {
                "get": {
                    "summary": "Kafka events that could not be applied, with reasons (admins)",
                    "parameters": [limit],
                    "responses": {"200": _json(events, "Newest first"), **_errors(400, 401, 403)},
                }
            },
            "/api/openapi.json": {
                "get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3"}}}
            },
            "/api/docs": {
                "get": {
                    "summary": "This document as a page",
                    "security": [],
                    "responses": {"200": {"description": "HTML"}},
                }
            },
            "/healthz": {
                "get": {"summary": "The process is alive", "security": [], "responses": {"200": {"description": "ok"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Database and Docker engine reachable; the background runner and Kafka listener state",
                    "security": [],
                    "responses": {
                        "200": {"description": "Ready"},
                        "503": {"description": "Not ready, with the reason"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics; with METRICS_TOKEN set, only for 'Authorization: Bearer <METRICS_TOKEN>'",
                    "security": [],
                    "responses": {
                        "200": {"description": "Text exposition"},
                        "401": {"description": "METRICS_TOKEN is set and was not sent"},
                    },
                }
            },
        },
    }


@bp.get("/openapi.json")
def openapi_document():
    return jsonify(document())


@bp.get("/docs")
def openapi_page():
    spec = document()
    return render_template("api_docs.html", spec=spec)
