"""Lifecycle decisions as pure functions of observed facts, with the clock passed in.

The jobs and operations gather the facts (database rows, the runtime's instances, the
activity ledger) and act on these verdicts; the verdicts themselves touch nothing.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Sequence
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
    """One replica holding a slot under the cap (of a model starting, running or stopping).

    A model's lowest-numbered replica is its last one; the others are `extra`: giving one up
    scales the model down instead of stopping it.
    """

    model_id: int
    owner: str
    running: bool  # ready to give up: a ready replica of a running model
    pinned: bool  # kept warm (a model's last replica), or within its min_replicas
    pinned_by_admin: bool
    last_used_at: datetime | None
    replica: int = 0
    extra: bool = False


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
    # Extra replicas go before anyone's last one.
    biggest_first = sorted(unpinned, key=lambda s: (not s.extra, -held[s.owner], _age(s)))
    biggest_first += sorted(pinned, key=lambda s: (not s.extra, -held[s.owner], _age(s)))
    return Admission(False, "capacity", tuple(biggest_first))


def _age(slot: Slot) -> tuple:
    """Least recently used first; never used before everything else; a model's highest replica first."""
    return (slot.last_used_at is not None, slot.last_used_at or datetime.min, slot.model_id, -slot.replica)


def _by_age(slots: list[Slot]) -> tuple[Slot, ...]:
    return tuple(sorted(slots, key=lambda s: (not s.extra, _age(s))))


# -- autoscaling -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScalePolicy:
    """A model's scaling settings as registered."""

    min_replicas: int = 0
    max_replicas: int = 1
    target_concurrency: int = 4


@dataclass(frozen=True)
class Sample:
    """Requests in flight for a model, summed over every web process, when the autoscaler looked."""

    at: datetime
    in_flight: float


@dataclass(frozen=True)
class Replicas:
    ready: int
    starting: int = 0
    draining: int = 0

    @property
    def kept(self) -> int:
        return self.ready + self.starting


@dataclass(frozen=True)
class ScaleVerdict:
    """Replicas the model should keep (ready or starting), and the step to take towards it now."""

    desired: int
    add: int = 0  # replicas to add (draining ones are revived first)
    remove: int = 0  # replicas to take out, one after another, highest-numbered first
    reason: str = ""
    down_due_at: datetime | None = None  # when one fewer becomes due if the load stays as low

    @property
    def changes(self) -> bool:
        return bool(self.add or self.remove)


def scale_verdict(
    samples: Sequence[Sample],
    now: datetime,
    replicas: Replicas,
    policy: ScalePolicy,
    up_window: timedelta,
    down_delay: timedelta,
    last_up_at: datetime | None = None,
) -> ScaleVerdict:
    """The autoscaling verdict for one running model.

    Up: requests in flight per ready replica stayed above the target through `up_window`; enough
    replicas are added at once for the lowest load of the window (up to max_replicas). Down: the
    load stayed low enough for fewer replicas through `down_delay` (and no replica was added in
    that time); as many go as the highest load of the delay leaves idle, one after another, never
    the last ready one, down to max(min_replicas, 1): from one to none is the idle stop. Within
    [min_replicas, max_replicas] regardless of load. While nothing changes, `down_due_at` says
    when one replica fewer would become due, for the caller to look again then.
    """
    floor = max(1, policy.min_replicas)
    ceiling = max(floor, policy.max_replicas)
    kept = replicas.kept
    target = policy.target_concurrency
    if replicas.ready == 0:
        return ScaleVerdict(kept, reason="no replica ready yet")
    if kept < floor:
        return ScaleVerdict(floor, add=floor - kept, reason=f"min_replicas is {policy.min_replicas}")
    if kept > ceiling:
        surplus = min(kept - ceiling, replicas.ready - 1) if replicas.draining == 0 else 0
        return ScaleVerdict(kept - surplus, remove=surplus, reason=f"max_replicas is {policy.max_replicas}")
    window = _through(samples, now, up_window)
    if window is not None and min(window) > target * replicas.ready:
        wanted = min(ceiling, max(replicas.ready + 1, math.ceil(min(window) / target)))
        if wanted > kept:
            return ScaleVerdict(
                wanted,
                add=wanted - kept,
                reason=f"{min(window):g} in flight on {replicas.ready} ready (target {target})",
            )
        return ScaleVerdict(kept, reason="at max_replicas" if kept >= ceiling else "")
    if kept <= floor or replicas.starting or replicas.draining or replicas.ready < 2:
        return ScaleVerdict(kept)
    due = _down_due_at(samples, target * (kept - 1), down_delay, last_up_at)
    if due is None or due >= now:
        return ScaleVerdict(kept, down_due_at=due)
    low = _through(samples, now, down_delay)
    if low is None:  # cannot happen once due; kept for safety
        return ScaleVerdict(kept)
    keep = max(floor, math.ceil(max(low) / target))
    return ScaleVerdict(
        keep, remove=kept - keep, reason=f"at most {max(low):g} in flight for {down_delay.total_seconds():g} s"
    )


def _down_due_at(
    samples: Sequence[Sample], low: float, down_delay: timedelta, last_up_at: datetime | None
) -> datetime | None:
    """When the load will have stayed at or below `low` through `down_delay`, if it stays so; None if above now.

    Due strictly after the last sample above `low`; at once when history (or the last scale-up)
    is exactly `down_delay` old.
    """
    if not samples or samples[-1].in_flight > low:
        return None
    high = [s.at for s in samples if s.in_flight > low]
    since = high[-1] if high else samples[0].at - _INSTANT  # the last sample above it, or the oldest one
    if last_up_at is not None:
        since = max(since, last_up_at - _INSTANT)
    return since + down_delay


_INSTANT = timedelta(microseconds=1)


def _through(samples: Sequence[Sample], now: datetime, span: timedelta) -> list[float] | None:
    """The loads seen through the last `span`, or None if the samples do not reach that far back."""
    if not samples or samples[0].at > now - span:
        return None
    recent = [s.in_flight for s in samples if s.at >= now - span]
    return recent or [samples[-1].in_flight]
