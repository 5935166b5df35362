"""The database schema at start-up: wait for the server, then migrate, one process at a time.

Every container of a deployment may run `flask migrate-once` as it starts; a PostgreSQL
session-level advisory lock lets exactly one apply the migrations while the others wait,
then find the schema already at the newest revision and change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from .coordination import MIGRATION_LOCK, dedicated_connection, is_postgres, session_lock, try_session_lock


class DatabaseUnreachable(RuntimeError):
    """The database did not accept a connection in the time allowed."""


@dataclass(frozen=True)
class MigrationOutcome:
    before: str | None
    after: str | None
    waited_for_lock: bool

    @property
    def applied(self) -> bool:
        return self.before != self.after


def wait_for_database(engine: Engine, timeout: float, on_retry: Callable[[str], None] = lambda _: None) -> None:
    """Return once the database answers `SELECT 1`; raise DatabaseUnreachable after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.25
    reported = False
    while True:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else exc.__class__.__name__
            if time.monotonic() + delay > deadline:
                raise DatabaseUnreachable(f"database unreachable after {timeout:.0f} s: {reason}") from None
            if not reported:
                on_retry(reason)
                reported = True
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def migration_lock(engine: Engine) -> Iterator[bool]:
    """Hold the migration lock (PostgreSQL); yields whether another process had it first."""
    if not is_postgres(engine):
        yield False  # SQLite: one process owns the file
        return
    conn = dedicated_connection(engine)
    try:
        waited = not try_session_lock(conn, MIGRATION_LOCK)
        if waited:
            session_lock(conn, MIGRATION_LOCK)
        yield waited
    finally:
        conn.close()  # ends the session, and the lock with it


def upgrade_once(engine: Engine, upgrade: Callable[[], None]) -> MigrationOutcome:
    """Run `upgrade` (alembic to head) under the migration lock; a no-op when already at head."""
    with migration_lock(engine) as waited:
        before = current_revision(engine)
        upgrade()
        after = current_revision(engine)
    return MigrationOutcome(before=before, after=after, waited_for_lock=waited)
