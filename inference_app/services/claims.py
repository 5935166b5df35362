"""Serialising lifecycle decisions: one claim at a time across every process of the service.

PostgreSQL: a transaction-scoped advisory lock, released by commit or rollback, so
concurrent requests in different workers or replicas cannot both decide to start a model
or both take the last slot under the cap. SQLite (one process): a process lock.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import datetime

from sqlalchemy import select, text

from ..errors import ModelNotFound
from ..extensions import db
from ..models import ServedModel

CLAIM_LOCK_KEY = 7_342_001  # arbitrary, constant: the service's lifecycle lock
_local_lock = threading.RLock()


def _is_postgres() -> bool:
    return db.engine.dialect.name == "postgresql"


@contextmanager
def claim_transaction():
    """A transaction holding the lifecycle lock; commits on success, rolls back on error."""
    if _is_postgres():
        try:
            db.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_LOCK_KEY})
            yield db.session
            db.session.commit()
        except BaseException:
            db.session.rollback()
            raise
        return
    with _local_lock:
        try:
            yield db.session
            db.session.commit()
        except BaseException:
            db.session.rollback()
            raise


def locked_model(model_id: int, include_deleted: bool = True) -> ServedModel:
    """The model's row, fresh from the database and locked for this transaction."""
    model = db.session.scalar(
        select(ServedModel)
        .where(ServedModel.id == model_id)
        .with_for_update(key_share=True)  # NO KEY UPDATE: foreign-key checks of other tables go on
        .execution_options(populate_existing=True)
    )
    if model is None or (model.deleted_at is not None and not include_deleted):
        raise ModelNotFound(f"no model with id {model_id}")
    return model


def is_lock_conflict(exc: BaseException) -> bool:
    """A deadlock or lock timeout the database resolved by aborting us: safe to try again."""
    code = getattr(getattr(exc, "orig", None), "pgcode", None)
    return code in ("40P01", "40001", "55P03")


def lease_valid(model: ServedModel, now: datetime) -> bool:
    return model.lease_expires_at is not None and model.lease_expires_at > now
