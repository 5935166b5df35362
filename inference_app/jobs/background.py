"""The background role: the APScheduler jobs (idle shutdown, reconciliation, autoscaling) in one process.

With PostgreSQL, any number of processes may run this role; a session-level advisory lock
elects one active runner and the others stand by, taking over within LEADER_POLL seconds
when it dies (its database session ends, and the lock with it).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from ..coordination import BACKGROUND_LEADER_LOCK, dedicated_connection, is_postgres, try_session_lock
from ..errors import ServiceError
from ..events.listener import KafkaListener
from ..extensions import db
from ..models import Heartbeat, utcnow
from . import idle, reconcile
from .scale import Autoscaler

logger = logging.getLogger(__name__)

LEADER_POLL = 5.0
HEARTBEAT_EVERY = 2.0
DUE_MARGIN = timedelta(milliseconds=10)  # a job brought forward runs just after what fell due
EXTENSION = "background"


class BackgroundRunner:
    """Runs the scheduled jobs for one app once started; never starts itself."""

    def __init__(self, app: Flask, role: str):
        self._app = app
        self.role = role
        self._scheduler: BackgroundScheduler | None = None
        self._leader_conn = None
        self._stop = threading.Event()
        self.listener: KafkaListener | None = None
        self.autoscaler = Autoscaler(app)
        self.last_runs: dict[str, datetime] = {}
        self.last_errors: dict[str, str] = {}

    # -- the jobs --------------------------------------------------------------------------------
    def _run(self, name: str, job) -> None:
        with self._app.app_context():
            try:
                job()
                self.last_errors.pop(name, None)
            except ServiceError as exc:
                db.session.rollback()
                if self.last_errors.get(name) != exc.message:
                    logger.warning("%s: %s", name, exc.message)
                self.last_errors[name] = exc.message
            except Exception as exc:
                db.session.rollback()
                logger.exception("%s failed", name)
                self.last_errors[name] = exc.__class__.__name__
            finally:
                self.last_runs[name] = utcnow()
                db.session.remove()

    def run_idle(self) -> None:
        self._run("idle_shutdown", idle.reap_idle)

    def run_reconcile(self) -> None:
        self._run("reconcile", reconcile.reconcile)

    def run_autoscale(self) -> None:
        self._run("autoscale", self.autoscaler.tick)
        self._look_again_at("autoscale", self.autoscaler.next_due)

    def _look_again_at(self, job_id: str, due: datetime | None) -> None:
        """Run a job when something falls due before its next regular run (a scale-down, to the tick)."""
        scheduler = self._scheduler
        if scheduler is None or due is None:
            return
        job = scheduler.get_job(job_id)
        due = due + DUE_MARGIN
        if job is not None and job.next_run_time is not None and due < job.next_run_time:
            scheduler.modify_job(job_id, next_run_time=due)

    def run_heartbeat(self) -> None:
        """Publish this runner's state for the web processes' /readyz, and mind the listener."""
        if self.listener is not None:
            self.listener.ensure_alive()
        with self._app.app_context():
            try:
                state = self.describe()
                beat = db.session.get(Heartbeat, "background") or Heartbeat(name="background")
                beat.owner = self._app.extensions["inference"].owner
                beat.state = state
                beat.beat_at = utcnow()
                db.session.add(beat)
                db.session.commit()
            except Exception as exc:
                db.session.rollback()
                logger.warning("heartbeat failed: %s", exc.__class__.__name__)
            finally:
                db.session.remove()

    def _models_deleted(self, model_ids: list[int]) -> None:
        """Deleted models' containers are stopped by reconciliation: run it now rather than later."""
        if self._scheduler is not None:
            self._scheduler.modify_job("reconcile", next_run_time=datetime.now(self._scheduler.timezone))

    # -- starting and stopping ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler now (single-process form, no election)."""
        settings = self._app.extensions["inference"].settings
        self.run_reconcile()
        scheduler = BackgroundScheduler(
            daemon=True, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}
        )
        scheduler.add_job(self.run_idle, "interval", seconds=settings.idle_check_interval_seconds, id="idle_shutdown")
        scheduler.add_job(self.run_reconcile, "interval", seconds=settings.reconcile_interval_seconds, id="reconcile")
        scheduler.add_job(self.run_autoscale, "interval", seconds=settings.scale_check_interval_seconds, id="autoscale")
        scheduler.add_job(self.run_heartbeat, "interval", seconds=HEARTBEAT_EVERY, id="heartbeat")
        scheduler.start()
        self._scheduler = scheduler
        self.listener = KafkaListener(self._app, settings, on_deleted=self._models_deleted)
        self.listener.start()
        self.run_heartbeat()
        logger.info(
            "background jobs running in %s role: idle check every %ss, reconcile every %ss, autoscale every %ss",
            self.role,
            settings.idle_check_interval_seconds,
            settings.reconcile_interval_seconds,
            settings.scale_check_interval_seconds,
        )

    def shutdown(self) -> None:
        self._stop.set()
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        self.autoscaler.close(wait=False)

    def run_forever(self) -> None:
        """The worker role: win the election (PostgreSQL), run the jobs, stop when the lock is lost."""
        with self._app.app_context():
            postgres = is_postgres()
        if not postgres:
            self.start()
            self._stop.wait()
            return
        while not self._stop.is_set():
            if not self._acquire_leadership():
                self._stop.wait(LEADER_POLL)
                continue
            logger.info("this process is the active background runner")
            self.start()
            while not self._stop.wait(LEADER_POLL):
                if not self._still_leader():
                    logger.error("lost the background lock (database connection gone); standing by")
                    self.shutdown()
                    self._stop.clear()
                    break

    def _acquire_leadership(self) -> bool:
        try:
            with self._app.app_context():
                if self._leader_conn is None:
                    self._leader_conn = dedicated_connection(db.engine)
                return try_session_lock(self._leader_conn, BACKGROUND_LEADER_LOCK)
        except Exception as exc:
            logger.warning("background election failed: %s", exc.__class__.__name__)
            self._drop_leader_conn()
            return False

    def _still_leader(self) -> bool:
        try:
            with self._leader_conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except Exception:
            self._drop_leader_conn()
            return False

    def _drop_leader_conn(self) -> None:
        try:
            if self._leader_conn is not None:
                self._leader_conn.close()
        except Exception:  # already broken: closing is only tidiness
            pass
        self._leader_conn = None

    def describe(self) -> dict:
        return {
            "role": self.role,
            "active": self._scheduler is not None,
            "last_runs": {k: v.isoformat() for k, v in self.last_runs.items()},
            "errors": dict(self.last_errors),
            "kafka": self.listener.describe() if self.listener is not None else {"state": "off"},
        }


def init_app(app: Flask, role: str) -> None:
    app.extensions[EXTENSION] = BackgroundRunner(app, role)
