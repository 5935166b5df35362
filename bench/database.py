"""The benchmark's own database: created if missing, rebuilt by the migrations on every run."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url

from .config import ROOT, BenchError


def connect(url: str, database: str | None = None):
    """A psycopg2 connection (autocommit) for a SQLAlchemy-style URL."""
    u = make_url(url)
    conn = psycopg2.connect(
        host=u.host,
        port=u.port or 5432,
        user=u.username,
        password=u.password,
        dbname=database or u.database,
    )
    conn.autocommit = True
    return conn


@contextmanager
def cursor(url: str):
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def ensure_database(url: str) -> None:
    name = make_url(url).database
    conn = connect(url, database="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def rebuild(url: str, env: dict[str, str], log: Path) -> None:
    """An empty schema, then `flask db upgrade`: the schema exactly as production gets it."""
    with cursor(url) as cur:
        cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    flask = str(Path(sys.executable).parent / "flask")
    with open(log, "ab") as out:
        done = subprocess.run(
            [flask, "db", "upgrade"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        raise BenchError(f"flask db upgrade failed; see {log}")


def empty_tables(url: str, keep: tuple[str, ...] = ()) -> None:
    """Every table but alembic_version and `keep` emptied, ids restarted."""
    with cursor(url) as cur:
        cur.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> ALL(%s)",
            (["alembic_version", *keep],),
        )
        names = ", ".join(f'"{row[0]}"' for row in cur.fetchall())
        if names:
            cur.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


def server_version(url: str) -> str:
    with cursor(url) as cur:
        cur.execute("SHOW server_version")
        return cur.fetchone()[0]
