"""Helpers for running the service image as containers in the tests: build, run, wait, relay."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlparse

import docker
import docker.errors
import pytest
import requests
from conftest import INSTANCE
from waiting import wait_for

from inference_app.runtime import labels

ROOT = Path(__file__).resolve().parent.parent


def build_service_image() -> str:
    """The service image from the locally made base (scripts/build-service-image.sh; cached by input hash)."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-service-image.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        pytest.fail(f"build-service-image.sh failed:\n{result.stderr[-4000:]}")
    return result.stdout.strip().splitlines()[-1]


def docker_access() -> dict:
    """How a container reaches this Docker engine: its socket mounted, joined to the socket's group."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parsed = urlparse(host)
    if parsed.scheme != "unix":
        return {"environment": {"DOCKER_HOST": host}}
    path = parsed.path
    return {
        "volumes": {path: {"bind": "/var/run/docker.sock", "mode": "rw"}},
        "group_add": [str(os.stat(path).st_gid)],
    }


class ServiceContainers:
    """Containers of the service image started by a test: labelled with the test instance, removed one at a time."""

    def __init__(self, client: docker.DockerClient, image: str):
        self.client = client
        self.image = image
        self.started: list = []

    def run(self, name: str, command: list[str], env: dict[str, str], **kwargs):
        access = docker_access()
        environment = {**env, **access.pop("environment", {})}
        access["volumes"] = {**access.get("volumes", {}), **kwargs.pop("volumes", {})}
        container = self.client.containers.run(
            self.image,
            command,
            name=f"itest-{INSTANCE}-svc-{name}",
            detach=True,
            labels={labels.INSTANCE: INSTANCE},
            environment=environment,
            **access,
            **kwargs,
        )
        self.started.append(container)
        return container

    def remove_all(self) -> None:
        for container in reversed(self.started):
            _remove(container)
        self.started.clear()


def unexposed_copy(client: docker.DockerClient, image: str, tag: str) -> str:
    """`image` re-imported without its EXPOSE (as many real model images are), built once per source image."""
    source = client.images.get(image)
    try:
        if client.images.get(tag).labels.get("inference.copied-from") == source.id:
            return tag
    except docker.errors.ImageNotFound:
        pass
    container = client.containers.create(image, labels={labels.INSTANCE: INSTANCE})
    try:
        data = b"".join(container.export())
    finally:
        _remove(container)
    config = source.attrs["Config"]
    changes = [f"ENV {item}" for item in config.get("Env") or []]
    changes += [f"CMD {json.dumps(config['Cmd'])}", f"LABEL inference.copied-from={source.id}"]
    repository, _, version = tag.partition(":")
    client.api.import_image_from_data(data, repository=repository, tag=version, changes=changes)
    return tag


def remove_model_containers(client: docker.DockerClient) -> None:
    """The model containers the containerized service started (labelled with the test instance)."""
    managed = {"label": [f"{labels.MANAGED}=true", f"{labels.INSTANCE}={INSTANCE}"]}
    for container in client.containers.list(all=True, filters=managed):
        _remove(container)


def _remove(container) -> None:
    try:
        container.remove(force=True)  # one at a time: dockerd 20.10 can deadlock on many parallel removals
    except docker.errors.NotFound:
        pass


def logs(container) -> str:
    return container.logs().decode(errors="replace")


def wait_http_ok(container, url: str, timeout: float = 60) -> None:
    def answered() -> bool:
        try:
            if requests.get(url, timeout=2).ok:
                return True
        except requests.RequestException:
            pass
        container.reload()
        if container.status == "exited":
            raise AssertionError(f"{url} never answered ({container.name} exited):\n{logs(container)[-4000:]}")
        return False

    wait_for(answered, timeout, f"{url} never answered ({container.name})", interval=0.2)


def wait_log(container, text: str, timeout: float) -> str:
    def logged() -> str | None:
        output = logs(container)
        return output if text in output else None

    said = lambda: f"{container.name} never logged {text!r}:\n{logs(container)[-4000:]}"  # noqa: E731
    return wait_for(logged, timeout, said, interval=0.2)


class Relay:
    """Forwards each connection accepted on a listening socket to a TCP address.

    The test PostgreSQL listens on the host's loopback only. A container on its own network
    reaches it through a Unix socket mounted into it (`Relay.unix`); a pod on the pod network
    through the test cluster's node address (`Relay.tcp`).
    """

    def __init__(self, server: socket.socket, target: tuple[str, int]):
        self.target = target
        self._server = server
        threading.Thread(target=self._accept, daemon=True).start()

    @classmethod
    def unix(cls, path: Path, target: tuple[str, int]) -> Relay:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        os.chmod(path, 0o777)  # the service runs as uid 10001
        server.listen(64)
        return cls(server, target)

    @classmethod
    def tcp(cls, host: str, target: tuple[str, int]) -> Relay:
        return cls(socket.create_server((host, 0), backlog=64), target)

    @property
    def port(self) -> int:
        return self._server.getsockname()[1]

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self._server.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        source.close()
