"""The Docker wrapper: create, start, inspect, stop and find model containers.

One client per process, every operation idempotent: a 404 on stop means already gone,
a 409 on create means the container is already there and is adopted or replaced.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import docker
import docker.errors
import requests.exceptions

from ..config import Settings
from ..errors import ContainerFailed, EngineUnavailable, ImageMissing
from . import labels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContainerSpec:
    """What a model's container needs; built from the registry by the lifecycle service."""

    model_id: int
    user_id: str
    version: str
    image: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    memory_bytes: int = 512 * 1024 * 1024
    nano_cpus: int = 1_000_000_000
    pids_limit: int = 256
    read_only: bool = False


@dataclass(frozen=True)
class Endpoint:
    """Where a running model answers."""

    host: str
    port: int
    container_id: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class ContainerInfo:
    container_id: str
    name: str
    model_id: int | None
    version: str | None
    status: str  # docker's: created, running, exited, ...
    exit_code: int | None
    endpoint: Endpoint | None
    started_at: str | None
    image: str
    attrs: dict

    @property
    def running(self) -> bool:
        return self.status == "running"


def _engine_errors(exc: Exception) -> bool:
    return isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)) or (
        isinstance(exc, docker.errors.DockerException) and not isinstance(exc, docker.errors.APIError)
    )


class DockerEngine:
    """A process-wide handle to the Docker engine; thread-safe, created lazily after fork."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._calls = threading.BoundedSemaphore(8)

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
            except docker.errors.NotFound:
                raise
            except docker.errors.APIError:
                raise
            except Exception as exc:
                if _engine_errors(exc):
                    raise EngineUnavailable(f"Docker engine unreachable: {_short(exc)}", retry_after=5) from exc
                raise

    def ping(self) -> None:
        """Raise EngineUnavailable unless the engine answers."""
        self._call(self.client.ping)

    def name_for(self, model_id: int) -> str:
        return labels.container_name(self.settings.container_prefix, self.settings.instance_name, model_id)

    # -- lifecycle ----------------------------------------------------------------------------
    def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start the model's container from a local image; never pulls."""
        name = self.name_for(spec.model_id)
        try:  # create never pulls: a missing image is its 404 (no separate image lookup first)
            container = self._call(self.client.containers.create, **self._create_kwargs(spec, name))
        except docker.errors.ImageNotFound:
            raise ImageMissing(
                f"image {spec.image} not found on this Docker host (images are never pulled; build or load it first)"
            ) from None
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise ContainerFailed(f"Docker refused to create the container: {_short(exc)}") from exc
            # A container with our name is there already (a crash before removal, or another
            # replica): a stale one is replaced, since its configuration may be out of date.
            logger.info("container %s already exists; replacing it", name)
            self.remove(name)
            container = self._call(self.client.containers.create, **self._create_kwargs(spec, name))
        try:
            self._call(container.start)
        except docker.errors.APIError as exc:
            self.remove(container.id)
            raise ContainerFailed(f"Docker could not start the container: {_short(exc)}") from exc
        info = self.inspect(container.id)
        if info is None:
            raise ContainerFailed("the container disappeared right after it was started")
        return info

    def _create_kwargs(self, spec: ContainerSpec, name: str) -> dict:
        s = self.settings
        kwargs = dict(
            image=spec.image,
            name=name,
            detach=True,
            environment=dict(spec.env),
            labels=labels.labels_for(s.instance_name, spec.model_id, spec.version, spec.user_id, spec.port),
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
        )
        if spec.read_only:
            kwargs["tmpfs"] = {"/tmp": "rw,noexec,nosuid,size=64m"}
        if s.docker_network:
            kwargs["network"] = s.docker_network
        else:
            kwargs["ports"] = {f"{spec.port}/tcp": (s.publish_host, None)}
        return kwargs

    def inspect(self, name_or_id: str) -> ContainerInfo | None:
        """Live facts about a container, or None when it does not exist."""
        try:
            container = self._call(self.client.containers.get, name_or_id)
        except docker.errors.NotFound:
            return None
        return self._info(container)

    def _info(self, container) -> ContainerInfo:
        attrs = container.attrs
        state = attrs.get("State", {})
        lbl = attrs.get("Config", {}).get("Labels") or {}
        model_id = lbl.get(labels.MODEL_ID)
        return ContainerInfo(
            container_id=container.id,
            name=container.name,
            model_id=int(model_id) if model_id and model_id.isdigit() else None,
            version=lbl.get(labels.VERSION),
            status=state.get("Status", "unknown"),
            exit_code=state.get("ExitCode"),
            endpoint=self._endpoint(attrs, container.name) if state.get("Status") == "running" else None,
            started_at=state.get("StartedAt"),
            image=attrs.get("Config", {}).get("Image", ""),
            attrs=attrs,
        )

    def _endpoint(self, attrs: dict, name: str) -> Endpoint | None:
        s = self.settings
        exposed = attrs.get("Config", {}).get("ExposedPorts") or {}
        if s.docker_network:
            # the model's own port (the image may EXPOSE none, or several); older containers: the exposed one
            declared = (attrs.get("Config", {}).get("Labels") or {}).get(labels.PORT, "")
            port = int(declared) if declared.isdigit() else next((int(p.split("/")[0]) for p in exposed), None)
            return Endpoint(host=name, port=port, container_id=attrs["Id"]) if port else None
        for bindings in (attrs.get("NetworkSettings", {}).get("Ports") or {}).values():
            if bindings:
                host = bindings[0].get("HostIp") or s.publish_host
                if host in ("0.0.0.0", "::", ""):
                    host = "127.0.0.1"
                return Endpoint(host=host, port=int(bindings[0]["HostPort"]), container_id=attrs["Id"])
        return None

    def remove(self, name_or_id: str, timeout: int | None = None) -> bool:
        """Stop and remove; True if a container was there. Already gone is not an error."""
        try:
            container = self._call(self.client.containers.get, name_or_id)
        except docker.errors.NotFound:
            return False
        try:
            if container.status == "running":
                self._call(container.stop, timeout=self.settings.stop_timeout_seconds if timeout is None else timeout)
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError as exc:
            logger.warning("stopping %s failed (%s); removing it by force", container.name, _short(exc))
        try:
            self._call(container.remove, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: removal already in progress
                raise
        return True

    def logs_tail(self, name_or_id: str, lines: int = 20) -> str:
        try:
            container = self._call(self.client.containers.get, name_or_id)
            raw = self._call(container.logs, stdout=True, stderr=True, tail=lines)
        except docker.errors.NotFound:
            return ""
        return raw.decode("utf-8", errors="replace").strip()

    def list_managed(self) -> list[ContainerInfo]:
        """Every container carrying this instance's labels, running or not."""
        listed = self._call(
            self.client.containers.list,
            all=True,
            sparse=True,  # then inspected one by one: a container removed meanwhile is skipped, not an error
            filters=labels.managed_filter(self.settings.instance_name),
        )
        found = (self.inspect(c.id) for c in listed)
        return [info for info in found if info is not None]


def _short(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[0][:300] if text else exc.__class__.__name__
