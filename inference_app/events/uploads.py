"""Applying a batch's uploads to the registry and recording each in the audit log.

On PostgreSQL in bulk: the uploads go to a temporary table in one COPY, one statement per
round upserts the models (registry.upsert_by_identity, under the staleness rule) and notes which
uploads applied, and one more writes a segment's audit rows. Sent as parameters of multi-row
INSERTs, the same rows cost several times more CPU, in this process and in PostgreSQL, than
applying them. Elsewhere (SQLite) row by row.

Either way an upload is judged against the ones before it for the same model: several uploads for
one identity go in successive rounds, as registry.upsert_registrations does.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Sequence
from functools import cache

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    Select,
    Table,
    Text,
    bindparam,
    case,
    func,
    literal,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from ..coordination import insert_for
from ..extensions import db
from ..models import IngestedEvent, ServedModel, utcnow
from ..services import registry
from ..services.lifecycle.transitions import NEW_MODEL
from .contract import UNDATED, Upload

UPLOADED = "model.uploaded"
COPY_CHUNK = 1 << 20  # bytes psycopg2 sends per CopyData message
NULL = "\\N"  # in COPY's text format
NUL_REFUSED = "A string literal cannot contain NUL (0x00) characters."  # psycopg2's own words

# The staging table lives as long as the database session; its rows as long as the transaction.
STAGED = Table(
    "ingest_staged_uploads",
    MetaData(),
    Column("seq", Integer),  # the upload's index in the batch
    Column("round", Integer),  # how many uploads for the same model come before it in the batch
    Column("event_id", Text),
    Column("topic", Text),
    Column("partition", Integer),
    Column("offset", BigInteger),
    Column("occurred_at", DateTime(timezone=True)),
    Column("order_time", DateTime(timezone=True)),
    Column("user_id", Text),
    Column("model_name", Text),
    Column("version", Text),
    Column("image", Text),
    Column("port", Integer),
    Column("health_path", Text),
    Column("predict_path", Text),
    Column("env", JSON),
    Column("memory_bytes", BigInteger),
    Column("cpus", Float),
    Column("idle_timeout_seconds", Integer),
    Column("min_replicas", Integer),
    Column("max_replicas", Integer),
    Column("target_concurrency", Integer),
    Column("metadata", JSON),
    Column("model_id", Integer),  # the model the upload wrote; NULL: not applied (yet), or stale
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)
AUDITED = (
    "event_id",
    "kind",
    "outcome",
    "user_id",
    "model_name",
    "version",
    "model_id",
    "topic",
    "partition",
    "offset",
    "occurred_at",
    "applied_at",
)


class BulkUploads:
    """A batch's uploads staged in PostgreSQL, applied segment by segment (between deletions)."""

    def __init__(self, uploads: Sequence[Upload]):
        self.uploads = uploads
        self.rounds = _rounds(uploads)
        if uploads:
            self._stage()

    def recorded(self) -> set[int]:
        """The indexes of uploads whose event_id is recorded already; they are unstaged."""
        if not any(u.event_id for u in self.uploads):
            return set()
        found = {row[0] for row in db.session.execute(_recorded_query())}
        if found:
            db.session.execute(STAGED.delete().where(STAGED.c.seq.in_(found)))
        return found

    def apply(self, indexes: list[int]) -> tuple[int, int]:
        """Apply these uploads (ascending indexes, none recorded) and audit them; (applied, stale)."""
        applied = 0
        now = utcnow()
        span = {"lo": indexes[0], "hi": indexes[-1], "now": now}
        for depth in sorted({self.rounds[i] for i in indexes}):
            applied += db.session.execute(_round_statement(), {**span, "round_no": depth, **_NEW_MODEL_PARAMS}).scalar()
        db.session.execute(_audit_statement(), span)  # in the uploads' order, whatever the rounds
        return applied, len(indexes) - applied

    def _stage(self) -> None:
        db.session.execute(CreateTable(STAGED, if_not_exists=True))
        cursor = db.session.connection().connection.dbapi_connection.cursor()
        try:
            cursor.copy_expert(_copy_sql(), io.BytesIO(_copy_text(self.uploads, self.rounds)), COPY_CHUNK)
            # Without statistics the planner takes a round for one row and joins the audit rows
            # to the upserted models in a nested loop: quadratic, half a second a batch.
            cursor.execute(f"ANALYZE {STAGED.name} (seq, round)")
        finally:
            cursor.close()


class RowUploads:
    """The same, row by row through registry.upsert_registrations (SQLite)."""

    def __init__(self, uploads: Sequence[Upload]):
        self.uploads = uploads

    def recorded(self) -> set[int]:
        ids = [u.event_id for u in self.uploads if u.event_id]
        if not ids:
            return set()
        known = set(db.session.scalars(select(IngestedEvent.event_id).where(IngestedEvent.event_id.in_(ids))))
        return {i for i, u in enumerate(self.uploads) if u.event_id in known}

    def apply(self, indexes: list[int]) -> tuple[int, int]:
        batch = [self.uploads[i] for i in indexes]
        model_ids = registry.upsert_registrations([registry.Versioned(u.registration, u.order_time) for u in batch])
        rows = [
            audit_row(u, UPLOADED, "stale" if model_id is None else "applied", *_identity(u), model_id)
            for u, model_id in zip(batch, model_ids, strict=True)
        ]
        db.session.execute(insert_for(IngestedEvent.__table__).on_conflict_do_nothing(), rows)
        applied = sum(model_id is not None for model_id in model_ids)
        return applied, len(batch) - applied


def audit_row(event, kind: str, outcome: str, user_id, model_name, version, model_id) -> dict:
    """An ingested_events row."""
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


def _identity(upload: Upload) -> registry.Identity:
    reg = upload.registration
    return reg.user_id, reg.model_name, reg.version


def _rounds(uploads: Sequence[Upload]) -> list[int]:
    seen: Counter[registry.Identity] = Counter()
    rounds = []
    for upload in uploads:
        identity = _identity(upload)
        rounds.append(seen[identity])
        seen[identity] += 1
    return rounds


def _copy_text(uploads: Sequence[Upload], rounds: list[int]) -> bytes:
    """The uploads as COPY text rows, in STAGED's column order (model_id aside); refuses what PostgreSQL would."""
    lines = []
    undated = UNDATED.isoformat()
    for seq, (upload, depth) in enumerate(zip(uploads, rounds, strict=True)):
        reg, pos = upload.registration, upload.position
        texts = (
            upload.event_id or "",
            pos.topic,
            reg.user_id,
            reg.model_name,
            reg.version,
            reg.image,
            reg.health_path,
            reg.predict_path,
        )
        joined = "\t".join(texts)
        # Validation leaves no tab, line break or backslash in these; should one come anyway, escape them.
        if joined.count("\t") != len(texts) - 1 or "\\" in joined or "\n" in joined or "\r" in joined:
            texts = tuple(_text(text) for text in texts)
        event_id, topic, user_id, model_name, version, image, health_path, predict_path = texts
        occurred = NULL if upload.occurred_at is None else upload.occurred_at.isoformat()
        lines.append(
            f"{seq}\t{depth}\t{event_id or NULL}\t{topic}\t{pos.partition}\t{pos.offset}"
            f"\t{occurred}\t{undated if upload.occurred_at is None else occurred}"
            f"\t{user_id}\t{model_name}\t{version}\t{image}\t{reg.port}\t{health_path}\t{predict_path}"
            f"\t{_json(reg.env)}\t{_number(reg.memory_bytes)}\t{_number(reg.cpus)}"
            f"\t{_number(reg.idle_timeout_seconds)}\t{reg.min_replicas}\t{reg.max_replicas}\t{reg.target_concurrency}"
            f"\t{_json(reg.metadata)}\n"
        )
    text = "".join(lines)
    if "\x00" in text:
        raise ValueError(NUL_REFUSED)
    return text.encode("utf-8")  # lone surrogates: UnicodeEncodeError, a refusal like psycopg2's


def _text(value: str) -> str:
    """A value as COPY's text format writes it."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _json(value) -> str:
    return json.dumps(value).replace("\\", "\\\\") if value else "{}"


def _number(value: float | None) -> str:
    return NULL if value is None else repr(value)


_NEW_MODEL_PARAMS = {f"new_{name}": value for name, value in NEW_MODEL.items()}


@cache
def _copy_sql() -> str:
    quote = postgresql.dialect().identifier_preparer.quote
    columns = ", ".join(quote(c.name) for c in STAGED.c if c.name != "model_id")
    return f"COPY {STAGED.name} ({columns}) FROM STDIN"


@cache
def _recorded_query() -> Select:
    known = IngestedEvent.__table__
    return select(STAGED.c.seq).join(known, known.c.event_id == STAGED.c.event_id)


@cache
def _round_statement() -> Select:
    """One round of a segment: upsert the models, note each staged upload's model; count those applied."""
    staged, models = STAGED, ServedModel.__table__
    span = (staged.c.seq.between(bindparam("lo"), bindparam("hi")), staged.c.round == bindparam("round_no"))
    incoming = select(staged).where(*span).cte("incoming")
    now = bindparam("now", type_=models.c.updated_at.type)
    written = {
        **{name: incoming.c[name] for name in ("user_id", "model_name", "version", *registry.REPLACED)},
        "created_at": now,
        "updated_at": now,
        **{name: bindparam(f"new_{name}", type_=models.c[name].type) for name in NEW_MODEL},
        "status_changed_at": now,
        "deleted_at": literal(None, models.c.deleted_at.type),
        "event_occurred_at": incoming.c.order_time,
    }
    source = select(*(value.label(name) for name, value in written.items()))
    upserted = registry.upsert_by_identity(postgresql.insert(models).from_select(list(written), source))
    upserted = upserted.cte("upserted")
    noted = (
        staged.update()
        .where(
            *span,
            staged.c.user_id == upserted.c.user_id,
            staged.c.model_name == upserted.c.model_name,
            staged.c.version == upserted.c.version,
        )
        .values(model_id=upserted.c.id)
        .returning(staged.c.seq)
        .cte("noted")
    )
    return select(func.count()).select_from(noted)


@cache
def _audit_statement():
    """A segment's audit rows, in the order the uploads came: applied (with the model) or stale."""
    staged, audit = STAGED, IngestedEvent.__table__
    rows = (
        select(
            staged.c.event_id,
            literal(UPLOADED),
            case((staged.c.model_id.is_(None), "stale"), else_="applied"),
            staged.c.user_id,
            staged.c.model_name,
            staged.c.version,
            staged.c.model_id,
            staged.c.topic,
            staged.c.partition,
            staged.c.offset,
            staged.c.occurred_at,
            bindparam("now", type_=audit.c.applied_at.type),
        )
        .where(staged.c.seq.between(bindparam("lo"), bindparam("hi")))
        .order_by(staged.c.seq)
    )
    # a position or event_id recorded already (a batch seen again): nothing twice
    return postgresql.insert(audit).from_select(list(AUDITED), rows).on_conflict_do_nothing()
