"""Load as the autoscaler sees it: requests in flight per model, averaged over time, from every process.

Each process's activity ledger meters its in-flight requests (LoadMeter: in-flight x seconds,
accrued on every change) and its flusher reports the average over the last interval to the
model_load table, one row per process and model. The autoscaler sums the fresh rows.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, delete, func, select
from sqlalchemy.engine import Connection

from ..coordination import insert_for
from ..extensions import db
from ..models import ModelLoad

FRESH = timedelta(seconds=2.0)  # a row older than this is a process that stopped reporting: not counted
FORGET = timedelta(minutes=5)  # rows this old are deleted


class LoadMeter:
    """In-flight x seconds per model since the last report; the caller holds the ledger's lock."""

    def __init__(self, clock_start: float) -> None:
        self._area: dict[int, float] = {}
        self._changed_at: dict[int, float] = {}
        self._since = clock_start
        self._reported: set[int] = set()  # models last reported with some load
        self._busy_until: dict[int, float] = {}  # when each model last had a request in flight

    def accrue(self, model_id: int, in_flight: int, now: float) -> None:
        """Call before the count of `model_id` changes (in_flight: the count until now)."""
        then = self._changed_at.get(model_id, self._since)
        if in_flight:
            self._area[model_id] = self._area.get(model_id, 0.0) + in_flight * max(0.0, now - max(then, self._since))
            self._busy_until[model_id] = now
        self._changed_at[model_id] = now

    def busy_until(self, model_id: int) -> float | None:
        """The last moment (on the caller's clock) a request of this model was in flight, if any was."""
        return self._busy_until.get(model_id)

    def averages(self, in_flight: dict[int, int], now: float) -> dict[int, float]:
        """The average in flight per model since the last call, for the models worth a row."""
        for model_id, count in in_flight.items():
            self.accrue(model_id, count, now)
        span = max(now - self._since, 1e-6)
        averages = {m: area / span for m, area in self._area.items()}
        report = {m: a for m, a in averages.items() if a > 0}
        report.update({m: 0.0 for m in self._reported if m not in report})  # a drop to nothing is news too
        self._reported = {m for m, a in report.items() if a > 0}
        self._busy_until = {m: t for m, t in self._busy_until.items() if m in self._reported}
        self._area.clear()
        self._changed_at = {m: now for m in in_flight}
        self._since = now
        return report


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def report(
    conn: Connection,
    averages: dict[int, float],
    now: datetime,
    process: str | None = None,
    busy_at: dict[int, datetime] | None = None,
) -> None:
    """Upsert this process's rows (one statement, executemany).

    A row's reported_at is when the load it reports was last there: `busy_at` for a model with
    some load (the last moment a request of it was in flight), else now. The autoscaler times
    its samples by it, so a scale-down's delay counts from when the load really ended.
    """
    if not averages:
        return
    table = ModelLoad.__table__
    statement = insert_for(table, conn.dialect.name)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.model_id, table.c.process],
        set_={"in_flight": statement.excluded.in_flight, "reported_at": statement.excluded.reported_at},
    )
    name = process or process_name()
    conn.execute(
        statement,
        [
            {"model_id": m, "process": name, "in_flight": a, "reported_at": _when(m, a, now, busy_at)}
            for m, a in sorted(averages.items())
        ],
    )


def _when(model_id: int, average: float, now: datetime, busy_at: dict[int, datetime] | None) -> datetime:
    if average > 0 and busy_at and model_id in busy_at:
        return min(now, busy_at[model_id])
    return now


def in_flight(now: datetime, model_ids: list[int] | None = None) -> dict[int, float]:
    """Requests in flight per model across every process that reported lately."""
    return {model_id: total for model_id, (total, _) in observed(now, model_ids).items()}


def observed(now: datetime, model_ids: list[int] | None = None) -> dict[int, tuple[float, datetime]]:
    """Requests in flight per model across every process that reported lately, and when that was so.

    The time is that of the newest report with some load (when that load was last there), else
    that of the newest report.
    """
    busy_at = func.max(case((ModelLoad.in_flight > 0, ModelLoad.reported_at)))
    query = (
        select(ModelLoad.model_id, func.sum(ModelLoad.in_flight), busy_at, func.max(ModelLoad.reported_at))
        .where(ModelLoad.reported_at >= now - FRESH)
        .group_by(ModelLoad.model_id)
    )
    if model_ids is not None:
        query = query.where(ModelLoad.model_id.in_(model_ids))
    return {m: (float(total or 0), _aware(busy or newest)) for m, total, busy, newest in db.session.execute(query)}


def _aware(at: datetime) -> datetime:
    """SQLite gives the times back naive; they were written in UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def forget_old(now: datetime) -> None:
    """Drop the rows of processes long gone."""
    db.session.execute(delete(ModelLoad).where(ModelLoad.reported_at < now - FORGET))
