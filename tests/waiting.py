"""The one polling helper of the tests (and of bench/, which shares the service-process wrapper)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition a test waited for never came true; pytest reports it as a failure."""


def wait_for(predicate: Callable[[], T], timeout: float, message: str | Callable[[], str], interval: float = 0.1) -> T:
    """Call `predicate` until it returns something truthy and return that; fail after `timeout` seconds.

    The predicate may raise (an AssertionError, say) to give up early, e.g. when a process it waits
    on has exited. `message` may be a callable, to describe the state at the moment of failing.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            said = message() if callable(message) else message
            raise WaitTimeout(f"{said} (waited {timeout} s; last: {value!r:.500})")
        time.sleep(interval)
