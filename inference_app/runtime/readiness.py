"""Readiness by polling: an instance is ready when its health path answers 2xx over HTTP.

A TCP connect is not enough: Docker's port proxy accepts connections before the server
inside the container listens. Polling backs off from a few milliseconds to a 20 ms cap, so a
model is served within about 20 ms of being ready, however long it takes to load. A health answer is
read only up to HEALTH_BODY_LIMIT bytes: a model cannot stream an endless body into us.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import urllib3

from ..errors import ContainerFailed, StartTimeout
from .base import Endpoint, Instance, Runtime

logger = logging.getLogger(__name__)

FIRST_DELAY = 0.005
MAX_DELAY = 0.02  # a slow model (seconds to load) is noticed within 20 ms of being ready
STATE_CHECK_EVERY = 0.25  # seconds between runtime checks for an instance that ended
HEALTH_BODY_LIMIT = 64 * 1024
HEALTH_READ_SECONDS = 2.0  # a body trickling in slower than this is not waited for


def backoff_delays(first: float = FIRST_DELAY, cap: float = MAX_DELAY):
    """5 ms, 10 ms, 20 ms ... capped: the poll schedule, as a pure generator."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)


def ended_error(runtime: Runtime, instance: Instance) -> ContainerFailed:
    """The error for an instance that ended during its start, with its last log lines."""
    tail = runtime.logs(instance.instance_id, 20)
    return ContainerFailed(
        f"the container exited with code {instance.exit_code} during start"
        + (f"; last log lines:\n{tail}" if tail else " and logged nothing"),
        details={"exit_code": instance.exit_code, "log_tail": tail},
    )


def health_answer(http: urllib3.PoolManager, endpoint: Endpoint, health_path: str) -> str | None:
    """None when the health path answers 2xx, else what went wrong, in words."""
    try:
        response = http.request(
            "GET",
            endpoint.base_url + health_path,
            timeout=urllib3.Timeout(connect=0.5, read=1.0),
            retries=False,
            preload_content=False,
        )
        whole = False
        try:
            whole = _read_bounded(response)
        finally:
            if whole:
                response.release_conn()  # all of it was read: the connection is kept alive
            else:
                response.close()  # a long, endless or dripping body is dropped with its connection
    except urllib3.exceptions.HTTPError as exc:
        return f"health check failed: {exc.__class__.__name__}"
    if 200 <= response.status < 300:
        return None
    return f"health check answered {response.status}"


def _read_bounded(response) -> bool:
    """Read the body up to HEALTH_BODY_LIMIT bytes and HEALTH_READ_SECONDS; True if it all came."""
    deadline = time.monotonic() + HEALTH_READ_SECONDS
    got = 0
    while got <= HEALTH_BODY_LIMIT and time.monotonic() < deadline:
        chunk = response.read1(HEALTH_BODY_LIMIT + 1 - got)  # what one receive gives: a drip cannot hold us
        if not chunk:
            return True
        got += len(chunk)
    return False


def poll_ready(
    runtime: Runtime,
    http: urllib3.PoolManager,
    instance: Instance,
    health_path: str,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Endpoint:
    """Poll until healthy; raise ContainerFailed (with the log tail) or StartTimeout."""
    endpoint = instance.endpoint
    last_state_check = clock()
    last_problem = "no answer yet"
    for delay in backoff_delays():
        if endpoint is None or clock() - last_state_check >= STATE_CHECK_EVERY:
            last_state_check = clock()
            current = runtime.inspect(instance.instance_id)
            if current is None:
                raise ContainerFailed("the container was removed while it was starting")
            if current.ended:
                raise ended_error(runtime, current)
            endpoint = current.endpoint or endpoint
        if endpoint is not None:
            problem = health_answer(http, endpoint, health_path)
            if problem is None:
                return endpoint
            last_problem = problem
        remaining = deadline - clock()
        if remaining <= 0:
            raise StartTimeout(f"the model did not become ready before the start timeout ({last_problem})")
        sleep(min(delay, remaining))
    raise AssertionError("unreachable")
