"""Applying a batch of decoded events in one transaction, idempotently.

Duplicates are recognised by event_id (seen before, or twice in the batch); events without
one are keyed by user_id+model_name+version, whose upsert is idempotent by nature; an event
older than the data it would replace is recorded as stale and changes nothing. Positions
(topic, partition, offset) are unique, so a batch delivered again after a crash records nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select

from ..coordination import insert_for
from ..extensions import db
from ..models import DeadLetter, IngestedEvent, utcnow
from ..services import registry
from .contract import Decoded, Deletion, Rejected, Upload

logger = logging.getLogger(__name__)

PAYLOAD_KEEP = 4096


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    dead_lettered: int = 0
    deleted_model_ids: list[int] = field(default_factory=list)


def apply_batch(events: list[Decoded]) -> BatchResult:
    """Apply the events in order and commit; the caller commits Kafka offsets only after this."""
    result = BatchResult()
    audit: list[dict] = []
    letters: list[dict] = []
    ids = [e.event_id for e in events if not isinstance(e, Rejected) and e.event_id]
    seen = (
        set(db.session.scalars(select(IngestedEvent.event_id).where(IngestedEvent.event_id.in_(ids)))) if ids else set()
    )
    pending: list[Upload] = []

    def flush_uploads() -> None:
        if not pending:
            return
        # stale (model_id None): the registry held data from a newer event, maybe earlier in this batch
        model_ids = registry.upsert_registrations([registry.Versioned(u.registration, u.occurred_at) for u in pending])
        for upload, model_id in zip(pending, model_ids, strict=True):
            outcome = "applied" if model_id is not None else "stale"
            result.applied += outcome == "applied"
            result.stale += outcome == "stale"
            reg = upload.registration
            audit.append(_audit(upload, "model.uploaded", outcome, reg.user_id, reg.model_name, reg.version, model_id))
        pending.clear()

    for event in events:
        if isinstance(event, Rejected):
            result.dead_lettered += 1
            letters.append(_letter(event))
            continue
        if event.event_id and event.event_id in seen:
            result.duplicates += 1
            continue
        if event.event_id:
            seen.add(event.event_id)
        if isinstance(event, Upload):
            pending.append(event)
            continue
        flush_uploads()  # a deletion applies after the uploads before it
        deleted = registry.mark_deleted(event.user_id, event.model_name, event.version, event.occurred_at)
        result.deleted_model_ids += deleted
        result.applied += 1
        audit.append(
            _audit(
                event,
                "model.deleted",
                "applied",
                event.user_id,
                event.model_name,
                event.version,
                deleted[0] if deleted else None,
            )
        )
    flush_uploads()
    _insert_ignoring_repeats(IngestedEvent, audit)
    _insert_ignoring_repeats(DeadLetter, letters)
    db.session.commit()
    return result


def _audit(event: Upload | Deletion, kind: str, outcome: str, user_id, model_name, version, model_id) -> dict:
    return {
        "event_id": event.event_id,
        "kind": kind,
        "outcome": outcome,
        "user_id": user_id,
        "model_name": model_name,
        "version": version,
        "model_id": model_id,
        "topic": event.position.topic,
        "partition": event.position.partition,
        "offset": event.position.offset,
        "occurred_at": event.occurred_at,
        "applied_at": utcnow(),
    }


def _letter(event: Rejected) -> dict:
    logger.warning(
        "dead-lettered %s[%s]@%s: %s",
        event.position.topic,
        event.position.partition,
        event.position.offset,
        event.reason,
    )
    return {
        "topic": event.position.topic,
        "partition": event.position.partition,
        "offset": event.position.offset,
        "reason": event.reason[:2000],
        "payload": event.payload[:PAYLOAD_KEEP].decode("utf-8", errors="replace"),
        "payload_bytes": len(event.payload),
        "received_at": utcnow(),
    }


def _insert_ignoring_repeats(model, rows: list[dict]) -> None:
    if not rows:
        return
    statement = insert_for(model.__table__).on_conflict_do_nothing()  # a position or event_id already recorded
    db.session.execute(statement, rows)
