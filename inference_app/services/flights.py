"""Single flight per model inside one process: one thread starts, the others wait on it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import QueueFull


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
