"""A model's container lifecycle: ensure_ready, stop, evict, and noticing vanished containers.

Every decision is taken here, under the lifecycle lock (services.claims), and stored in the
database as a state of the machine in models.status; the slow Docker work happens outside
the lock, guarded by a lease, so a crashed starter's claim expires and can be taken over.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from ..errors import (
    Conflict,
    ContainerFailed,
    EngineUnavailable,
    NoCapacity,
    ServiceError,
    StartTimeout,
)
from ..extensions import db
from ..metrics import COLD_START, WAITERS
from ..models import ACTIVE, EventKind, ModelEvent, ServedModel, Status, utcnow
from ..runtime.engine import ContainerSpec, Endpoint
from ..runtime.readiness import backoff_delays, wait_ready
from ..units import parse_memory
from .claims import claim_transaction, is_lock_conflict, lease_valid, locked_model
from .context import context

logger = logging.getLogger(__name__)

LEASE_GRACE = timedelta(seconds=15)


@dataclass(frozen=True)
class Readiness:
    """A running model's endpoint, whether this request paid for a start, and how long it waited."""

    endpoint: Endpoint
    cold: bool
    waited_s: float


@dataclass(frozen=True)
class _Wait:
    reason: str  # "starting", "stopping" or "capacity"


@dataclass(frozen=True)
class _Claimed:
    victim_id: int | None


def endpoint_of(model: ServedModel) -> Endpoint | None:
    if model.state is Status.RUNNING and model.host_port and model.container_host and model.container_id:
        return Endpoint(model.container_host, model.host_port, model.container_id)
    return None


def ensure_ready(model: ServedModel, claimed: threading.Event | None = None) -> Readiness:
    """Return the model's endpoint, starting its container first if it is not running."""
    endpoint = endpoint_of(model)
    if endpoint is not None:
        if claimed is not None:
            claimed.set()
        return Readiness(endpoint, cold=False, waited_s=0.0)
    ctx = context()
    settings = ctx.settings
    model_id = model.id
    db.session.rollback()  # waiting must not hold a pooled database connection
    began = time.monotonic()
    deadline = began + settings.queue_timeout_seconds + settings.start_timeout_seconds
    flight, leader = ctx.flights.join(model_id)
    WAITERS.inc()
    try:
        if not leader:
            if claimed is not None:
                claimed.set()
            if not flight.done.wait(timeout=max(0.0, deadline - time.monotonic())):
                raise StartTimeout("gave up waiting for the model's container to start", retry_after=5)
            if flight.error is not None:
                raise flight.error
            return Readiness(flight.result, cold=True, waited_s=time.monotonic() - began)
        try:
            endpoint = _bring_up(model_id, began, claimed)
        except BaseException as exc:
            ctx.flights.finish(model_id, flight, error=exc)
            raise
        ctx.flights.finish(model_id, flight, result=endpoint)
        return Readiness(endpoint, cold=True, waited_s=time.monotonic() - began)
    finally:
        WAITERS.dec()


def _bring_up(model_id: int, began: float, claimed: threading.Event | None) -> Endpoint:
    settings = context().settings
    queue_deadline = began + settings.queue_timeout_seconds
    delays = backoff_delays(first=0.02, cap=0.25)
    while True:
        try:
            decision = _claim(model_id)
        except OperationalError as exc:
            if not is_lock_conflict(exc):
                raise
            decision = _Wait("busy")
        if isinstance(decision, Endpoint):
            return decision
        if claimed is not None:
            claimed.set()
        if isinstance(decision, _Claimed):
            if decision.victim_id is not None:
                _finish_stop(decision.victim_id, EventKind.EVICTED, release=True)
            return _start_claimed(model_id)
        # Someone else is starting or stopping it, or there is no room yet: wait and look again.
        now = time.monotonic()
        if decision.reason == "capacity" and now >= queue_deadline:
            raise NoCapacity(
                f"all {settings.max_running_containers} container slots are busy with requests in flight",
                retry_after=max(1, int(settings.idle_check_interval_seconds)),
            )
        if now >= queue_deadline + settings.start_timeout_seconds:
            raise StartTimeout(f"the model stayed '{decision.reason}' for too long", retry_after=5)
        time.sleep(next(delays))


def _claim(model_id: int) -> Endpoint | _Wait | _Claimed:
    ctx = context()
    settings = ctx.settings
    with claim_transaction():
        model = locked_model(model_id, include_deleted=False)
        now = utcnow()
        endpoint = endpoint_of(model)
        if endpoint is not None:
            return endpoint
        if model.state in (Status.STARTING, Status.STOPPING) and lease_valid(model, now):
            return _Wait("starting" if model.state is Status.STARTING else "stopping")
        victim_id = None
        active = db.session.scalar(
            select(func.count())
            .select_from(ServedModel)
            .where(ServedModel.status.in_([s.value for s in ACTIVE]), ServedModel.id != model_id)
        )
        if active >= settings.max_running_containers:
            victim = _pick_victim(model_id)
            if victim is None:
                return _Wait("capacity")
            victim.move_to(Status.STOPPING, now)
            victim.lease_owner = ctx.owner
            victim.lease_expires_at = now + timedelta(seconds=settings.stop_timeout_seconds) + LEASE_GRACE
            victim_id = victim.id
            db.session.add(
                ModelEvent(model_id=victim.id, kind=EventKind.EVICTED, detail=f"made room for model {model_id}")
            )
            logger.info("evicting model %s to make room for model %s", victim.id, model_id)
        model.move_to(Status.STARTING, now)
        model.lease_owner = ctx.owner
        model.lease_expires_at = now + timedelta(seconds=settings.start_timeout_seconds) + LEASE_GRACE
        model.last_error = None
        logger.info("starting model %s (%s)", model.id, model.image)
        return _Claimed(victim_id)


def _pick_victim(for_model: int) -> ServedModel | None:
    """The least recently used running model with nothing in flight, held for stopping."""
    activity = context().activity
    candidates = db.session.scalars(
        select(ServedModel)
        .where(
            ServedModel.status == Status.RUNNING.value, ServedModel.keep_warm.is_(False), ServedModel.id != for_model
        )
        .order_by(ServedModel.last_used_at.asc().nulls_first(), ServedModel.id)
        .limit(20)
    ).all()  # no row locks needed: every status change happens under the lifecycle lock
    for candidate in candidates:
        if activity.try_hold(candidate.id):
            return candidate
    return None


def container_spec(model: ServedModel) -> ContainerSpec:
    settings = context().settings
    max_memory = parse_memory("MAX_MEMORY", settings.max_memory)
    memory = min(model.memory_bytes or parse_memory("DEFAULT_MEMORY", settings.default_memory), max_memory)
    cpus = min(model.cpus or settings.default_cpus, settings.max_cpus)
    return ContainerSpec(
        model_id=model.id,
        user_id=model.user_id,
        version=model.version,
        image=model.image,
        port=model.port,
        env=dict(model.env or {}),
        memory_bytes=memory,
        nano_cpus=int(cpus * 1e9),
        pids_limit=settings.pids_limit,
        read_only=settings.read_only_rootfs,
    )


def _start_claimed(model_id: int) -> Endpoint:
    ctx = context()
    model = db.session.get(ServedModel, model_id, populate_existing=True)
    spec = container_spec(model)
    health_path = model.health_path
    db.session.commit()  # end the read transaction: no database locks held while Docker works
    began = time.monotonic()
    try:
        info = ctx.engine.create_and_start(spec)
        endpoint = wait_ready(ctx.engine, ctx.http, info, health_path, began + ctx.settings.start_timeout_seconds)
    except EngineUnavailable as exc:
        _abandon(model_id, Status.STOPPED, exc.message)
        raise
    except ServiceError as exc:
        _remove_quietly(ctx.engine.name_for(model_id))
        _abandon(model_id, Status.FAILED, exc.message)
        raise
    except Exception as exc:
        logger.exception("starting model %s failed unexpectedly", model_id)
        _remove_quietly(ctx.engine.name_for(model_id))
        _abandon(model_id, Status.FAILED, f"start failed: {exc.__class__.__name__}")
        raise ContainerFailed("the container could not be started") from exc
    duration = time.monotonic() - began
    COLD_START.observe(duration)
    with claim_transaction():
        model = locked_model(model_id)
        if model.state is not Status.STARTING or model.lease_owner != ctx.owner:
            stopped_meanwhile = True
        else:
            stopped_meanwhile = False
            now = utcnow()
            model.move_to(Status.RUNNING, now)
            model.container_id = endpoint.container_id
            model.container_host = endpoint.host
            model.host_port = endpoint.port
            model.started_at = now
            model.last_used_at = now
            model.lease_owner = None
            model.lease_expires_at = None
            db.session.add(ModelEvent(model_id=model_id, kind=EventKind.STARTED, duration_ms=int(duration * 1000)))
    if stopped_meanwhile:
        _remove_quietly(endpoint.container_id)
        raise Conflict("the model was stopped while it was starting")
    logger.info("model %s running on %s:%s after %.0f ms", model_id, endpoint.host, endpoint.port, duration * 1000)
    return endpoint


def _abandon(model_id: int, target: Status, message: str) -> None:
    """Record a failed start, if the start is still ours to record."""
    owner = context().owner
    with claim_transaction():
        model = locked_model(model_id)
        if model.state is Status.STARTING and model.lease_owner == owner:
            model.move_to(target)
            model.last_error = message[:4000]
            db.session.add(ModelEvent(model_id=model_id, kind=EventKind.FAILED, detail=message[:4000]))
    logger.warning("model %s failed to start: %s", model_id, message.splitlines()[0] if message else "")


def _remove_quietly(name_or_id: str) -> None:
    try:
        context().engine.remove(name_or_id, timeout=0)
    except ServiceError as exc:
        logger.warning("could not remove container %s: %s", name_or_id, exc.message)


def stop(model_id: int, kind: str = EventKind.STOPPED, detail: str | None = None) -> ServedModel:
    """Stop and remove the model's container; stopping a stopped model is not an error."""
    ctx = context()
    with claim_transaction():
        model = locked_model(model_id, include_deleted=True)
        now = utcnow()
        if model.state is Status.FAILED:
            model.move_to(Status.STOPPED, now)
        if model.state is Status.STOPPED:
            needs_stop = False
        else:
            needs_stop = True
            model.move_to(Status.STOPPING, now)
            model.lease_owner = ctx.owner
            model.lease_expires_at = now + timedelta(seconds=ctx.settings.stop_timeout_seconds) + LEASE_GRACE
    ctx.running_models.forget(model_id)
    if not needs_stop:
        ctx.engine.remove(ctx.engine.name_for(model_id))  # a stray container left by a crash
        return db.session.get(ServedModel, model_id)
    return _finish_stop(model_id, kind, detail=detail)


def _finish_stop(model_id: int, kind: str, detail: str | None = None, release: bool = False) -> ServedModel:
    """Remove the container of a model already moved to STOPPING by us, then mark it stopped."""
    ctx = context()
    ctx.running_models.forget(model_id)
    try:
        ctx.engine.remove(ctx.engine.name_for(model_id))
        with claim_transaction():
            model = locked_model(model_id, include_deleted=True)
            if model.state is Status.STOPPING:
                model.move_to(Status.STOPPED)
                if kind != EventKind.EVICTED:  # the eviction was recorded when it was decided
                    db.session.add(ModelEvent(model_id=model_id, kind=kind, detail=detail))
        logger.info("model %s stopped (%s)", model_id, kind)
        return model
    finally:
        if release:
            ctx.activity.release(model_id)


def report_unreachable(model_id: int, endpoint: Endpoint) -> bool:
    """A forward could not connect: if the container is gone, mark the model stopped.

    Returns True when the model was found gone (so the caller may start it again).
    """
    ctx = context()
    ctx.running_models.forget(model_id)
    info = ctx.engine.inspect(endpoint.container_id)
    if info is not None and info.running:
        return False
    with claim_transaction():
        model = locked_model(model_id, include_deleted=True)
        if model.state is Status.RUNNING and model.container_id == endpoint.container_id:
            model.move_to(Status.STOPPED)
            model.last_error = "the container disappeared (killed or removed outside the service)"
            db.session.add(ModelEvent(model_id=model_id, kind=EventKind.VANISHED, detail=model.last_error))
            logger.warning("model %s: container %s vanished", model_id, endpoint.container_id[:12])
    if info is not None:
        _remove_quietly(endpoint.container_id)
    return True


def set_keep_warm(model_id: int, keep_warm: bool) -> None:
    with claim_transaction():
        model = locked_model(model_id)
        if model.state in (Status.STARTING, Status.RUNNING):
            model.keep_warm = keep_warm


def request_start(model: ServedModel, wait: bool, keep_warm: bool) -> Readiness | None:
    """Start a model: wait for it to be ready, or start it in the background and return at once."""
    if wait:
        readiness = ensure_ready(model)
        if keep_warm:
            set_keep_warm(model.id, True)
        return readiness
    from flask import current_app

    app = current_app._get_current_object()
    claimed = threading.Event()
    model_id = model.id

    def run() -> None:
        with app.app_context():
            try:
                fresh = db.session.get(ServedModel, model_id)
                ensure_ready(fresh, claimed=claimed)
                if keep_warm:
                    set_keep_warm(model_id, True)
            except ServiceError as exc:
                logger.info("background start of model %s failed: %s", model_id, exc.message.splitlines()[0])
            except Exception:
                logger.exception("background start of model %s failed", model_id)
            finally:
                claimed.set()

    threading.Thread(target=run, name=f"start-model-{model_id}", daemon=True).start()
    claimed.wait(timeout=5)
    return None
