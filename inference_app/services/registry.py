"""The model registry: register (the one function the API and Kafka share), look up, list."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..config import Settings
from ..errors import InvalidInput, ModelNotFound
from ..extensions import db
from ..models import ServedModel, Status, utcnow
from .validation import Registration, safe_name, validate_registration

logger = logging.getLogger(__name__)

MAX_PER_PAGE = 100
MAX_SEARCH = 128


@dataclass
class Page:
    items: list[ServedModel]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def register_model(data: Any, settings: Settings, keep_unknown: bool = False) -> tuple[ServedModel, bool]:
    """Validate and upsert by user_id+model_name+version; returns (model, created)."""
    reg = validate_registration(data, settings, keep_unknown=keep_unknown)
    for _attempt in range(3):
        model = _find(reg.user_id, reg.model_name, reg.version)
        created = model is None
        if created:
            model = ServedModel(user_id=reg.user_id, model_name=reg.model_name, version=reg.version)
            db.session.add(model)
        apply_registration(model, reg)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()  # registered concurrently by someone else: update theirs
            continue
        logger.info("%s model %s %s/%s:%s", "registered" if created else "updated", model.id, reg.user_id, reg.model_name, reg.version)
        return model, created
    raise RuntimeError("registration kept conflicting with concurrent registrations")


def apply_registration(model: ServedModel, reg: Registration) -> None:
    """Copy the registration's fields onto the model; its live state is left alone."""
    model.image = reg.image
    model.port = reg.port
    model.health_path = reg.health_path
    model.predict_path = reg.predict_path
    model.env = reg.env
    model.memory_bytes = reg.memory_bytes
    model.cpus = reg.cpus
    model.idle_timeout_seconds = reg.idle_timeout_seconds
    model.meta = reg.metadata
    model.deleted_at = None
    model.updated_at = utcnow()
    if model.status is None:
        model.status = Status.STOPPED.value


def _find(user_id: str, model_name: str, version: str) -> ServedModel | None:
    return db.session.scalar(
        select(ServedModel).where(
            ServedModel.user_id == user_id, ServedModel.model_name == model_name, ServedModel.version == version
        )
    )


def get_model(model_id: int, include_deleted: bool = False, fresh: bool = False) -> ServedModel:
    """The model with its live status; ModelNotFound otherwise. fresh: re-read the row."""
    model = db.session.get(ServedModel, model_id, populate_existing=fresh)
    if model is None or (model.deleted_at is not None and not include_deleted):
        raise ModelNotFound(f"no model with id {model_id}")
    return model


def list_models(
    *,
    user_id: str | None = None,
    status: str | None = None,
    search: str | None = None,
    page: int = 1,
    per_page: int = 20,
    include_deleted: bool = False,
) -> Page:
    """One page of models, newest id first, with the filters applied."""
    if page < 1:
        raise InvalidInput("page must be 1 or more", field="page")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidInput(f"per_page must be between 1 and {MAX_PER_PAGE}", field="per_page")
    query = select(ServedModel)
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
    items = db.session.scalars(query.order_by(ServedModel.id.desc()).limit(per_page).offset((page - 1) * per_page)).all()
    return Page(items=list(items), total=total or 0, page=page, per_page=per_page)
