"""Single flight per model inside one process: one thread starts, the others wait on it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import QueueFull, RateLimited


@dataclass
class Flight:
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    members: int = 0


class Flights:
    """Bounded waiters per model: past the limit a request is refused with 503 and Retry-After."""

    def __init__(self, max_waiters: int):
        self.max_waiters = max_waiters
        self._lock = threading.Lock()
        self._flights: dict[int, Flight] = {}

    def join(self, model_id: int) -> tuple[Flight, bool]:
        """Returns (flight, leader): the leader does the work, the others wait on flight.done."""
        with self._lock:
            flight = self._flights.get(model_id)
            if flight is None:
                flight = self._flights[model_id] = Flight()
                flight.members = 1
                return flight, True
            if flight.members >= self.max_waiters:
                raise QueueFull(
                    f"too many requests are already waiting for this model to start ({self.max_waiters})",
                    retry_after=2,
                )
            flight.members += 1
            return flight, False

    def finish(self, model_id: int, flight: Flight, result: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            if self._flights.get(model_id) is flight:
                del self._flights[model_id]
        flight.result, flight.error = result, error
        flight.done.set()


class StartQueue:
    """Starts asked for without waiting (wait=false): a few worker threads per process, not one per call.

    A model already queued or starting in this process is not queued again. One owner may have
    at most `per_owner` starts queued or running here (half the workers), so an owner whose starts
    wait for room cannot hold every worker; past that, or past `max_pending` in all, a request is
    refused with Retry-After (429 for the owner, 503 for everyone).
    """

    def __init__(self, workers: int = 4, max_pending: int = 256, per_owner: int | None = None):
        self.workers = workers
        self.max_pending = max_pending
        self.per_owner = per_owner if per_owner is not None else max(1, workers // 2)
        self._lock = threading.Lock()
        self._pending: dict[int, str] = {}  # model id -> its owner
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0

    def submit(self, model_id: int, start: Callable[[], None], owner: str = "") -> bool:
        """Queue `start` for the model; False when a start of it is already queued here."""
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="model-start")
                self._pid = os.getpid()
                self._pending.clear()
            if model_id in self._pending:
                return False
            if len(self._pending) >= self.max_pending:
                raise QueueFull(f"too many starts are already queued ({self.max_pending})", retry_after=2)
            if sum(1 for held in self._pending.values() if held == owner) >= self.per_owner:
                raise RateLimited(
                    f"{owner or 'this owner'} already has {self.per_owner} starts queued or running; "
                    "wait for one to finish, or start with wait=true",
                    retry_after=2,
                )
            self._pending[model_id] = owner
            executor = self._executor

        def run() -> None:
            try:
                start()
            finally:
                with self._lock:
                    self._pending.pop(model_id, None)

        executor.submit(run)
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no start queued here is pending or running; False if some still are at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._pending:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
