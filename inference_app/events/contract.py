"""The event contract (docs/events.md): decoding one Kafka record into an upload or a deletion.

Any bytes at all decode to an Upload, a Deletion or a Rejected with a reason a person can
act on (the listener dead-letters it and carries on). Nothing PostgreSQL would refuse (NUL,
lone surrogates, NaN, infinities) gets past this step.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..config import Settings
from ..errors import InvalidInput
from ..services.validation import (
    Registration,
    json_safety_problem,
    plain_json_text,
    safe_name,
    validate_registration,
)

UPLOADED = "model.uploaded"
DELETED = "model.deleted"
ENVELOPE = ("event_id", "occurred_at", "event_type")
EVENT_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# An event without occurred_at counts as older than any dated one: it applies where nothing
# dated is known, and never overrides a registration or deletion that carried a time.
UNDATED = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Position:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Upload:
    position: Position
    registration: Registration
    event_id: str | None
    occurred_at: datetime | None
    payload: bytes = field(default=b"", repr=False)  # kept for a dead letter if the database refuses it

    @property
    def order_time(self) -> datetime:
        """The time this event is ordered by against others for the same model."""
        return self.occurred_at or UNDATED


@dataclass(frozen=True)
class Deletion:
    position: Position
    user_id: str
    model_name: str
    version: str | None
    event_id: str | None
    occurred_at: datetime | None
    payload: bytes = field(default=b"", repr=False)

    @property
    def order_time(self) -> datetime:
        return self.occurred_at or UNDATED


@dataclass(frozen=True)
class Rejected:
    position: Position
    reason: str
    payload: bytes


Decoded = Upload | Deletion | Rejected


def decode(position: Position, value: bytes | None, settings: Settings, now: datetime | None = None) -> Decoded:
    """One record's value -> what to do with it; never raises."""
    raw = value or b""
    try:
        return _decode(position, raw, settings, now or datetime.now(UTC))
    except Exception as exc:  # whatever slipped past the checks below still must not stop the stream
        return Rejected(position, f"the event could not be decoded: {exc.__class__.__name__}: {str(exc)[:200]}", raw)


def _decode(position: Position, raw: bytes, settings: Settings, now: datetime) -> Decoded:
    kind = {settings.kafka_topic_uploaded: UPLOADED, settings.kafka_topic_deleted: DELETED}.get(position.topic)
    if kind is None:
        return Rejected(position, f"unknown event type: topic {position.topic!r} is not one this service reads", raw)
    if len(raw) > settings.kafka_max_event_bytes:
        return Rejected(
            position, f"payload of {len(raw)} bytes exceeds the limit of {settings.kafka_max_event_bytes}", raw
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(position, f"payload is not JSON: it is not UTF-8 text (byte {exc.start} is invalid)", raw)
    try:
        data = _JSON.decode(text)
    except RecursionError:
        return Rejected(position, "payload is not JSON this service accepts: it is nested too deeply", raw)
    except ValueError as exc:
        return Rejected(position, f"payload is not JSON: {exc.__class__.__name__}: {str(exc)[:200]}", raw)
    if not isinstance(data, dict):
        return Rejected(position, f"payload must be a JSON object, got {type(data).__name__}", raw)
    problem = None if plain_json_text(text) else json_safety_problem(data)
    if problem:
        return Rejected(position, f"payload refused: {problem}", raw)
    try:
        declared = data.get("event_type")
        if declared is not None and declared != kind:
            raise InvalidInput(
                f"unknown event type {str(declared)[:64]!r} on topic {position.topic!r}", field="event_type"
            )
        event_id = _event_id(data.get("event_id"))
        occurred_at = _timestamp(data.get("occurred_at"), now, settings.event_max_future_skew_seconds)
        body = {k: v for k, v in data.items() if k not in ENVELOPE}
        if kind == UPLOADED:
            registration = validate_registration(body, settings, keep_unknown=True, json_text=text)
            return Upload(position, registration, event_id, occurred_at, raw)
        return Deletion(
            position,
            safe_name("user_id", body.get("user_id")),
            safe_name("model_name", body.get("model_name")),
            safe_name("version", body.get("version"), required=False) or None,
            event_id,
            occurred_at,
            raw,
        )
    except InvalidInput as exc:
        return Rejected(position, exc.message, raw)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (NaN and Infinity are refused)")


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]} is too large for a JSON number this service stores")
    return number


_JSON = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _event_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not EVENT_ID.fullmatch(value):
        raise InvalidInput("event_id must be a string of 1-128 letters, digits or ._:@/+=-", field="event_id")
    return value


def _timestamp(value: Any, now: datetime, max_skew_seconds: int) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("occurred_at must be an ISO 8601 timestamp string", field="occurred_at")
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"occurred_at is not an ISO 8601 timestamp: {value[:64]!r}", field="occurred_at") from None
    stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    # A time in the future would freeze the model against every later event until then.
    if stamp - now > timedelta(seconds=max_skew_seconds):
        raise InvalidInput(
            f"occurred_at {value[:64]} is more than {max_skew_seconds} s ahead of this service's clock"
            " (EVENT_MAX_FUTURE_SKEW_SECONDS)",
            field="occurred_at",
        )
    return stamp
