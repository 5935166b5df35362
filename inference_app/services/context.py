"""The per-process collaborators of the services, kept in app.extensions["inference"]."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import urllib3
from flask import Flask, current_app

from ..config import Settings
from ..extensions import db
from ..http_pools import ProcessPool
from ..runtime import Runtime, make_runtime
from .activity import Activity
from .flights import Flights, StartQueue
from .model_view import RunningModels
from .rate_limit import RateLimiter
from .shared_activity import SharedActivity

EXTENSION = "inference"


@dataclass
class InferenceContext:
    """Nothing here opens a connection or a thread until first used, so it is fork-safe."""

    settings: Settings
    runtime: Runtime
    _activity: Activity = field(default_factory=Activity)
    flights: Flights = field(default_factory=lambda: Flights(500))
    starts: StartQueue = field(default_factory=StartQueue)
    rate_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(0))
    running_models: RunningModels = field(default_factory=RunningModels)
    _http: ProcessPool = field(default_factory=lambda: ProcessPool(num_pools=256, maxsize=64))

    @property
    def http(self) -> urllib3.PoolManager:
        """Pooled keep-alive connections to model instances, one pool per process."""
        return self._http.get()

    @property
    def activity(self) -> Activity:
        """The activity ledger, bound to the database and flushing (started on first use)."""
        if not self._activity.started():  # db.engine is looked up only when there is something to start
            self._activity.start(db.engine)
        return self._activity

    def close(self, starts_timeout: float = 10.0) -> None:
        """Let queued starts finish (bounded), then flush and close the activity ledger (app teardown, exit)."""
        self.starts.wait_idle(starts_timeout)
        self._activity.close()

    @property
    def owner(self) -> str:
        """Who holds a lease: this process (pid changes after fork, so computed each time)."""
        return f"{socket.gethostname()}:{os.getpid()}"


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions[EXTENSION] = InferenceContext(
        settings=settings,
        runtime=make_runtime(settings),
        _activity=Activity() if settings.is_sqlite else SharedActivity(),
        flights=Flights(settings.max_waiters_per_model),
        rate_limiter=RateLimiter(settings.rate_limit_per_minute),
    )


def context() -> InferenceContext:
    return current_app.extensions[EXTENSION]
