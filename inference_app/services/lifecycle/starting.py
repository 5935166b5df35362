"""Bringing a model up: one start per model across every process, the rest wait for it.

Within a process, requests for a model that is not running join one flight (services.flights);
across processes, the leader of each flight claims the start under the lifecycle lock, so one
of them starts the instance and the others wait for the claim to resolve. The slow runtime work
happens outside the lock, under the claim's lease.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy.exc import OperationalError

from ...coordination import is_lock_conflict, lifecycle_transaction
from ...errors import (
    Conflict,
    ContainerFailed,
    EngineUnavailable,
    Forbidden,
    NoCapacity,
    OwnerLimitReached,
    ServiceError,
    StartTimeout,
)
from ...extensions import db
from ...metrics import COLD_START, WAITERS
from ...models import EventKind, ServedModel, Status, utcnow
from ...runtime import Endpoint, InstanceSpec
from ...runtime.readiness import backoff_delays
from ...units import parse_memory
from ..context import context
from ..validation import image_allowed, nano_cpus, runtime_hook_env
from . import eviction, transitions
from .decisions import admit, owner_limit

logger = logging.getLogger(__name__)

CLAIM_WAIT = 2.0  # a wait=false start answers once its start is claimed, or after this many seconds


@dataclass(frozen=True)
class Readiness:
    """A running model's endpoint, whether this request paid for a start, and how long it waited."""

    endpoint: Endpoint
    cold: bool
    waited_s: float


@dataclass(frozen=True)
class _Wait:
    reason: str  # "starting", "stopping", "capacity" or "busy"


@dataclass(frozen=True)
class _Claimed:
    victim: eviction.Victim | None


def ensure_ready(model, claimed: threading.Event | None = None, beyond_owner_limit: bool = False) -> Readiness:
    """Return the model's endpoint, starting its instance first if it is not running.

    `beyond_owner_limit`: an administrator's start, which the per-owner limit does not hold back.
    """
    endpoint = transitions.endpoint_of(model)
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
            endpoint = _bring_up(model_id, began, claimed, beyond_owner_limit)
        except BaseException as exc:
            ctx.flights.finish(model_id, flight, error=exc)
            raise
        ctx.flights.finish(model_id, flight, result=endpoint)
        return Readiness(endpoint, cold=True, waited_s=time.monotonic() - began)
    finally:
        WAITERS.dec()


def _no_capacity(reason: str, model_id: int) -> NoCapacity | OwnerLimitReached:
    settings = context().settings
    retry_after = max(1, int(settings.idle_check_interval_seconds))
    if reason == "owner_limit":
        owner = db.session.get(ServedModel, model_id).user_id
        db.session.rollback()
        limit = owner_limit(settings.max_running_containers, settings.max_running_per_owner)
        return OwnerLimitReached(
            f"owner {owner!r} already holds all {limit} of their container slots (MAX_RUNNING_PER_OWNER), "
            "each kept warm or with requests in flight",
            retry_after=retry_after,
        )
    return NoCapacity(
        f"all {settings.max_running_containers} container slots are busy with requests in flight or kept warm",
        retry_after=retry_after,
    )


def _bring_up(model_id: int, began: float, claimed: threading.Event | None, beyond_owner_limit: bool) -> Endpoint:
    settings = context().settings
    queue_deadline = began + settings.queue_timeout_seconds
    delays = backoff_delays(first=0.02, cap=0.25)
    _settle_last_use()
    while True:
        try:
            decision = _claim_start(model_id, beyond_owner_limit)
        except OperationalError as exc:
            if not is_lock_conflict(exc):
                raise
            decision = _Wait("busy")
        if isinstance(decision, Endpoint):
            return decision
        if claimed is not None:
            claimed.set()
        if isinstance(decision, _Claimed):
            if decision.victim is not None:
                eviction.finish(decision.victim)
            return _start_claimed(model_id)
        # Someone else is starting or stopping it, or there is no room yet: wait and look again.
        now = time.monotonic()
        if decision.reason in ("capacity", "owner_limit") and now >= queue_deadline:
            raise _no_capacity(decision.reason, model_id)
        if now >= queue_deadline + settings.start_timeout_seconds:
            raise StartTimeout(f"the model stayed '{decision.reason}' for too long", retry_after=5)
        time.sleep(next(delays))


def _settle_last_use() -> None:
    """Write this process's recent uses first: eviction picks by last use as the database has it.

    A model used in the last flush interval could not be held for eviction (its clock is not yet
    written), and another owner's older model would give up its slot in its place. Outside any
    transaction: the flush updates model rows the claim locks.
    """
    try:
        context().activity.flush()
    except Exception:  # the flusher writes them soon anyway; the claim goes on with what is there
        logger.warning("could not write recent model use before a start", exc_info=True)


def _claim_start(model_id: int, beyond_owner_limit: bool) -> Endpoint | _Wait | _Claimed:
    """Under the lock: the endpoint if it runs, a reason to wait, or the claim (with a victim to evict)."""
    ctx = context()
    settings = ctx.settings
    with lifecycle_transaction():
        model = transitions.locked(model_id, include_deleted=False)
        now = utcnow()
        endpoint = transitions.endpoint_of(model)
        if endpoint is not None:
            return endpoint
        if transitions.busy(model, now):
            return _Wait("starting" if model.state is Status.STARTING else "stopping")
        cap = settings.max_running_containers
        per_owner = owner_limit(cap, settings.max_running_per_owner)
        admission = admit(model.user_id, eviction.slots(excluding=model_id), cap, per_owner, beyond_owner_limit)
        victim = None
        if not admission.free:
            victim = eviction.claim_victim(admission, model_id, now)
            if victim is None:
                return _Wait(admission.reason)
        transitions.claim(model, Status.STARTING, ctx.owner, settings.start_timeout_seconds, now)
        logger.info("starting model %s (%s)", model.id, model.image)
        return _Claimed(victim)


def instance_spec(model: ServedModel, replica: int = 0) -> InstanceSpec:
    """The instance a model's registration asks for, within the service's limits."""
    settings = context().settings
    max_memory = parse_memory("MAX_MEMORY", settings.max_memory)
    memory = min(model.memory_bytes or parse_memory("DEFAULT_MEMORY", settings.default_memory), max_memory)
    cpus = max(min(model.cpus or settings.default_cpus, settings.max_cpus), settings.min_cpus)
    return InstanceSpec(
        model_id=model.id,
        user_id=model.user_id,
        version=model.version,
        image=model.image,
        port=model.port,
        replica=replica,
        health_path=model.health_path,
        env=dict(model.env or {}),
        memory_bytes=memory,
        nano_cpus=nano_cpus(cpus),
        pids_limit=settings.pids_limit,
        read_only=settings.read_only_rootfs,
    )


def _start_claimed(model_id: int) -> Endpoint:
    ctx = context()
    runtime = ctx.runtime
    model = db.session.get(ServedModel, model_id, populate_existing=True)
    spec = instance_spec(model)
    health_path = model.health_path
    db.session.commit()  # end the read transaction: no database locks held while the runtime works
    began = time.monotonic()
    try:
        check_allowed(spec)
        instance = runtime.start(spec)
        endpoint = runtime.wait_ready(instance, health_path, began + ctx.settings.start_timeout_seconds)
    except EngineUnavailable as exc:
        _abandon(model_id, Status.STOPPED, exc.message)
        raise
    except ServiceError as exc:
        _remove_quietly(model_id)
        _abandon(model_id, Status.FAILED, exc.message)
        raise
    except Exception as exc:
        logger.exception("starting model %s failed unexpectedly", model_id)
        _remove_quietly(model_id)
        _abandon(model_id, Status.FAILED, f"start failed: {exc.__class__.__name__}")
        raise ContainerFailed("the container could not be started") from exc
    duration = time.monotonic() - began
    COLD_START.observe(duration)
    with lifecycle_transaction():
        model = transitions.locked(model_id)
        ours = transitions.held_by(model, Status.STARTING, ctx.owner)
        if ours:
            transitions.place(model, endpoint, utcnow(), fresh_start=True)
            transitions.record(model_id, EventKind.STARTED, duration_ms=int(duration * 1000))
    if not ours:
        _remove_quietly(model_id, endpoint.instance_id)
        raise Conflict("the model was stopped while it was starting")
    logger.info("model %s running on %s:%s after %.0f ms", model_id, endpoint.host, endpoint.port, duration * 1000)
    return endpoint


def check_allowed(spec: InstanceSpec) -> None:
    """The registration rules that guard the host, again at every start, so they also hold for
    models registered before a rule was added or narrowed: IMAGE_ALLOWLIST and code-loading env keys."""
    allowlist = context().settings.allowed_image_prefixes
    if not image_allowed(spec.image, allowlist):
        raise Forbidden(f"image {spec.image} is not in IMAGE_ALLOWLIST ({', '.join(allowlist)})")
    hooks = sorted(key for key in spec.env if runtime_hook_env(key))
    if hooks:
        raise Forbidden(
            f"env key {hooks[0]} changes how the container loads code and is not allowed; "
            "register the model again without it"
        )


def _abandon(model_id: int, target: Status, message: str) -> None:
    """Record a failed start, if the start is still ours to record."""
    owner = context().owner
    with lifecycle_transaction():
        model = transitions.locked(model_id)
        if transitions.held_by(model, Status.STARTING, owner):
            transitions.move(model, target, error=message)
            transitions.record(model_id, EventKind.FAILED, detail=message)
    logger.warning("model %s failed to start: %s", model_id, message.splitlines()[0] if message else "")


def _remove_quietly(model_id: int, instance_id: str | None = None) -> None:
    """Remove what a failed start left behind: one instance, or all of the model's."""
    runtime = context().runtime
    try:
        if instance_id is not None:
            runtime.remove(instance_id, timeout=0)
        else:
            runtime.remove_model(model_id, timeout=0)
    except ServiceError as exc:
        logger.warning("could not remove the instances of model %s: %s", model_id, exc.message)


def request_start(model: ServedModel, wait: bool, keep_warm: bool, by_admin: bool = False) -> Readiness | None:
    """Start a model: wait for it to be ready, or queue its start and return once it is claimed.

    `by_admin`: an administrator asked, so the per-owner limit does not hold the start back,
    and a pin (keep_warm) is the administrator's.
    """
    if wait:
        readiness = ensure_ready(model, beyond_owner_limit=by_admin)
        if keep_warm:
            set_keep_warm(model.id, True, by_admin)
        return readiness
    from flask import current_app

    app = current_app._get_current_object()
    claimed = threading.Event()
    model_id = model.id

    def start() -> None:
        with app.app_context():
            try:
                fresh = db.session.get(ServedModel, model_id)
                ensure_ready(fresh, claimed=claimed, beyond_owner_limit=by_admin)
                if keep_warm:
                    set_keep_warm(model_id, True, by_admin)
            except ServiceError as exc:
                logger.info("background start of model %s failed: %s", model_id, exc.message.splitlines()[0])
            except Exception:
                logger.exception("background start of model %s failed", model_id)
            finally:
                claimed.set()
                db.session.remove()

    if context().starts.submit(model_id, start, owner=model.user_id):
        claimed.wait(timeout=CLAIM_WAIT)
    return None


def set_keep_warm(model_id: int, keep_warm: bool, by_admin: bool = False) -> None:
    with lifecycle_transaction():
        transitions.set_keep_warm(transitions.locked(model_id), keep_warm, by_admin)
