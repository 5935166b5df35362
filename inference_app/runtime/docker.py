"""The Docker runtime: model instances are containers on one Docker engine.

One client per process, every operation idempotent: a 404 on stop means already gone,
a 409 on create means the container is already there and is replaced. Containers are
found again by deterministic name and namespaced labels.
"""

from __future__ import annotations

import logging
import threading
import time

import docker
import docker.errors
import requests.exceptions

from ..config import Settings
from ..errors import ContainerFailed, EngineUnavailable, ImageMissing
from ..http_pools import ProcessPool
from . import labels
from .base import Endpoint, Instance, InstanceSpec, Limits, Runtime
from .isolation import ModelNetworks, ModelsNetwork
from .readiness import poll_ready

NAME_FREE_TIMEOUT = 5.0  # seconds a start waits for a stale container of its name to be removed

logger = logging.getLogger(__name__)


def _engine_errors(exc: Exception) -> bool:
    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)) or (
        isinstance(exc, docker.errors.DockerException) and not isinstance(exc, docker.errors.APIError)
    )


class DockerRuntime(Runtime):
    """A process-wide handle to the Docker engine; thread-safe, created lazily after fork."""

    name = "docker"

    def __init__(self, settings: Settings):
        self.settings = settings
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._calls = threading.BoundedSemaphore(8)
        self._health_pool = ProcessPool(num_pools=64, maxsize=4)
        self._network = ModelsNetwork(settings.container_prefix, settings.instance_name)
        self._model_networks = ModelNetworks(settings.docker_network, settings.instance_name)

    # -- plumbing -----------------------------------------------------------------------------
    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        if self.settings.docker_host:
                            self._client = docker.DockerClient(
                                base_url=self.settings.docker_host, timeout=30, max_pool_size=16
                            )
                        else:
                            self._client = docker.from_env(timeout=30, max_pool_size=16)
                    except docker.errors.DockerException as exc:
                        raise EngineUnavailable(f"Docker engine unreachable: {_short(exc)}", retry_after=5) from exc
        return self._client

    def _call(self, fn, *args, **kwargs):
        with self._calls:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if _engine_errors(exc):
                    raise EngineUnavailable(f"Docker engine unreachable: {_short(exc)}", retry_after=5) from exc
                raise

    def ping(self) -> None:
        """Raise EngineUnavailable unless the engine answers."""
        self._call(self.client.ping)

    def name_for(self, model_id: int, replica: int = 0) -> str:
        return labels.container_name(self.settings.container_prefix, self.settings.instance_name, model_id, replica)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, spec: InstanceSpec) -> Instance:
        """Create and start the model's container from a local image; never pulls."""
        container = self._create(spec, self.name_for(spec.model_id, spec.replica))
        try:
            self._call(container.start)
        except docker.errors.APIError as exc:
            self.remove(container.id)
            raise ContainerFailed(f"Docker could not start the container: {_short(exc)}") from exc
        info = self.inspect(container.id)
        if info is None:
            raise ContainerFailed("the container disappeared right after it was started")
        return info

    def _create(self, spec: InstanceSpec, name: str, again: bool = False):
        try:  # create never pulls: a missing image is its 404 (no separate image lookup first)
            return self._call(self.client.containers.create, **self._create_kwargs(spec, name))
        except docker.errors.ImageNotFound:
            raise ImageMissing(
                f"image {spec.image} not found on this Docker host (images are never pulled; build or load it first)"
            ) from None
        except docker.errors.APIError as exc:
            if exc.status_code == 404 and not again:  # our network was removed behind our back
                self._network.forget()
                return self._create(spec, name, again=True)
            if exc.status_code == 409 and not again:
                # A container with our name is there already (a crash before removal, or another
                # replica): a stale one is replaced, since its configuration may be out of date.
                logger.info("container %s already exists; replacing it", name)
                self.remove(name)
                self._wait_gone(name)  # another remover (reconciliation) may still be at it
                return self._create(spec, name, again=True)
            raise ContainerFailed(f"Docker refused to create the container: {_short(exc)}") from exc

    def _wait_gone(self, name: str, timeout: float = NAME_FREE_TIMEOUT) -> None:
        """Until no container has this name (its removal may be under way elsewhere), within a bound."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._call(self.client.containers.get, name)
            except docker.errors.NotFound:
                return
            time.sleep(0.05)

    def wait_ready(self, instance: Instance, health_path: str, deadline: float) -> Endpoint:
        return poll_ready(self, self._health_pool.get(), instance, health_path, deadline)

    def _create_kwargs(self, spec: InstanceSpec, name: str) -> dict:
        s = self.settings
        kwargs = dict(
            image=spec.image,
            name=name,
            detach=True,
            environment=dict(spec.env),
            labels=labels.labels_for(
                s.instance_name, spec.model_id, spec.version, spec.user_id, spec.port, spec.replica
            ),
            mem_limit=spec.memory_bytes,
            memswap_limit=spec.memory_bytes,
            nano_cpus=spec.nano_cpus,
            pids_limit=spec.pids_limit,
            security_opt=["no-new-privileges:true"],
            cap_drop=["ALL"],
            restart_policy={"Name": "no"},
            read_only=spec.read_only,
            privileged=False,
            init=False,
            log_config={
                "type": "json-file",
                "config": {"max-size": s.model_log_max_size, "max-file": str(s.model_log_max_files)},
            },
        )
        if spec.read_only:
            kwargs["tmpfs"] = {"/tmp": "rw,noexec,nosuid,size=64m"}
        if s.model_user:
            kwargs["user"] = s.model_user
        if s.docker_network:
            kwargs["network"] = self._call(self._model_networks.ensure, self.client, spec.model_id)
        else:
            kwargs["network"] = self._call(self._network.ensure, self.client)
            kwargs["ports"] = {f"{spec.port}/tcp": (s.publish_host, None)}
        return kwargs

    def inspect(self, instance_id: str) -> Instance | None:
        """Live facts about a container (by id or name), or None when it does not exist."""
        try:
            container = self._call(self.client.containers.get, instance_id)
        except docker.errors.NotFound:
            return None
        return self._instance(container)

    def _instance(self, container) -> Instance:
        attrs = container.attrs
        state = attrs.get("State", {})
        lbl = attrs.get("Config", {}).get("Labels") or {}
        model_id = _digits(lbl.get(labels.MODEL_ID))
        replica = _digits(lbl.get(labels.REPLICA)) or 0
        if model_id is not None and container.name != self.name_for(model_id, replica):
            model_id = None  # our labels but not our name: a stray, not an instance to keep
        host = attrs.get("HostConfig") or {}
        return Instance(
            instance_id=container.id,
            name=container.name,
            model_id=model_id,
            replica=replica,
            version=lbl.get(labels.VERSION),
            phase=state.get("Status", "unknown"),
            exit_code=state.get("ExitCode"),
            endpoint=self._endpoint(attrs, container.name) if state.get("Status") == "running" else None,
            started_at=state.get("StartedAt"),
            image=attrs.get("Config", {}).get("Image", ""),
            limits=Limits(
                memory_bytes=host.get("Memory") or None,
                cpus=host["NanoCpus"] / 1e9 if host.get("NanoCpus") else None,
                pids_limit=host.get("PidsLimit") or None,
            ),
        )

    def _endpoint(self, attrs: dict, name: str) -> Endpoint | None:
        s = self.settings
        exposed = attrs.get("Config", {}).get("ExposedPorts") or {}
        if s.docker_network:
            # the model's own port (the image may EXPOSE none, or several); older containers: the exposed one
            declared = (attrs.get("Config", {}).get("Labels") or {}).get(labels.PORT, "")
            port = int(declared) if declared.isdigit() else next((int(p.split("/")[0]) for p in exposed), None)
            return Endpoint(host=name, port=port, instance_id=attrs["Id"]) if port else None
        for bindings in (attrs.get("NetworkSettings", {}).get("Ports") or {}).values():
            if bindings:
                host = bindings[0].get("HostIp") or s.publish_host
                if host in ("0.0.0.0", "::", ""):
                    host = "127.0.0.1"
                return Endpoint(host=host, port=int(bindings[0]["HostPort"]), instance_id=attrs["Id"])
        return None

    def remove(self, instance_id: str, timeout: int | None = None) -> bool:
        """Stop and remove; True if a container was there. Already gone is not an error."""
        try:
            container = self._call(self.client.containers.get, instance_id)
        except docker.errors.NotFound:
            return False
        self._remove(container, timeout)
        model_id = _digits((container.labels or {}).get(labels.MODEL_ID))
        if self.settings.docker_network and model_id is not None:
            self._call(self._model_networks.release, self.client, model_id)
        return True

    def reach(self, instance: Instance) -> bool:
        """Network form: join the instance's network if this process's container is not on it yet."""
        if not self.settings.docker_network or instance.model_id is None:
            return False
        return self._call(self._model_networks.join, self.client, self._model_networks.name_for(instance.model_id))

    def _remove(self, container, timeout: int | None) -> None:
        try:
            if container.status == "running":
                self._call(container.stop, timeout=self.settings.stop_timeout_seconds if timeout is None else timeout)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            logger.warning("stopping %s failed (%s); removing it by force", container.name, _short(exc))
        try:
            self._call(container.remove, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise

    def logs(self, instance_id: str, lines: int = 20) -> str:
        try:
            container = self._call(self.client.containers.get, instance_id)
            raw = self._call(container.logs, stdout=True, stderr=True, tail=lines)
        except docker.errors.NotFound:
            return ""
        return raw.decode("utf-8", errors="replace").strip()

    def list_managed(self, model_id: int | None = None) -> list[Instance]:
        """Every container carrying this service's labels (of one model, if given), running or not."""
        listed = self._call(
            self.client.containers.list,
            all=True,
            sparse=True,  # then inspected one by one: a container removed meanwhile is skipped, not an error
            filters=labels.managed_filter(self.settings.instance_name, model_id),
        )
        found = (self.inspect(c.id) for c in listed)
        return [info for info in found if info is not None]


def _digits(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _short(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[0][:300] if text else exc.__class__.__name__
