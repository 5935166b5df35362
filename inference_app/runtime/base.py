"""The runtime seam: what the lifecycle needs from whatever runs model instances.

A runtime creates, inspects, lists and removes instances of models and says where each one
answers. An instance is one running copy of a model (a container, a pod); a model may have
several, on any host the runtime reaches, each addressed by the Endpoint the runtime returns.
Nothing above this seam imports a container engine's client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    """Where one running instance answers."""

    host: str
    port: int
    instance_id: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class InstanceSpec:
    """What an instance of a model needs; built from the registry by the lifecycle."""

    model_id: int
    user_id: str
    version: str
    image: str
    port: int
    replica: int = 0
    env: dict[str, str] = field(default_factory=dict)
    memory_bytes: int = 512 * 1024 * 1024
    nano_cpus: int = 1_000_000_000
    pids_limit: int = 256
    read_only: bool = False
    health_path: str = "/health"  # where a runtime that probes readiness itself (Kubernetes) asks


@dataclass(frozen=True)
class Limits:
    """The resource limits an instance actually runs with, as the runtime reports them."""

    memory_bytes: int | None = None
    cpus: float | None = None
    pids_limit: int | None = None


@dataclass(frozen=True)
class Instance:
    """Live facts about one instance; model_id is None for one that is not ours to keep."""

    instance_id: str
    name: str
    model_id: int | None
    replica: int
    version: str | None
    phase: str  # "created", "running", "exited" or "dead"
    exit_code: int | None
    endpoint: Endpoint | None
    started_at: str | None
    image: str
    limits: Limits = field(default_factory=Limits)
    node: str | None = None  # the host it runs on, for a runtime that spans several (a Kubernetes node)

    @property
    def running(self) -> bool:
        return self.phase == "running"

    @property
    def ended(self) -> bool:
        return self.phase in ("exited", "dead")


class Runtime(ABC):
    """Runs model instances. Every operation is idempotent and safe to call from any thread."""

    name: str

    @abstractmethod
    def ping(self) -> None:
        """Raise EngineUnavailable unless the runtime answers."""

    @abstractmethod
    def start(self, spec: InstanceSpec) -> Instance:
        """Create and start one instance of a model from a local image (never pulled)."""

    @abstractmethod
    def wait_ready(self, instance: Instance, health_path: str, deadline: float) -> Endpoint:
        """Return the instance's endpoint once its health path answers 2xx.

        Raises ContainerFailed (with its last log lines) if it ends, StartTimeout at the deadline
        (a time.monotonic() value).
        """

    @abstractmethod
    def inspect(self, instance_id: str) -> Instance | None:
        """Live facts about an instance, or None when it does not exist."""

    @abstractmethod
    def remove(self, instance_id: str, timeout: int | None = None) -> bool:
        """Stop (within timeout seconds) and remove an instance; True if it was there."""

    @abstractmethod
    def list_managed(self, model_id: int | None = None) -> list[Instance]:
        """Every instance this service manages (of one model, if given), running or not."""

    @abstractmethod
    def logs(self, instance_id: str, lines: int = 20) -> str:
        """The last lines an instance wrote, or "" when it is gone."""

    def reach(self, instance: Instance) -> bool:
        """Open a path from this process to a running instance it could not connect to.

        True when there was none and now there is (the caller may try again); runtimes whose
        instances every process reaches alike have nothing to do.
        """
        return False

    def remove_model(self, model_id: int, timeout: int | None = None) -> int:
        """Stop and remove every instance of a model; returns how many there were."""
        removed = 0
        for instance in self.list_managed(model_id):
            removed += self.remove(instance.instance_id, timeout=timeout)
        return removed
