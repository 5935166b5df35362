"""Keeping model containers apart on one Docker engine.

On the host network (ports published on the host), every model container joins one bridge
network of this service with inter-container traffic turned off: the host reaches each
model through its published port, but no model can open a connection to another. When the
service itself runs in a container (DOCKER_NETWORK), each model gets an internal network of
its own, which the service's containers join.
"""

from __future__ import annotations

import logging
import socket
import threading

import docker
import docker.errors

from ..errors import ContainerFailed
from . import labels

logger = logging.getLogger(__name__)

ICC_OPTION = "com.docker.network.bridge.enable_icc"


def network_name(prefix: str, instance: str) -> str:
    return f"{prefix}-{instance}-models"


def open_network(name: str, why: str) -> ContainerFailed:
    """A network of our name that someone made without the isolation: never put a model on it."""
    return ContainerFailed(
        f"the Docker network {name} exists but {why}, so models on it could reach one another; "
        f"remove it (docker network rm {name}) and the service makes it again, isolated"
    )


class ModelsNetwork:
    """The isolated bridge network for model containers, created once and found again by name."""

    def __init__(self, prefix: str, instance: str):
        self.name = network_name(prefix, instance)
        self.instance = instance
        self._id: str | None = None
        self._lock = threading.Lock()

    def ensure(self, client: docker.DockerClient) -> str:
        """The network's id, creating it first if it does not exist."""
        if self._id is not None:
            return self._id
        with self._lock:
            if self._id is None:
                self._id = self._find(client) or self._create(client)
        return self._id

    def forget(self) -> None:
        """Look the network up again next time (it was removed behind our back)."""
        self._id = None

    def _find(self, client: docker.DockerClient) -> str | None:
        # Several processes may race to create it: all of them then use the oldest-named one.
        found = sorted((n for n in client.networks.list(names=[self.name]) if n.name == self.name), key=lambda n: n.id)
        if not found:
            return None
        if (found[0].attrs.get("Options") or {}).get(ICC_OPTION) != "false":
            raise open_network(self.name, "inter-container traffic is on")
        return found[0].id

    def _create(self, client: docker.DockerClient) -> str:
        client.networks.create(
            self.name,
            driver="bridge",
            options={ICC_OPTION: "false"},
            labels={labels.MANAGED: "true", labels.INSTANCE: self.instance},
            check_duplicate=True,
        )
        logger.info("created the isolated network %s for model containers", self.name)
        return self._find(client)


class ModelNetworks:
    """Network form (the service itself in a container): one internal network per model.

    Each model's containers are alone on their network; the service's own container joins it,
    so it reaches the model by container name while no model reaches another (nor the outside).
    """

    def __init__(self, prefix: str, instance: str):
        self.prefix = prefix
        self.instance = instance
        self._self_id: str | None = None
        self._self_known = False
        self._lock = threading.Lock()

    def name_for(self, model_id: int) -> str:
        return f"{self.prefix}-{self.instance}-model-{model_id}"

    def ensure(self, client: docker.DockerClient, model_id: int) -> str:
        """The model's network (created first if missing), with this service's container on it."""
        name = self.name_for(model_id)
        with self._lock:
            found = [n for n in client.networks.list(names=[name]) if n.name == name]
            if found and not found[0].attrs.get("Internal"):
                raise open_network(name, "it is not internal")
            if not found:
                client.networks.create(
                    name,
                    driver="bridge",
                    internal=True,
                    labels={labels.MANAGED: "true", labels.INSTANCE: self.instance, labels.MODEL_ID: str(model_id)},
                    check_duplicate=True,
                )
        self.join(client, name)
        return name

    def join(self, client: docker.DockerClient, name: str) -> bool:
        """Connect this service's own container to a model's network; True if it was not on it yet."""
        own = self._own_container(client)
        if own is None:
            return False
        network = client.networks.get(name)
        if own in {c.id for c in network.containers}:
            return False
        try:
            network.connect(own)
        except docker.errors.APIError as exc:
            if exc.status_code not in (403, 409):  # already connected (a race with another thread)
                raise
            return False
        return True

    def release(self, client: docker.DockerClient, model_id: int) -> None:
        """Remove the model's network once no model container is left on it."""
        name = self.name_for(model_id)
        for network in [n for n in client.networks.list(names=[name]) if n.name == name]:
            network.reload()
            if any((c.labels or {}).get(labels.MODEL_ID) for c in network.containers):
                continue
            for container in network.containers:
                network.disconnect(container, force=True)
            network.remove()

    def _own_container(self, client: docker.DockerClient) -> str | None:
        """The container this process runs in (Docker names a container's host after its id)."""
        if not self._self_known:
            try:
                self._self_id = client.containers.get(socket.gethostname()).id
            except docker.errors.NotFound:
                logger.warning("this process runs in no container of this Docker engine: models are unreachable")
                self._self_id = None
            self._self_known = True
        return self._self_id
