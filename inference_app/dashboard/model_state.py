"""What a model row shows about its container: progress while it changes, errors where they happened.

A start is requested without waiting (lifecycle.request_start(wait=False)); the page then polls
the row until the state is final. `since` (the time the user pressed Start, carried in the
polling URL) tells "still waiting for a free slot" and "that start just failed" apart from
an old state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..models import Replica, ReplicaStatus, ServedModel, Status, utcnow
from ..services import insights
from ..services.context import context

QUEUED = "waiting for a free container slot"


@dataclass(frozen=True)
class Progress:
    polling: bool  # the page asks again every second until this is False
    phase: str = ""  # what the container is doing now, in words
    elapsed_s: float | None = None  # time in the current state
    error: str | None = None  # why the last action failed, shown next to the model
    since: float | None = None  # when the user asked for a start (epoch seconds)


@dataclass(frozen=True)
class ReplicaSummary:
    """A model's replicas as its row and page show them: ready/desired, and why it holds fewer."""

    ready: int
    starting: int
    draining: int
    desired: int
    note: str | None
    rows: tuple[Replica, ...]


def replica_summary(model: ServedModel) -> ReplicaSummary | None:
    """None for a model that runs one replica at most (nothing to show beyond its status)."""
    rows = tuple(sorted(model.replicas, key=lambda r: r.replica)) if model.state is Status.RUNNING else ()
    if (model.max_replicas or 1) <= 1 and len(rows) <= 1:
        return None
    count = {state: sum(r.state is state for r in rows) for state in ReplicaStatus}
    return ReplicaSummary(
        count[ReplicaStatus.READY],
        count[ReplicaStatus.STARTING],
        count[ReplicaStatus.DRAINING],
        model.desired_replicas or 0,
        model.scale_note,
        rows,
    )


@dataclass(frozen=True)
class LiveModel:
    """A model with what its row needs: progress and when idle shutdown will stop it."""

    model: ServedModel
    progress: Progress
    idle_deadline: datetime | None
    replicas: ReplicaSummary | None = None

    @property
    def running(self) -> bool:
        return self.model.state is Status.RUNNING

    @property
    def can_start(self) -> bool:
        return self.model.state in (Status.STOPPED, Status.FAILED)


def progress_of(
    model: ServedModel,
    since: float | None,
    now: datetime,
    phase_of: Callable[[ServedModel], str],
    queue_window_s: float,
) -> Progress:
    """The progress facts of one model; phase_of asks Docker only for changing models."""
    state = model.state
    elapsed = (now - model.status_changed_at).total_seconds() if model.status_changed_at else None
    if state in (Status.STARTING, Status.STOPPING):
        return Progress(True, phase_of(model), elapsed, since=since)
    if state is Status.FAILED:
        return Progress(False, error=model.last_error or "the container failed")
    if state is Status.STOPPED and since is not None:
        asked = datetime.fromtimestamp(since, UTC) - timedelta(milliseconds=50)
        if model.status_changed_at and model.status_changed_at >= asked:
            return Progress(False, error=model.last_error)  # the start ended in stopped: say why
        if (now - asked).total_seconds() < queue_window_s:
            return Progress(True, QUEUED, (now - asked).total_seconds(), since=since)
    return Progress(False)


def live_model(model: ServedModel, since: float | None = None, error: str | None = None) -> LiveModel:
    """A model with its progress and idle deadline; error: what the user's last action ran into."""
    settings = context().settings
    progress = progress_of(
        model,
        since,
        utcnow(),
        insights.start_phase,
        settings.queue_timeout_seconds + settings.start_timeout_seconds,
    )
    if error:
        progress = Progress(progress.polling, progress.phase, progress.elapsed_s, error, progress.since)
    return LiveModel(model, progress, model.idle_deadline(settings.idle_timeout_seconds), replica_summary(model))
