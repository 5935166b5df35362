"""What a pod says, as pure functions: the Instance it is, its phase, and what went wrong.

The Kubernetes runtime reads pods and decides with these; tests build V1Pod objects and check
the verdicts without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from kubernetes import client
from kubernetes.utils import parse_quantity

from . import kube_objects as objects
from .base import Endpoint, Instance, Limits

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


def instance(pod: client.V1Pod, deployment_for: Callable[[int], str]) -> Instance:
    """The runtime's facts about a pod; model_id is None for a pod our Deployment did not make (a stray)."""
    annotations = pod.metadata.annotations or {}
    model_id = digits((pod.metadata.labels or {}).get(objects.MODEL_ID))
    if model_id is not None and not owned_by(pod, deployment_for(model_id)):
        model_id = None
    pod_phase, exit_code = phase(pod)
    container = container_spec(pod)
    port = container.ports[0].container_port if container is not None and container.ports else None
    replica = replica_of(pod)
    endpoint = None
    if pod_phase == "running" and pod.status.pod_ip and port and replica >= 0:
        # only a claimed pod is addressed: one the ReplicaSet made by itself (a replacement) is
        # not an instance the service started until a start claims it, so reconciliation
        # treats a replaced pod as vanished, the same as on Docker
        endpoint = Endpoint(host=pod.status.pod_ip, port=port, instance_id=pod.metadata.name)
    state = container_status(pod)
    started = state.state.running.started_at if state and state.state and state.state.running else None
    return Instance(
        instance_id=pod.metadata.name,
        name=pod.metadata.name,
        model_id=model_id,
        replica=replica,
        version=annotations.get(objects.VERSION),
        phase=pod_phase,
        exit_code=exit_code,
        endpoint=endpoint,
        started_at=started.isoformat() if started else None,
        image=container.image if container is not None else "",
        limits=limits(container),
        node=pod.spec.node_name,
    )


def claimable(pods: list[client.V1Pod], deployment: str, template_hash: str) -> list[client.V1Pod]:
    """Unclaimed pods of the Deployment's current template, readiest first."""
    rank = {"running": 0, "created": 1, "exited": 2}
    found = [
        p
        for p in pods
        if replica_of(p) < 0
        and p.metadata.deletion_timestamp is None
        and owned_by(p, deployment)
        and (p.metadata.annotations or {}).get(objects.TEMPLATE_HASH) == template_hash
        and phase(p)[0] in rank
    ]
    return sorted(found, key=lambda p: (not ready(p), rank[phase(p)[0]], p.metadata.name))


def probe_path(pod: client.V1Pod) -> str | None:
    """The path the pod's readiness probe asks."""
    container = container_spec(pod)
    probe = container.readiness_probe if container is not None else None
    return probe.http_get.path if probe is not None and probe.http_get is not None else None


def limits(container: client.V1Container | None) -> Limits:
    """Memory and CPU limits of the model's container (pid limits are the kubelet's, per node)."""
    found = (container.resources.limits if container is not None and container.resources else None) or {}
    memory = int(parse_quantity(found["memory"])) if "memory" in found else None
    cpus = float(parse_quantity(found["cpu"])) if "cpu" in found else None
    return Limits(memory_bytes=memory, cpus=cpus, pids_limit=None)


def digits(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None
