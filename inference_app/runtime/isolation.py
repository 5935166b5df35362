"""Keeping model containers apart on one Docker engine.

On the host network (ports published on the host), every model container joins one bridge
network of this service with inter-container traffic turned off: the host reaches each
model through its published port, but no model can open a connection to another.
"""

from __future__ import annotations

import logging
import threading

import docker
import docker.errors

from . import labels

logger = logging.getLogger(__name__)

ICC_OPTION = "com.docker.network.bridge.enable_icc"


def network_name(prefix: str, instance: str) -> str:
    return f"{prefix}-{instance}-models"


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
        found = sorted(n.id for n in client.networks.list(names=[self.name]) if n.name == self.name)
        return found[0] if found else None

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
