"""The Docker side of the benchmarks: this run's containers, found and removed by label."""

from __future__ import annotations

import time

import docker
import docker.errors

from inference_app.runtime import labels

from .config import INSTANCE, PREFIX

INSTANCE_LABEL = f"{labels.INSTANCE}={INSTANCE}"


def client() -> docker.DockerClient:
    found = docker.from_env(timeout=60)
    found.ping()
    return found


def remove_all(dc: docker.DockerClient) -> int:
    """Remove every container labelled with the bench instance, one at a time.

    (Debian's dockerd 20.10 can deadlock on many removals at once.)
    """
    removed = 0
    for container in dc.containers.list(all=True, filters={"label": INSTANCE_LABEL}):
        try:
            container.remove(force=True)
            removed += 1
        except docker.errors.NotFound:
            pass
    return removed


def model_container(model_id: int) -> str:
    """The service's deterministic container name for a model of the bench instance."""
    return labels.container_name(PREFIX, INSTANCE, model_id)


def published_port(dc: docker.DockerClient, name_or_id: str, port: int = 8080) -> int:
    container = dc.containers.get(name_or_id)
    return int(container.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"][0]["HostPort"])


def created_since(dc: docker.DockerClient, since: float, model_id: int) -> int:
    """Containers of one model Docker says were created since `since`, from its event log."""
    events = dc.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        filters={
            "type": "container",
            "event": "create",
            "label": [INSTANCE_LABEL, f"{labels.MODEL_ID}={model_id}"],
        },
        decode=True,
    )
    return sum(1 for event in events if event.get("timeNano", 0) >= since * 1e9)


def version(dc: docker.DockerClient) -> str:
    info = dc.version()
    return f"{info.get('Version', '?')} (API {info.get('ApiVersion', '?')})"
