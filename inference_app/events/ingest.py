"""Applying a batch of decoded events in one transaction, idempotently.

Duplicates are recognised by event_id (seen before, or twice in the batch); events without
one are keyed by user_id+model_name+version, whose upsert is idempotent by nature; an event
older than the data it would replace is recorded as stale and changes nothing. Positions
(topic, partition, offset) are unique, so a batch delivered again after a crash records nothing twice.
A batch the database refuses is split until the refused events are found; they are dead-lettered.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field

import psycopg2
from sqlalchemy import select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from ..coordination import insert_for, is_postgres, lock_kafka_partitions
from ..extensions import db
from ..models import DeadLetter, IngestedEvent, utcnow
from ..services import registry
from .contract import Decoded, Deletion, Rejected, Upload
from .uploads import BulkUploads, RowUploads, audit_row

logger = logging.getLogger(__name__)

PAYLOAD_KEEP = 4096  # characters of a dead letter's stored payload
ENCODED = "base64:"  # prefix of a payload stored encoded (binary, not UTF-8, NUL-bearing)
REASON_KEEP = 2000


@dataclass
class BatchResult:
    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    dead_lettered: int = 0
    deleted_model_ids: list[int] = field(default_factory=list)

    def add(self, other: BatchResult) -> BatchResult:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.stale += other.stale
        self.dead_lettered += other.dead_lettered
        self.deleted_model_ids += other.deleted_model_ids
        return self


def apply_events(events: list[Decoded]) -> BatchResult:
    """apply_batch; a batch the database refuses is split in halves until the refused events
    are found, and those are dead-lettered, so one record can never stall the stream.

    Anything else (the database unreachable, a deadlock) is raised: the listener retries
    the whole batch from the committed offsets.
    """
    try:
        return apply_batch(events)
    except (SQLAlchemyError, psycopg2.Error, ValueError) as exc:
        db.session.rollback()
        if not refused(exc):
            raise
        if len(events) > 1:
            middle = len(events) // 2
            return apply_events(events[:middle]).add(apply_events(events[middle:]))
        [event] = events
        if isinstance(event, Rejected):
            # even its dead letter was refused: keep the position and reason, not the payload
            return apply_batch([Rejected(event.position, f"{event.reason} (payload not stored: {describe(exc)})", b"")])
        logger.warning(
            "the database refused %s[%s]@%s; dead-lettering it: %s",
            event.position.topic,
            event.position.partition,
            event.position.offset,
            describe(exc),
        )
        return apply_events(
            [Rejected(event.position, f"the database refused this event: {describe(exc)}", event.payload)]
        )


def refused(exc: Exception) -> bool:
    """Whether the database (or its driver) refused the data, as opposed to being unavailable."""
    if isinstance(exc, (DataError, IntegrityError, ValueError)):  # psycopg2 raises ValueError for NUL in text
        return True
    if isinstance(exc, (psycopg2.DataError, psycopg2.IntegrityError)):  # from a COPY (uploads.BulkUploads)
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)  # a value the driver cannot send


def describe(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"{cause.__class__.__name__}: {first_line[:300]}"


def apply_batch(events: list[Decoded]) -> BatchResult:
    """Apply the events in order and commit; the caller commits Kafka offsets only after this."""
    lock_kafka_partitions({(e.position.topic, e.position.partition) for e in events})
    result = BatchResult()
    letters: list[dict] = []
    live: list[Upload | Deletion] = []
    in_batch: set[str] = set()
    for event in events:
        if isinstance(event, Rejected):
            result.dead_lettered += 1
            letters.append(_letter(event))
        elif event.event_id and event.event_id in in_batch:
            result.duplicates += 1
        else:
            if event.event_id:
                in_batch.add(event.event_id)
            live.append(event)
    uploads = [e for e in live if isinstance(e, Upload)]
    staged = (BulkUploads if is_postgres() else RowUploads)(uploads)
    recorded = staged.recorded()  # (uploads, by index) seen before this batch
    recorded_ids = _recorded_deletions([e for e in live if isinstance(e, Deletion)])
    segment: list[int] = []  # the uploads since the last deletion, by index

    def flush_uploads() -> None:
        if segment:
            applied, stale = staged.apply(segment)
            result.applied += applied
            result.stale += stale
            segment.clear()

    index = 0
    for event in live:
        if isinstance(event, Upload):
            if index in recorded:
                result.duplicates += 1
            else:
                segment.append(index)
            index += 1
            continue
        if event.event_id in recorded_ids:
            result.duplicates += 1
            continue
        flush_uploads()  # a deletion applies after the uploads before it
        deleted = registry.mark_deleted(event.user_id, event.model_name, event.version, event.order_time)
        result.deleted_model_ids += deleted
        result.applied += 1
        row = audit_row(
            event,
            "model.deleted",
            "applied",
            event.user_id,
            event.model_name,
            event.version,
            deleted[0] if deleted else None,
        )
        _insert_ignoring_repeats(IngestedEvent, [row])
    flush_uploads()
    _insert_ignoring_repeats(DeadLetter, letters)
    db.session.commit()
    return result


def _recorded_deletions(deletions: list[Deletion]) -> set[str]:
    ids = [e.event_id for e in deletions if e.event_id]
    if not ids:
        return set()
    return set(db.session.scalars(select(IngestedEvent.event_id).where(IngestedEvent.event_id.in_(ids))))


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
        "reason": storable_text(event.reason)[:REASON_KEEP],
        "payload": stored_payload(event.payload),
        "payload_bytes": len(event.payload),
        "received_at": utcnow(),
    }


def stored_payload(raw: bytes) -> str:
    """A dead letter's payload as PostgreSQL text can hold it, at most PAYLOAD_KEEP characters.

    UTF-8 text without NUL is kept as it is (truncated); anything else is stored as
    'base64:' followed by the base64 of its first bytes, so no byte is lost or mistaken.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text and not text.startswith(ENCODED):
        return text[:PAYLOAD_KEEP]
    keep = (PAYLOAD_KEEP - len(ENCODED)) // 4 * 3
    return ENCODED + base64.b64encode(raw[:keep]).decode("ascii")


def storable_text(text: str) -> str:
    """Text with NUL and lone surrogates escaped, so PostgreSQL text accepts it."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _insert_ignoring_repeats(model, rows: list[dict]) -> None:
    if not rows:
        return
    statement = insert_for(model.__table__).on_conflict_do_nothing()  # a position or event_id already recorded
    db.session.execute(statement, rows)
