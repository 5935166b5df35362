"""JSON shapes of the API's resources: each a list of fields, built by one function."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..models import DeadLetter, IngestedEvent, ModelEvent, ReplicaStatus, ServedModel, Status
from ..units import format_memory

# Field names in the order a client sees them.
MODEL_FIELDS = tuple(
    "id user_id model_name version image port health_path predict_path env memory cpus idle_timeout_seconds"
    " min_replicas max_replicas target_concurrency metadata created_at updated_at status status_changed_at"
    " last_error host_port container_id started_at last_used_at keep_warm idle_deadline replicas scale_note"
    " deleted".split()
)
EVENT_FIELDS = tuple("id model_id kind detail duration_ms at".split())
INGESTED_FIELDS = tuple(
    "id event_id kind outcome user_id model_name version model_id topic partition offset occurred_at applied_at".split()
)
DEAD_LETTER_FIELDS = tuple("id topic partition offset reason payload payload_bytes received_at".split())


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def record(row: object, names: tuple[str, ...], computed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The named fields of a row, in order: a computed value where given, else the attribute (times as ISO 8601)."""
    computed = computed or {}
    shape = {}
    for name in names:
        value = computed[name] if name in computed else getattr(row, name)
        shape[name] = iso(value) if isinstance(value, datetime) else value
    return shape


def model_to_dict(model: ServedModel, default_idle_timeout: int) -> dict[str, Any]:
    computed = {
        "env": model.env or {},
        "memory": format_memory(model.memory_bytes) if model.memory_bytes else None,
        "metadata": model.meta or {},
        "host_port": model.host_port if model.state is Status.RUNNING else None,
        "keep_warm": bool(model.keep_warm),
        "idle_deadline": model.idle_deadline(default_idle_timeout),
        "replicas": replica_counts(model),
        "deleted": model.deleted_at is not None,
    }
    return record(model, MODEL_FIELDS, computed)


def replica_counts(model: ServedModel) -> dict[str, int]:
    """Replicas by state, and the number the autoscaler aims for."""
    counts = {state.value: 0 for state in ReplicaStatus}
    if model.state is Status.RUNNING:
        for replica in model.replicas:
            counts[replica.status] += 1
    return {**counts, "desired": model.desired_replicas or 0}


def event_to_dict(event: ModelEvent) -> dict[str, Any]:
    return record(event, EVENT_FIELDS)


def ingested_to_dict(event: IngestedEvent) -> dict[str, Any]:
    return record(event, INGESTED_FIELDS)


def dead_letter_to_dict(letter: DeadLetter) -> dict[str, Any]:
    return record(letter, DEAD_LETTER_FIELDS)
