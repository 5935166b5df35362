"""JSON shapes of the API's resources."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..models import DeadLetter, IngestedEvent, ModelEvent, ServedModel, Status
from ..units import format_memory


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def model_to_dict(model: ServedModel, default_idle_timeout: int) -> dict[str, Any]:
    return {
        "id": model.id,
        "user_id": model.user_id,
        "model_name": model.model_name,
        "version": model.version,
        "image": model.image,
        "port": model.port,
        "health_path": model.health_path,
        "predict_path": model.predict_path,
        "env": model.env or {},
        "memory": format_memory(model.memory_bytes) if model.memory_bytes else None,
        "cpus": model.cpus,
        "idle_timeout_seconds": model.idle_timeout_seconds,
        "metadata": model.meta or {},
        "created_at": iso(model.created_at),
        "updated_at": iso(model.updated_at),
        "status": model.status,
        "status_changed_at": iso(model.status_changed_at),
        "last_error": model.last_error,
        "host_port": model.host_port if model.state is Status.RUNNING else None,
        "container_id": model.container_id,
        "started_at": iso(model.started_at),
        "last_used_at": iso(model.last_used_at),
        "keep_warm": bool(model.keep_warm),
        "idle_deadline": iso(model.idle_deadline(default_idle_timeout)),
        "deleted": model.deleted_at is not None,
    }


def event_to_dict(event: ModelEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "model_id": event.model_id,
        "kind": event.kind,
        "detail": event.detail,
        "duration_ms": event.duration_ms,
        "at": iso(event.at),
    }


def ingested_to_dict(event: IngestedEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "event_id": event.event_id,
        "kind": event.kind,
        "outcome": event.outcome,
        "user_id": event.user_id,
        "model_name": event.model_name,
        "version": event.version,
        "model_id": event.model_id,
        "topic": event.topic,
        "partition": event.partition,
        "offset": event.offset,
        "occurred_at": iso(event.occurred_at),
        "applied_at": iso(event.applied_at),
    }


def dead_letter_to_dict(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "reason": letter.reason,
        "payload": letter.payload,
        "payload_bytes": letter.payload_bytes,
        "received_at": iso(letter.received_at),
    }
