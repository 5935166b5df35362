"""The model registry: register (the one function the API and Kafka share), look up, list."""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Insert, Select, bindparam, func, literal, or_, select, update
from sqlalchemy.orm import aliased, selectinload

from ..config import Settings
from ..coordination import insert_for
from ..errors import InvalidInput, ModelNotFound
from ..extensions import db
from ..models import ServedModel, Status, utcnow
from .auth import Principal, sees_everything, visible
from .lifecycle.transitions import NEW_MODEL
from .validation import OPTIONAL, Registration, safe_name, validate_registration

logger = logging.getLogger(__name__)

MAX_PER_PAGE = 100
MAX_SEARCH = 128

Identity = tuple[str, str, str]
# What a registration replaces in a model it finds by identity: its image and every optional
# field but the version (part of the identity), under its column's name.
REPLACED = ("image", *({"memory": "memory_bytes"}.get(f, f) for f in OPTIONAL if f != "version"))


@dataclass
class Page:
    items: list[ServedModel]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass(frozen=True)
class Versioned:
    """A registration with the time its event happened (None: as new as anything)."""

    registration: Registration
    occurred_at: datetime | None = None

    @property
    def identity(self) -> Identity:
        reg = self.registration
        return reg.user_id, reg.model_name, reg.version


def register_model(data: Any, settings: Settings, principal: Principal | None = None) -> tuple[ServedModel, bool]:
    """Validate and upsert by user_id+model_name+version; returns (model, created)."""
    reg = validate_registration(data, settings)
    if principal is not None:
        principal.require_owner(reg.user_id)
    existing = _find(reg.user_id, reg.model_name, reg.version)
    existed = existing is not None
    [model_id] = upsert_registrations([Versioned(reg, _api_time(existing))])
    db.session.commit()
    model = db.session.get(ServedModel, model_id, populate_existing=True)
    logger.info("%s model %s %s/%s:%s", "updated" if existed else "registered", model.id, *model_identity(model))
    return model, not existed


def _api_time(existing: ServedModel | None) -> datetime:
    """An API registration is dated now (so no undated or older event overrides it), or as new as
    what the model already holds when that is ahead of this clock: the user's own write always applies."""
    now = utcnow()
    held = existing.event_occurred_at if existing is not None else None
    if held is None:
        return now
    return max(now, held if held.tzinfo is not None else held.replace(tzinfo=UTC))


def model_identity(model: ServedModel) -> Identity:
    return model.user_id, model.model_name, model.version


def upsert_registrations(items: Sequence[Versioned]) -> list[int | None]:
    """Insert or update models in the caller's transaction, in the items' order.

    Returns, per item, the model id, or None where the registry already held data from a newer
    event (not_older): the item changed nothing. Several items for one identity go in successive
    statements, so each is judged against the ones before it; most batches need one statement.
    """
    rounds: list[dict[Identity, int]] = []  # round n: identity -> index of its n-th item
    seen: Counter[Identity] = Counter()
    for index, item in enumerate(items):
        depth = seen[item.identity]
        seen[item.identity] += 1
        if depth == len(rounds):
            rounds.append({})
        rounds[depth][item.identity] = index
    results: list[int | None] = [None] * len(items)
    now = utcnow()
    # The rows go as executemany parameters of one cached statement (SQLAlchemy batches them
    # as multi-row VALUES itself); .values(rows) compiled a new 2,000-row statement per batch.
    statement = upsert_by_identity(insert_for(ServedModel.__table__))
    for batch in rounds:
        rows = [_row(items[index], now) for index in batch.values()]
        for r in db.session.execute(statement, rows):
            results[batch[(r.user_id, r.model_name, r.version)]] = r.id
    return results


def upsert_by_identity(statement: Insert) -> Insert:
    """An INSERT of models made an upsert by user_id+model_name+version under the staleness rule.

    It returns (id, user_id, model_name, version) of each row it wrote; a row the registry holds
    from a newer event is left as it is, and not returned.
    """
    table = ServedModel.__table__
    excluded = statement.excluded
    updated: dict[str, Any] = {name: excluded[name] for name in (*REPLACED, "updated_at")}
    updated["deleted_at"] = None
    updated["event_occurred_at"] = func.coalesce(excluded.event_occurred_at, table.c.event_occurred_at)
    return statement.on_conflict_do_update(
        index_elements=[table.c.user_id, table.c.model_name, table.c.version],
        set_=updated,
        where=not_older(excluded.event_occurred_at, table.c.event_occurred_at),
    ).returning(table.c.id, table.c.user_id, table.c.model_name, table.c.version)


def not_older(incoming: ColumnElement, held: ColumnElement) -> ColumnElement:
    """The staleness rule, written once: an event applies unless the registry holds data from a
    newer event (by occurred_at); an event or data without a time counts as new as any."""
    return or_(held.is_(None), incoming.is_(None), held <= incoming)


def _row(item: Versioned, now: datetime) -> dict[str, Any]:
    reg = item.registration
    return {
        "user_id": reg.user_id,
        "model_name": reg.model_name,
        "version": reg.version,
        "image": reg.image,
        "port": reg.port,
        "health_path": reg.health_path,
        "predict_path": reg.predict_path,
        "env": reg.env,
        "memory_bytes": reg.memory_bytes,
        "cpus": reg.cpus,
        "idle_timeout_seconds": reg.idle_timeout_seconds,
        "min_replicas": reg.min_replicas,
        "max_replicas": reg.max_replicas,
        "target_concurrency": reg.target_concurrency,
        "metadata": reg.metadata,
        "created_at": now,
        "updated_at": now,
        **NEW_MODEL,
        "status_changed_at": now,
        "deleted_at": None,
        "event_occurred_at": item.occurred_at,
    }


def mark_deleted(user_id: str, model_name: str, version: str | None, occurred_at: datetime | None) -> list[int]:
    """Hide a model (one version, or all) from lists; its container is stopped by reconciliation."""
    table = ServedModel.__table__
    statement = update(table).where(
        table.c.user_id == user_id, table.c.model_name == model_name, table.c.deleted_at.is_(None)
    )
    if version is not None:
        statement = statement.where(table.c.version == version)
    when = literal(occurred_at, table.c.event_occurred_at.type)
    statement = (
        statement.where(not_older(when, table.c.event_occurred_at))
        .values(deleted_at=utcnow(), event_occurred_at=func.coalesce(occurred_at, table.c.event_occurred_at))
        .returning(table.c.id)
    )
    return [row.id for row in db.session.execute(statement)]


def _find(user_id: str, model_name: str, version: str) -> ServedModel | None:
    return db.session.scalar(
        select(ServedModel).where(
            ServedModel.user_id == user_id, ServedModel.model_name == model_name, ServedModel.version == version
        )
    )


def get_model(
    model_id: int, include_deleted: bool = False, fresh: bool = False, visible_to: Principal | None = None
) -> ServedModel:
    """The model with its live status; ModelNotFound otherwise (also for another owner's model,
    so ids cannot be probed). fresh: re-read the row."""
    model = db.session.get(ServedModel, model_id, populate_existing=fresh)
    if model is None or (model.deleted_at is not None and not include_deleted):
        raise ModelNotFound(f"no model with id {model_id}")
    if visible_to is not None and not visible_to.can_see(model):
        raise ModelNotFound(f"no model with id {model_id}")
    return model


def model_for_inference(model_id: int, version: str | None = None, visible_to: Principal | None = None) -> ServedModel:
    """The version an inference for model_id goes to: the one named, else the newest registered.

    One query: the model's family (same user_id and model_name) joined to the id asked for.
    """
    scoped = not sees_everything(visible_to)
    params = {"model_id": model_id, **({"owner": visible_to.user_id} if scoped else {})}
    newest, named = _family_queries(scoped)
    if version is not None:
        found = db.session.scalar(named, {**params, "version": safe_name("version", version)})
        if found is None:
            get_model(model_id, visible_to=visible_to)  # 404 for the model itself first
            raise ModelNotFound(f"model {model_id} has no version {version!r}")
        return found
    found = db.session.scalar(newest, params)
    if found is None:
        raise ModelNotFound(f"no model with id {model_id}")
    return found


@functools.cache
def _family_queries(scoped: bool) -> tuple[Select, Select]:
    """The (newest version, named version) statements, built once per process (scoped: owner only)."""
    # Building the aliased join took more CPU than running it (about half of a warm
    # inference's time in the web worker) when it was rebuilt on every inference.
    asked = aliased(ServedModel)
    family = (
        select(ServedModel)
        .join(asked, (asked.user_id == ServedModel.user_id) & (asked.model_name == ServedModel.model_name))
        .where(asked.id == bindparam("model_id"), asked.deleted_at.is_(None), ServedModel.deleted_at.is_(None))
    )
    if scoped:
        family = family.where(ServedModel.user_id == bindparam("owner"))
    newest = family.order_by(ServedModel.id.desc()).limit(1)
    named = family.where(ServedModel.version == bindparam("version"))
    return newest, named


def list_models(
    *,
    user_id: str | None = None,
    status: str | None = None,
    search: str | None = None,
    page: int = 1,
    per_page: int = 20,
    include_deleted: bool = False,
    visible_to: Principal | None = None,
) -> Page:
    """One page of models, newest id first, with the filters applied (and the caller's scope)."""
    if page < 1:
        raise InvalidInput("page must be 1 or more", field="page")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidInput(f"per_page must be between 1 and {MAX_PER_PAGE}", field="per_page")
    query = visible(select(ServedModel), visible_to)
    if user_id:
        query = query.where(ServedModel.user_id == safe_name("user_id", user_id))
    if status:
        try:
            query = query.where(ServedModel.status == Status(status).value)
        except ValueError:
            raise InvalidInput(
                f"status must be one of {', '.join(s.value for s in Status)}, got {status[:32]!r}", field="status"
            ) from None
    if search:
        if len(search) > MAX_SEARCH:
            raise InvalidInput(f"q must be at most {MAX_SEARCH} characters", field="q")
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(ServedModel.model_name.like(f"{escaped}%", escape="\\"))
    if not include_deleted:
        query = query.where(ServedModel.deleted_at.is_(None))
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    items = db.session.scalars(
        query.order_by(ServedModel.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
        .options(selectinload(ServedModel.replicas))  # replica counts of the page in one more query
    ).all()
    return Page(items=list(items), total=total or 0, page=page, per_page=per_page)
