"""Lifecycle decisions as pure functions of observed facts, with the clock passed in.

The jobs and operations gather the facts (database rows, the runtime's instances, the
activity ledger) and act on these verdicts; the verdicts themselves touch nothing.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Slot:
    """One model holding a slot under the cap (starting, running or stopping)."""

    model_id: int
    owner: str
    running: bool
    pinned: bool  # kept warm
    pinned_by_admin: bool
    last_used_at: datetime | None


@dataclass(frozen=True)
class Admission:
    """May a model of `owner` start? If not at once, which slots could make room, in order."""

    free: bool
    reason: str  # "" when free; else "owner_limit" or "capacity"
    candidates: tuple[Slot, ...] = ()


def owner_limit(cap: int, configured: int) -> int:
    """Slots one owner may hold: MAX_RUNNING_PER_OWNER, or half the cap, rounded up, when unset."""
    return configured if configured > 0 else max(1, (cap + 1) // 2)


def fair_share(cap: int, owners: int) -> int:
    """The slots each owner is owed when `owners` owners want slots at once."""
    return max(1, cap // max(1, owners))


def admit(owner: str, slots: list[Slot], cap: int, per_owner: int, beyond_owner_limit: bool = False) -> Admission:
    """Fair share across owners.

    An owner at their own limit can only make room among their own models. At the global cap
    the owner holding the most slots gives one up first, least recently used first, and only an
    owner holding more slots than the one asking gives one up at all; models kept warm are taken
    only from owners above their fair share (never an admin's pin), and only when the one asking
    is below theirs. `beyond_owner_limit` is an admin pinning a model.
    """
    mine = [s for s in slots if s.owner == owner]
    if not beyond_owner_limit and len(mine) >= per_owner:
        return Admission(False, "owner_limit", _by_age([s for s in mine if s.running and not s.pinned]))
    if len(slots) < cap:
        return Admission(True, "")
    held = Counter(s.owner for s in slots)
    share = fair_share(cap, len(set(held) | {owner}))
    # Only from oneself or from an owner holding more slots than the one asking: equal holders never
    # take turns evicting each other, and nobody takes another owner's slot to rise above them.
    unpinned = [s for s in slots if s.running and not s.pinned and (s.owner == owner or held[s.owner] > len(mine))]
    pinned = []
    if len(mine) < share:
        pinned = [s for s in slots if s.running and s.pinned and not s.pinned_by_admin and held[s.owner] > share]
    biggest_first = sorted(unpinned, key=lambda s: (-held[s.owner], _age(s)))
    biggest_first += sorted(pinned, key=lambda s: (-held[s.owner], _age(s)))
    return Admission(False, "capacity", tuple(biggest_first))


def _age(slot: Slot) -> tuple:
    """Least recently used first; never used before everything else."""
    return (slot.last_used_at is not None, slot.last_used_at or datetime.min, slot.model_id)


def _by_age(slots: list[Slot]) -> tuple[Slot, ...]:
    return tuple(sorted(slots, key=_age))
