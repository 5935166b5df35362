"""What a pod's status says, as pure functions: its phase in the runtime's words, and what went wrong.

The Kubernetes runtime reads pods and decides with these; tests build V1Pod objects and check
the verdicts without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kubernetes import client

from . import kube_objects as objects

IMAGE_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "ImageInspectError",
        "RegistryUnavailable",
    }
)
CONFIG_REASONS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError", "PreStartHookError"}
)


@dataclass(frozen=True)
class Problem:
    """Why a pod will not become ready by itself: kind is "unschedulable", "image", "config" or "failed"."""

    kind: str
    message: str
    since: datetime | None = None


def container_status(pod: client.V1Pod) -> client.V1ContainerStatus | None:
    for status in (pod.status and pod.status.container_statuses) or []:
        if status.name == objects.CONTAINER:
            return status
    return None


def container_spec(pod: client.V1Pod) -> client.V1Container | None:
    return next((c for c in pod.spec.containers if c.name == objects.CONTAINER), None)


def phase(pod: client.V1Pod) -> tuple[str, int | None]:
    """The runtime's phase ("created", "running", "exited", "dead") and the last exit code, if any.

    A container waiting to be restarted after it ended (CrashLoopBackOff) has exited: for the
    service a model that keeps crashing is not running.
    """
    if pod.metadata.deletion_timestamp is not None:
        return "dead", _last_exit(container_status(pod))
    pod_phase = pod.status.phase if pod.status else None
    status = container_status(pod)
    if pod_phase in ("Failed", "Succeeded"):
        return "exited", _last_exit(status)
    if pod_phase == "Unknown":
        return "dead", None
    if status is None or status.state is None:
        return "created", None
    if status.state.running is not None:
        return "running", None
    if status.state.terminated is not None:
        return "exited", status.state.terminated.exit_code
    if status.last_state is not None and status.last_state.terminated is not None:
        return "exited", status.last_state.terminated.exit_code
    return "created", None


def _last_exit(status: client.V1ContainerStatus | None) -> int | None:
    if status is None:
        return None
    for state in (status.state, status.last_state):
        if state is not None and state.terminated is not None:
            return state.terminated.exit_code
    return None


def ready(pod: client.V1Pod) -> bool:
    """The kubelet's readiness probe (the model's health path) passes, and the pod is not going."""
    if pod.metadata.deletion_timestamp is not None or not pod.status:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def problem(pod: client.V1Pod) -> Problem | None:
    """Why the pod cannot become ready on its own (a crash is its phase, not a problem here)."""
    status = pod.status
    if status is None:
        return None
    if status.phase == "Failed" and status.reason:  # evicted, or the node shut down
        return Problem("failed", f"{status.reason}: {status.message or ''}".strip().rstrip(":"))
    for condition in status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False" and condition.reason == "Unschedulable":
            return Problem(
                "unschedulable", condition.message or "no node can run the pod", condition.last_transition_time
            )
    container = container_status(pod)
    waiting = container.state.waiting if container is not None and container.state is not None else None
    if waiting is not None and waiting.reason in IMAGE_REASONS:
        return Problem("image", f"{waiting.reason}: {waiting.message or ''}".strip().rstrip(":"))
    if waiting is not None and waiting.reason in CONFIG_REASONS:
        return Problem("config", f"{waiting.reason}: {waiting.message or ''}".strip().rstrip(":"))
    return None


def replica_of(pod: client.V1Pod) -> int:
    """The replica a pod was claimed for; -1 for a pod nobody has claimed yet."""
    value = (pod.metadata.labels or {}).get(objects.REPLICA, "")
    return int(value) if value.isdigit() else -1


def owned_by(pod: client.V1Pod, deployment: str) -> bool:
    """Whether the pod belongs to one of the Deployment's ReplicaSets (named <deployment>-<hash>)."""
    for owner in pod.metadata.owner_references or []:
        if owner.kind == "ReplicaSet" and owner.controller and owner.name.rsplit("-", 1)[0] == deployment:
            return True
    return False


def replica_failure(replica_sets: list[client.V1ReplicaSet]) -> str | None:
    """The message of a ReplicaSet that cannot create its pods (a ResourceQuota, an admission webhook)."""
    for replica_set in replica_sets:
        for condition in (replica_set.status and replica_set.status.conditions) or []:
            if condition.type == "ReplicaFailure" and condition.status == "True":
                return condition.message or condition.reason or "the ReplicaSet cannot create pods"
    return None
