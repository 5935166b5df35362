"""Runtimes: where model instances run, behind one interface (runtime.base.Runtime)."""

from __future__ import annotations

from ..config import Settings
from .base import Endpoint, Instance, InstanceSpec, Limits, Runtime

__all__ = ["Endpoint", "Instance", "InstanceSpec", "Limits", "Runtime", "make_runtime"]


def make_runtime(settings: Settings) -> Runtime:
    """The runtime the settings choose (today: the Docker engine)."""
    from .docker import DockerRuntime

    return DockerRuntime(settings)
