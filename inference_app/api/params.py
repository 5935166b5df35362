"""Parsing query strings and bodies into typed values, with errors that name the parameter."""

from __future__ import annotations

import json
import math
from typing import Any

from flask import request

from ..errors import InvalidInput

MAX_JSON_DEPTH = 32
MAX_DIGITS = 18  # enough for any page, limit or id; int() of a longer string is never needed


def int_arg(name: str, default: int, low: int = 1, high: int = 1_000_000) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    value = whole_number(name, raw)
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}, got {value}", field=name)
    return value


def whole_number(name: str, raw: str) -> int:
    """An ASCII decimal number (not '٣', '²' or 5,000 digits); InvalidInput naming `name` otherwise."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= MAX_DIGITS):
        raise InvalidInput(f"{name} must be a whole number, got {raw[:32]!r}", field=name)
    return int(raw)


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


def refuse_nul_in_query() -> None:
    """A NUL in a query parameter is never meaningful, and PostgreSQL refuses it in text."""
    for key, value in request.args.items(multi=True):
        if "\x00" in key or "\x00" in value:
            raise InvalidInput(f"query parameter {key[:32]!r} contains a NUL character", field=key[:64])


def json_body(required: bool = True) -> Any:
    """The request's JSON body; InvalidInput when it is missing, malformed, too deep or not plain JSON."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if required:
            raise InvalidInput("the request body must be a JSON object")
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidInput(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, and int() of more than 4,300 digits
        message = str(exc) if isinstance(exc, _NotPlainJson) else "the request body is not valid JSON"
        raise InvalidInput(message) from None
    _check(data)
    return data


class _NotPlainJson(ValueError):
    """NaN, Infinity or a number too large for a float: JSON has no such values."""


def _refuse_constant(name: str) -> Any:
    raise _NotPlainJson(f"the JSON body contains {name}, which JSON does not allow; send a finite number")


def _finite_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise _NotPlainJson(f"the JSON body contains the number {raw[:32]}, which is too large")
    return value


def _check(value: Any, level: int = 1) -> None:
    """Depth, and strings PostgreSQL cannot store (NUL, lone surrogates from \\ud800 escapes)."""
    if level > MAX_JSON_DEPTH:
        raise InvalidInput(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check(item, level + 1)
    elif isinstance(value, list):
        for item in value:
            _check(item, level + 1)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise InvalidInput("the JSON body contains a NUL character (\\u0000) in a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("the JSON body contains an unpaired surrogate (e.g. \\ud800) in a string") from None
