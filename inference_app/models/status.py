"""The container state machine of a model: states and the transitions allowed between them."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


ACTIVE = (Status.STARTING, Status.RUNNING, Status.STOPPING)

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.STOPPED: frozenset({Status.STARTING, Status.RUNNING}),  # RUNNING: adopted by reconciliation
    Status.FAILED: frozenset({Status.STARTING, Status.STOPPED, Status.RUNNING}),
    Status.STARTING: frozenset({Status.RUNNING, Status.FAILED, Status.STOPPING, Status.STOPPED, Status.STARTING}),
    Status.RUNNING: frozenset({Status.STOPPING, Status.STOPPED, Status.FAILED}),
    Status.STOPPING: frozenset({Status.STOPPED, Status.FAILED, Status.STOPPING}),
}


class IllegalTransition(RuntimeError):
    pass


def check_transition(current: Status, target: Status) -> None:
    """Raise IllegalTransition unless current -> target is an edge of the machine."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current} -> {target} is not allowed")
