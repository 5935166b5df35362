"""Runtimes: where model instances run, behind one interface (runtime.base.Runtime)."""

from __future__ import annotations

from ..config import Settings
from .base import Endpoint, Instance, InstanceSpec, Limits, Runtime

__all__ = ["Endpoint", "Instance", "InstanceSpec", "Limits", "Runtime", "make_runtime"]


def make_runtime(settings: Settings) -> Runtime:
    """The runtime RUNTIME chooses: the Docker engine, or a Kubernetes cluster."""
    if settings.runtime == "kubernetes":
        from .kubernetes import KubernetesRuntime

        return KubernetesRuntime(settings)
    from .docker import DockerRuntime

    return DockerRuntime(settings)
