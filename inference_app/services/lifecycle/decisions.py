"""Lifecycle decisions as pure functions of observed facts, with the clock passed in.

The jobs and operations gather the facts (database rows, the runtime's instances, the
activity ledger) and act on these verdicts; the verdicts themselves touch nothing.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from ...models import Status
from ..activity import FLUSH_INTERVAL

IDLE_GRACE = timedelta(seconds=FLUSH_INTERVAL)  # last use reaches the database within this interval


def should_stop(
    last_used_at: datetime | None,
    started_at: datetime | None,
    now: datetime,
    idle_limit: int,
    in_flight: int,
    state: Status,
    keep_warm: bool,
) -> bool:
    """The idle verdict: running, not kept warm, nothing in flight, past its deadline."""
    if state is not Status.RUNNING or keep_warm or in_flight > 0:
        return False
    since = last_used_at or started_at
    if since is None:
        return True
    return now >= since + timedelta(seconds=idle_limit) + IDLE_GRACE


class Verdict(enum.Enum):
    """What reconciliation does with one model, given the registry and the runtime."""

    LEAVE = "leave"  # in hand, or moved since the runtime was looked at
    CLEAN_UP = "clean_up"  # nothing should run: mark stopped, remove what is there
    VANISHED = "vanished"  # it should run, but its instance is gone
    ADOPT = "adopt"  # it runs, and the registry did not know: take it over
    KEEP = "keep"  # it runs as recorded (its address may have changed)


def reconcile_verdict(state: Status, busy: bool, moved_since_observed: bool, deleted: bool, alive: bool) -> Verdict:
    """The reconciliation verdict for one model."""
    if moved_since_observed or busy:
        return Verdict.LEAVE
    if deleted or state is Status.STOPPING or (not alive and state is not Status.RUNNING):
        return Verdict.CLEAN_UP  # deleted, an abandoned stop, or nothing running where nothing should run
    if not alive:
        return Verdict.VANISHED
    return Verdict.KEEP if state is Status.RUNNING else Verdict.ADOPT
