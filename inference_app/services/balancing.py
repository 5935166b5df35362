"""Least-loaded balancing across a model's ready replicas, per process, with no database I/O.

Each request goes to the ready replica with the fewest requests in flight from this process
(ties taken in turn). Requests from other processes are not seen here: with several web
workers each balances its own requests, which evens out as their numbers grow. A replica
whose drainer holds it refuses the entry, and the next one is tried.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from ..runtime import Endpoint
from .activity import Activity
from .model_view import Route

_turns = itertools.count()  # per process: whose turn it is among equally loaded replicas


def least_loaded(loads: Sequence[int], turn: int) -> list[int]:
    """Indexes of replicas by in-flight load, fewest first; among equals starting at `turn`."""
    count = len(loads)
    return sorted(range(count), key=lambda i: (loads[i], (i - turn) % count))


def enter(routes: Sequence[Route], fallback: Endpoint, activity: Activity, avoid: set[str]) -> Route:
    """Choose a ready replica and count the request in on it; the fallback when there is no choice."""
    candidates = [r for r in routes if r.endpoint.instance_id not in avoid]
    if candidates:
        loads = activity.replica_loads([r.replica_id for r in candidates])
        for index in least_loaded(loads, next(_turns)):
            route = candidates[index]
            if activity.enter_replica(route.replica_id):
                return route
    return Route(None, 0, fallback)


def leave(route: Route, activity: Activity) -> None:
    if route.replica_id is not None:
        activity.leave_replica(route.replica_id)
