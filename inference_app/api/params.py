"""Parsing query strings and bodies into typed values, with errors that name the parameter."""

from __future__ import annotations

from typing import Any

from flask import request

from ..errors import InvalidInput

MAX_JSON_DEPTH = 32


def int_arg(name: str, default: int, low: int = 1, high: int = 1_000_000) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise InvalidInput(f"{name} must be a whole number, got {raw[:32]!r}", field=name)
    value = int(raw)
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}, got {value}", field=name)
    return value


def bool_arg(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise InvalidInput(f"{name} must be true or false, got {raw[:32]!r}", field=name)


def json_body(required: bool = True) -> Any:
    """The request's JSON body; InvalidInput when it is missing, malformed or too deep."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if required:
            raise InvalidInput("the request body must be a JSON object")
        return {}
    data = request.get_json(silent=True, force=True)
    if data is None:
        raise InvalidInput("the request body is not valid JSON")
    if _depth(data) > MAX_JSON_DEPTH:
        raise InvalidInput(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    return data


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level
