"""Coordination between the service's processes, in one place: locks, lock sessions, upserts.

PostgreSQL arbitrates between web workers, background runners and replicas with advisory
locks; SQLite (the single-process form) uses a process lock instead. Every advisory-lock key
of the service is named here, and so is the one switch between the two dialects' upserts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Table, func, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from .extensions import db

# Advisory-lock keys: arbitrary constants, unique within the service.
LIFECYCLE_LOCK = 7_342_001  # transaction-scoped: one lifecycle decision at a time
BACKGROUND_LEADER_LOCK = 7_342_002  # session-scoped: the one active background runner
MIGRATION_LOCK = 7_342_003  # session-scoped: one process applies the migrations
ACTIVITY_NAMESPACE = 7_342  # first key of the two-key locks (namespace, model id): requests in flight
REPLICA_NAMESPACE = 7_343  # (namespace, replica row id): requests in flight on one replica of a model
KAFKA_PARTITION_NAMESPACE = 7_344  # (namespace, hash of topic/partition): one batch of a partition at a time

_local_lifecycle_lock = threading.RLock()


def is_postgres(engine: Engine | None = None) -> bool:
    return (engine or db.engine).dialect.name == "postgresql"


@contextmanager
def lifecycle_transaction() -> Iterator:
    """A transaction holding the lifecycle lock; commits on success, rolls back on error."""
    if is_postgres():
        try:
            db.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LIFECYCLE_LOCK})
            yield db.session
            db.session.commit()
        except BaseException:
            db.session.rollback()
            raise
        return
    with _local_lifecycle_lock:
        try:
            yield db.session
            db.session.commit()
        except BaseException:
            db.session.rollback()
            raise


def lock_kafka_partitions(partitions: Iterable[tuple[str, int]]) -> None:
    """Until the transaction ends, hold a lock per Kafka partition (topic, partition), taken in order.

    Two consumers apply batches of one partition one after the other: after a rebalance the new
    owner waits for the batch the old one still has in flight (PostgreSQL; a no-op on SQLite).
    """
    if not is_postgres():
        return
    for name in sorted({f"{topic}/{partition}" for topic, partition in partitions}):
        db.session.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:name))"),
            {"namespace": KAFKA_PARTITION_NAMESPACE, "name": name},
        )


def is_lock_conflict(exc: BaseException) -> bool:
    """A deadlock or lock timeout the database resolved by aborting us: safe to try again."""
    code = getattr(getattr(exc, "orig", None), "pgcode", None)
    return code in ("40P01", "40001", "55P03")


# Two-key session locks (namespace, id) on a dedicated connection: shared while requests are in
# flight under the key, exclusive to stop or drain what the key names. DBAPI statements.
TRY_SHARED_PAIR = "SELECT pg_try_advisory_lock_shared(%s, %s)"
UNLOCK_SHARED_PAIR = "SELECT pg_advisory_unlock_shared(%s, %s)"
TRY_EXCLUSIVE_PAIR = "SELECT pg_try_advisory_lock(%s, %s)"
UNLOCK_EXCLUSIVE_PAIR = "SELECT pg_advisory_unlock(%s, %s)"


def dedicated_connection(engine: Engine):
    """A DBAPI connection of its own, outside the pool: session-level locks live as long as it does."""
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    conn = engine.dialect.connect(*cargs, **cparams)
    conn.autocommit = True
    return conn


def try_session_lock(conn, key: int) -> bool:
    """Take a session-level advisory lock on a dedicated connection, without waiting."""
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        return bool(cursor.fetchone()[0])


def session_lock(conn, key: int) -> None:
    """Take a session-level advisory lock on a dedicated connection, waiting for it."""
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", (key,))


def insert_for(table: Table, dialect_name: str | None = None):
    """An INSERT that supports ON CONFLICT, in the dialect of the database in use."""
    name = dialect_name or db.engine.dialect.name
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(table)


def greatest(dialect_name: str):
    """GREATEST(a, b) in PostgreSQL, MAX(a, b) in SQLite."""
    return func.greatest if dialect_name == "postgresql" else func.max
