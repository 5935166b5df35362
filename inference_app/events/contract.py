"""The event contract (docs/events.md): decoding one Kafka record into an upload or a deletion.

Anything that does not fit becomes a Rejected with a reason a person can act on; the
listener dead-letters it and carries on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..config import Settings
from ..errors import InvalidInput
from ..services.validation import Registration, safe_name, validate_registration

UPLOADED = "model.uploaded"
DELETED = "model.deleted"
ENVELOPE = ("event_id", "occurred_at", "event_type")
EVENT_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


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


@dataclass(frozen=True)
class Deletion:
    position: Position
    user_id: str
    model_name: str
    version: str | None
    event_id: str | None
    occurred_at: datetime | None


@dataclass(frozen=True)
class Rejected:
    position: Position
    reason: str
    payload: bytes


Decoded = Upload | Deletion | Rejected


def decode(position: Position, value: bytes | None, settings: Settings) -> Decoded:
    """One record's value -> what to do with it."""
    raw = value or b""
    kind = {settings.kafka_topic_uploaded: UPLOADED, settings.kafka_topic_deleted: DELETED}.get(position.topic)
    if kind is None:
        return Rejected(position, f"unknown event type: topic {position.topic!r} is not one this service reads", raw)
    if len(raw) > settings.kafka_max_event_bytes:
        return Rejected(
            position, f"payload of {len(raw)} bytes exceeds the limit of {settings.kafka_max_event_bytes}", raw
        )
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return Rejected(position, f"payload is not JSON: {exc.__class__.__name__}: {str(exc)[:200]}", raw)
    if not isinstance(data, dict):
        return Rejected(position, f"payload must be a JSON object, got {type(data).__name__}", raw)
    try:
        declared = data.get("event_type")
        if declared is not None and declared != kind:
            raise InvalidInput(
                f"unknown event type {str(declared)[:64]!r} on topic {position.topic!r}", field="event_type"
            )
        event_id = _event_id(data.get("event_id"))
        occurred_at = _timestamp(data.get("occurred_at"))
        body = {k: v for k, v in data.items() if k not in ENVELOPE}
        if kind == UPLOADED:
            return Upload(position, validate_registration(body, settings, keep_unknown=True), event_id, occurred_at)
        return Deletion(
            position,
            safe_name("user_id", body.get("user_id")),
            safe_name("model_name", body.get("model_name")),
            safe_name("version", body.get("version"), required=False) or None,
            event_id,
            occurred_at,
        )
    except InvalidInput as exc:
        return Rejected(position, exc.message, raw)


def _event_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not EVENT_ID.fullmatch(value):
        raise InvalidInput("event_id must be a string of 1-128 letters, digits or ._:@/+=-", field="event_id")
    return value


def _timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("occurred_at must be an ISO 8601 timestamp string", field="occurred_at")
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"occurred_at is not an ISO 8601 timestamp: {value[:64]!r}", field="occurred_at") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
