"""Readiness: a model is ready when its health path answers 2xx over HTTP.

A TCP connect is not enough: Docker's port proxy accepts connections before the server
inside the container listens. Polling backs off from a few milliseconds to a short cap,
so a fast model is served within tens of milliseconds of being ready.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import urllib3

from ..errors import ContainerFailed, StartTimeout
from .engine import ContainerInfo, DockerEngine, Endpoint

logger = logging.getLogger(__name__)

FIRST_DELAY = 0.005
MAX_DELAY = 0.1
STATE_CHECK_EVERY = 0.25  # seconds between engine checks for a container that exited


def backoff_delays(first: float = FIRST_DELAY, cap: float = MAX_DELAY):
    """5 ms, 10 ms, 20 ms ... capped: the poll schedule, as a pure generator."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)


def wait_ready(
    engine: DockerEngine,
    http: urllib3.PoolManager,
    info: ContainerInfo,
    health_path: str,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Endpoint:
    """Poll until healthy; raise ContainerFailed (with the log tail) or StartTimeout."""
    endpoint = info.endpoint
    last_state_check = clock()
    last_problem = "no answer yet"
    for delay in backoff_delays():
        if endpoint is None or clock() - last_state_check >= STATE_CHECK_EVERY:
            last_state_check = clock()
            current = engine.inspect(info.container_id)
            if current is None:
                raise ContainerFailed("the container was removed while it was starting")
            if current.status in ("exited", "dead"):
                tail = engine.logs_tail(info.container_id, 20)
                raise ContainerFailed(
                    f"the container exited with code {current.exit_code} during start"
                    + (f"; last log lines:\n{tail}" if tail else " and logged nothing"),
                    details={"exit_code": current.exit_code, "log_tail": tail},
                )
            endpoint = current.endpoint or endpoint
        if endpoint is not None:
            try:
                response = http.request(
                    "GET",
                    endpoint.base_url + health_path,
                    timeout=urllib3.Timeout(connect=0.5, read=1.0),
                    retries=False,
                    preload_content=True,
                )
                if 200 <= response.status < 300:
                    return endpoint
                last_problem = f"health check answered {response.status}"
            except urllib3.exceptions.HTTPError as exc:
                last_problem = f"health check failed: {exc.__class__.__name__}"
        remaining = deadline - clock()
        if remaining <= 0:
            raise StartTimeout(f"the model did not become ready before the start timeout ({last_problem})")
        sleep(min(delay, remaining))
    raise AssertionError("unreachable")
