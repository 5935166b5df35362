"""Read-only facts for the dashboard: container details, recent activity, events and capacity.

Nothing here changes state; lifecycle decisions stay in services.lifecycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from ..errors import ServiceError
from ..extensions import db
from ..models import (
    ACTIVE,
    DeadLetter,
    InferenceMinute,
    IngestedEvent,
    ModelEvent,
    Replica,
    ServedModel,
    Status,
    utcnow,
)
from ..runtime import Instance
from .auth import Principal, visible
from .context import context

LOG_LINES = 20
HISTORY_MINUTES = 60


@dataclass(frozen=True)
class ContainerDetails:
    """What the runtime says about a model's instance (a container, a pod)."""

    container_id: str
    name: str
    state: str  # the runtime's phase: created, running, exited, ...
    image: str
    exit_code: int | None
    memory_bytes: int | None
    cpus: float | None
    pids_limit: int | None
    node: str | None = None  # where it runs, on a runtime with several hosts


@dataclass(frozen=True)
class ContainerReport:
    """The container (None when there is none), its last log lines, or why Docker could not tell."""

    details: ContainerDetails | None
    log_tail: str
    error: str | None = None


@dataclass(frozen=True)
class MinuteStat:
    minute: datetime
    requests: int
    errors: int
    cold_starts: int
    avg_ms: float | None
    max_ms: int


@dataclass(frozen=True)
class InferenceHistory:
    """Per-minute inference counts and latency, oldest first, with no gaps."""

    minutes: list[MinuteStat]

    @property
    def requests(self) -> int:
        return sum(m.requests for m in self.minutes)

    @property
    def errors(self) -> int:
        return sum(m.errors for m in self.minutes)

    @property
    def cold_starts(self) -> int:
        return sum(m.cold_starts for m in self.minutes)

    @property
    def avg_ms(self) -> float | None:
        weighted = sum((m.avg_ms or 0) * m.requests for m in self.minutes)
        return weighted / self.requests if self.requests else None

    @property
    def max_ms(self) -> int:
        return max((m.max_ms for m in self.minutes), default=0)


@dataclass(frozen=True)
class Capacity:
    """Container slots in use (starting, running or stopping) against MAX_RUNNING_CONTAINERS."""

    starting: int
    running: int
    stopping: int
    limit: int

    @property
    def in_use(self) -> int:
        return self.starting + self.running + self.stopping


@dataclass(frozen=True)
class EventRow:
    event: ModelEvent
    model: ServedModel | None


def container_report(model: ServedModel, log_lines: int = LOG_LINES) -> ContainerReport:
    """Live Docker facts about the model's container and its last log lines."""
    runtime = context().runtime
    try:
        info = _instance_of(model)
        if info is None:
            return ContainerReport(None, "")
        details = ContainerDetails(
            container_id=info.instance_id,
            name=info.name,
            state=info.phase,
            image=info.image,
            exit_code=info.exit_code,
            memory_bytes=info.limits.memory_bytes,
            cpus=info.limits.cpus,
            pids_limit=info.limits.pids_limit,
            node=info.node,
        )
        return ContainerReport(details, runtime.logs(info.instance_id, log_lines))
    except ServiceError as exc:
        return ContainerReport(None, "", error=exc.message)


def start_phase(model: ServedModel) -> str:
    """What a starting or stopping model is doing right now, in words."""
    if model.state is Status.STOPPING:
        return "stopping the container"
    if model.state is not Status.STARTING:
        return ""
    try:
        info = _instance_of(model)
    except ServiceError as exc:
        return exc.message
    if info is None:
        return "creating the container"
    if info.phase == "created":
        return "starting the container"
    if info.running:
        return f"waiting for {model.health_path} to answer"
    return f"the container has {info.phase}"


def _instance_of(model: ServedModel) -> Instance | None:
    """The model's recorded instance, else the first the runtime lists for it."""
    runtime = context().runtime
    if model.container_id:
        found = runtime.inspect(model.container_id)
        if found is not None:
            return found
    return next(iter(runtime.list_managed(model.id)), None)


def inference_history(model_id: int, minutes: int = HISTORY_MINUTES, now: datetime | None = None) -> InferenceHistory:
    """The last `minutes` minutes of one model's inference counters, gaps filled with zeros."""
    end = (now or utcnow()).replace(second=0, microsecond=0)
    start = end - timedelta(minutes=minutes - 1)
    rows = db.session.scalars(
        select(InferenceMinute).where(InferenceMinute.model_id == model_id, InferenceMinute.minute >= start)
    ).all()
    by_minute = {row.minute: row for row in rows}
    stats = []
    for step in range(minutes):
        minute = start + timedelta(minutes=step)
        row = by_minute.get(minute)
        if row is None:
            stats.append(MinuteStat(minute, 0, 0, 0, None, 0))
        else:
            avg = row.total_ms / row.requests if row.requests else None
            stats.append(MinuteStat(minute, row.requests, row.errors, row.cold_starts, avg, row.max_ms))
    return InferenceHistory(stats)


def capacity() -> Capacity:
    """How many container slots are taken (one per replica), by the state of their model, and the cap."""
    counts = {
        status: models + replicas - with_replicas
        for status, models, replicas, with_replicas in db.session.execute(
            select(
                ServedModel.status,
                func.count(ServedModel.id.distinct()),
                func.count(Replica.id),
                func.count(Replica.model_id.distinct()),
            )
            .select_from(ServedModel)
            .outerjoin(Replica, Replica.model_id == ServedModel.id)
            .where(ServedModel.status.in_([s.value for s in ACTIVE]))
            .group_by(ServedModel.status)
        )
    }
    return Capacity(
        starting=counts.get(Status.STARTING.value, 0),
        running=counts.get(Status.RUNNING.value, 0),
        stopping=counts.get(Status.STOPPING.value, 0),
        limit=context().settings.max_running_containers,
    )


def active_models(limit: int = 500, visible_to: Principal | None = None) -> list[ServedModel]:
    """Models holding a container slot, most recently changed first (the caller's, for a user)."""
    query = (
        select(ServedModel)
        .where(ServedModel.status.in_([s.value for s in ACTIVE]))
        .order_by(ServedModel.status_changed_at.desc(), ServedModel.id.desc())
        .limit(limit)
        .options(selectinload(ServedModel.replicas))
    )
    return list(db.session.scalars(visible(query, visible_to)))


def recent_events(
    kinds: list[str] | None = None,
    model_id: int | None = None,
    limit: int = 50,
    before_id: int | None = None,
    visible_to: Principal | None = None,
) -> list[EventRow]:
    """Lifecycle events, newest first, each with its model (None once the model is gone)."""
    query = (
        select(ModelEvent, ServedModel)
        .outerjoin(ServedModel, ServedModel.id == ModelEvent.model_id)
        .order_by(ModelEvent.id.desc())
        .limit(limit)
    )
    if kinds:
        query = query.where(ModelEvent.kind.in_(kinds))
    if model_id is not None:
        query = query.where(ModelEvent.model_id == model_id)
    if before_id is not None:
        query = query.where(ModelEvent.id < before_id)
    return [EventRow(event, model) for event, model in db.session.execute(visible(query, visible_to)).all()]


def recent_ingested(limit: int = 20) -> list[IngestedEvent]:
    """Events taken from Kafka and what became of them (applied, duplicate, stale), newest first."""
    return list(db.session.scalars(select(IngestedEvent).order_by(IngestedEvent.id.desc()).limit(limit)))


def recent_dead_letters(limit: int = 20) -> list[DeadLetter]:
    """Events from Kafka that could not be applied, with their reasons, newest first."""
    return list(db.session.scalars(select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)))
