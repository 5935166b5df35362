"""Per-token limits, per process: a request rate (token bucket) and inferences in flight.

With several web workers each keeps its own counts, so the effective limits are up to
RATE_LIMIT_PER_MINUTE and MAX_CONCURRENT_INFERENCES_PER_TOKEN times the workers; the point is
to stop one caller from flooding the host or holding every thread of a worker.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from flask import Flask, current_app

from ..errors import RateLimited
from .auth import Principal

EXTENSION = "inference_concurrency"


class TooManyInFlight(RateLimited):
    code = "too_many_in_flight"


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def check(self, key: str) -> None:
        """Take one token from key's bucket; RateLimited with Retry-After when it is empty."""
        if self.per_minute <= 0:
            return
        rate = self.per_minute / 60.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - at) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / rate)
                raise RateLimited(
                    f"more than {self.per_minute} requests a minute for this token", retry_after=max(1, wait)
                )
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:
                self._buckets.clear()


class ConcurrencyLimiter:
    """How many inferences each key has in flight in this process, refused above `per_key`."""

    def __init__(self, per_key: int):
        self.per_key = per_key
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}

    def acquire(self, key: str) -> Callable[[], None]:
        """Count one in; the returned function counts it out (once, however often it is called)."""
        if self.per_key <= 0:
            return lambda: None
        with self._lock:
            count = self._in_flight.get(key, 0)
            if count >= self.per_key:
                raise TooManyInFlight(
                    f"this token already has {count} inference requests in flight (the limit is {self.per_key})",
                    retry_after=1,
                )
            self._in_flight[key] = count + 1
        released = []

        def release() -> None:
            with self._lock:
                if released:
                    return
                released.append(True)
                left = self._in_flight.get(key, 1) - 1
                if left > 0:
                    self._in_flight[key] = left
                else:
                    self._in_flight.pop(key, None)

        return release

    def in_flight(self, key: str) -> int:
        with self._lock:
            return self._in_flight.get(key, 0)


def key_of(principal: Principal) -> str:
    """What the per-token limits count by: the token, or one shared key when auth is off."""
    return principal.name if principal.token_id is None else f"token:{principal.token_id}"


def enter_inference(principal: Principal) -> Callable[[], None]:
    """Count an inference in against MAX_CONCURRENT_INFERENCES_PER_TOKEN; returns its release.

    Only tokens are limited: with AUTH_DISABLED every caller is the same anonymous admin.
    """
    limiter = concurrency()
    if principal.token_id is None or limiter.per_key <= 0:
        return _released
    return limiter.acquire(key_of(principal))


def _released() -> None:
    """The release of an inference that no limit counted."""


def init_app(app: Flask, per_token: int) -> None:
    app.extensions[EXTENSION] = ConcurrencyLimiter(per_token)


def concurrency() -> ConcurrencyLimiter:
    return current_app.extensions[EXTENSION]
