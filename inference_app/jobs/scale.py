"""Autoscaling: sample each running model's load, judge it, and grow or shrink its replicas.

Runs in the one active background runner, so a herd of requests adds replicas once. The load
is what every web process reported (services.load), sampled once a tick into a short history
per model; the verdict is decisions.scale_verdict; the lifecycle carries it out. Replica starts
run on a small pool of their own, so one slow start holds up no other model.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import func, select

from ..errors import ServiceError
from ..extensions import db
from ..models import Replica, ReplicaStatus, ServedModel, Status, utcnow
from ..services import lifecycle, load
from ..services.context import context
from ..services.lifecycle.decisions import Replicas, Sample, ScalePolicy, ScaleVerdict, scale_verdict

logger = logging.getLogger(__name__)

RETRY_AFTER_FAILURE = timedelta(seconds=30)  # a replica that failed to start is not tried again sooner
FORGET_EVERY = timedelta(minutes=1)


class Autoscaler:
    """The scaling job's memory (load history, last scale-up, failures) and its pool of replica starts."""

    def __init__(self, app: Flask, workers: int = 4):
        self._app = app
        self._workers = workers
        self._history: dict[int, deque[Sample]] = defaultdict(deque)
        self._last_up: dict[int, datetime] = {}
        self._failed_at: dict[int, datetime] = {}
        self._forgot_at: datetime | None = None
        self.next_due: datetime | None = None  # the earliest scale-down the last tick saw coming
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def tick(self, now: datetime | None = None) -> dict[int, ScaleVerdict]:
        """One look at every running model; returns the verdicts (for tests and logs)."""
        settings = context().settings
        now = now or utcnow()
        up_window = timedelta(seconds=settings.scale_up_window_seconds)
        down_delay = timedelta(seconds=settings.scale_down_delay_seconds)
        horizon = max(up_window, down_delay) + timedelta(seconds=2 * settings.scale_check_interval_seconds)
        models = db.session.execute(
            select(
                ServedModel.id,
                ServedModel.min_replicas,
                ServedModel.max_replicas,
                ServedModel.target_concurrency,
                ServedModel.desired_replicas,
                ServedModel.scale_note,
            ).where(ServedModel.status == Status.RUNNING.value)
        ).all()
        counts: dict[int, dict[str, int]] = defaultdict(dict)
        for model_id, status, count in db.session.execute(
            select(Replica.model_id, Replica.status, func.count()).group_by(Replica.model_id, Replica.status)
        ):
            counts[model_id][status] = count
        loads = load.observed(now)
        if self._forgot_at is None or now - self._forgot_at >= FORGET_EVERY:
            load.forget_old(now)
            self._forgot_at = now
        db.session.commit()
        running = {m.id for m in models}
        for model_id in [m for m in self._history if m not in running]:
            self._forget(model_id)
        verdicts = {}
        self.next_due = None
        for m in models:
            history = self._history[m.id]
            _observe(history, loads.get(m.id), now)
            while history and history[0].at < now - horizon:
                history.popleft()
            c = counts.get(m.id, {})
            replicas = Replicas(
                ready=c.get(ReplicaStatus.READY.value, 0),
                starting=c.get(ReplicaStatus.STARTING.value, 0),
                draining=c.get(ReplicaStatus.DRAINING.value, 0),
            )
            policy = ScalePolicy(m.min_replicas, m.max_replicas, m.target_concurrency)
            verdict = scale_verdict(
                list(history), now, replicas, policy, up_window, down_delay, self._last_up.get(m.id)
            )
            verdicts[m.id] = verdict
            if verdict.down_due_at is not None:
                self.next_due = min(self.next_due or verdict.down_due_at, verdict.down_due_at)
            try:
                self._act(m, verdict, replicas, now)
            except ServiceError as exc:  # one model's trouble holds up no other model
                db.session.rollback()
                logger.warning("scaling model %s: %s", m.id, exc.message)
            except Exception:
                db.session.rollback()
                logger.exception("scaling model %s failed", m.id)
        return verdicts

    def _act(self, model, verdict: ScaleVerdict, replicas: Replicas, now: datetime) -> None:
        model_id = model.id
        if replicas.draining:
            lifecycle.finish_drains(model_id, now)
        if verdict.add:
            failed = self._failed_at.get(model_id)
            if failed is not None and now - failed < RETRY_AFTER_FAILURE:
                return
            growth = lifecycle.grow(model_id, verdict.add, verdict.desired, verdict.reason)
            if growth.claims or growth.revived:
                self._last_up[model_id] = now
            for claim in growth.claims:
                self._submit(claim)
        elif verdict.remove:
            # one after another, each out before the next; one with a request in flight drains,
            # and the next look goes on from there
            for _ in range(verdict.remove):
                if not lifecycle.take_out(model_id, verdict.reason):
                    break
        elif (model.desired_replicas, model.scale_note) != (verdict.desired, None):
            lifecycle.settle(model_id, verdict.desired, None)

    def _submit(self, claim: lifecycle.ReplicaClaim) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="replica-start")
            pool = self._pool
        pool.submit(self._start, claim)

    def _start(self, claim: lifecycle.ReplicaClaim) -> None:
        with self._app.app_context():
            try:
                if not lifecycle.start_replica(claim):
                    self._failed_at[claim.model_id] = utcnow()
            except Exception:
                logger.exception("starting replica %s of model %s failed", claim.replica, claim.model_id)
                self._failed_at[claim.model_id] = utcnow()
            finally:
                db.session.remove()

    def history(self, model_id: int) -> list[Sample]:
        """The load samples kept for a model, oldest first."""
        return list(self._history.get(model_id, ()))

    def _forget(self, model_id: int) -> None:
        self._history.pop(model_id, None)
        self._last_up.pop(model_id, None)
        self._failed_at.pop(model_id, None)

    def close(self, wait: bool = True) -> None:
        """Stop the pool of replica starts (those under way finish first when `wait`)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait)


def _observe(history: deque[Sample], seen: tuple[float, datetime] | None, now: datetime) -> None:
    """Add a load sample, timed by the newest report it sums (the load's own time), else by now.

    A report read again on the next tick adds nothing: the load is as it was.
    """
    value, at = seen if seen is not None else (0.0, now)
    if history and at <= history[-1].at:
        if seen is not None:
            return
        at = now
    history.append(Sample(at, value))
