"""The states of a model's instances; the transitions between them live in services.lifecycle.transitions."""

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
