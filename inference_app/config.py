"""Typed settings parsed from the environment, validated once in the factory."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .units import parse_memory


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be one of true/false/1/0/yes/no/on/off, got {raw!r}")


def parse_int(name: str, raw: str, minimum: int | None = None, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


def parse_float(name: str, raw: str, minimum: float | None = None) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def parse_choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _upper_choice(choices: tuple[str, ...]):
    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


@dataclass(frozen=True)
class Settings:
    """Every knob of the service, with its embedded default."""

    database_url: str = ""
    docker_host: str = ""
    port: int = 8002
    idle_timeout_seconds: int = 300
    idle_check_interval_seconds: float = 5.0
    reconcile_interval_seconds: float = 30.0
    max_running_containers: int = 10
    start_timeout_seconds: float = 60.0
    infer_timeout_seconds: float = 120.0
    stop_timeout_seconds: int = 5
    max_request_bytes: int = 10 * 1024 * 1024
    publish_host: str = "127.0.0.1"
    docker_network: str = ""
    container_prefix: str = "inference"
    instance_name: str = "default"
    default_memory: str = "512m"
    max_memory: str = "4g"
    default_cpus: float = 1.0
    min_cpus: float = 0.01
    max_cpus: float = 2.0
    pids_limit: int = 256
    read_only_rootfs: bool = False
    max_running_per_owner: int = 0  # 0: half of MAX_RUNNING_CONTAINERS, at least 1
    max_replicas_per_model: int = 8  # the highest max_replicas a model may register
    scale_check_interval_seconds: float = 1.0  # how often the autoscaler looks at the load
    scale_up_window_seconds: float = 3.0  # load above target this long adds replicas
    scale_down_delay_seconds: float = 30.0  # load low enough for one replica fewer this long removes one
    model_user: str = ""  # e.g. "65534:65534": run model containers as this user, not root
    model_log_max_size: str = "10m"  # json-file log rotation of model containers
    model_log_max_files: int = 3
    max_waiters_per_model: int = 500
    queue_timeout_seconds: float = 60.0
    run_background: str = "auto"
    log_level: str = "INFO"
    log_json: bool = False
    secret_key: str = ""
    auth_disabled: bool = False
    image_allowlist: str = ""
    rate_limit_per_minute: int = 1200
    max_concurrent_inferences_per_token: int = 16
    session_lifetime_seconds: int = 12 * 3600
    session_cookie_secure: bool = False
    metrics_token: str = ""
    kafka_bootstrap_servers: str = ""
    kafka_group_id: str = "inference-service"
    kafka_topic_uploaded: str = "model.uploaded"
    kafka_topic_deleted: str = "model.deleted"
    kafka_max_event_bytes: int = 64 * 1024
    kafka_batch_size: int = 2000
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ssl_cafile: str = ""
    event_max_future_skew_seconds: int = 300
    runtime: str = "docker"  # where model instances run: "docker" or "kubernetes"
    kube_namespace: str = "default"
    kubeconfig: str = ""  # a kubeconfig file; empty: the in-cluster service account
    kube_image_pull_policy: str = "IfNotPresent"
    kube_schedule_timeout_seconds: float = 10.0  # a pod no node has room for fails its start after this

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, instance_path: str = "instance") -> Settings:
        """Read and validate settings; raise ConfigError naming the variable at fault."""
        env = os.environ if environ is None else environ
        known = {f.name.upper() for f in fields(cls)}
        values: dict[str, Any] = {}

        def get(name: str) -> str | None:
            raw = env.get(name)
            return None if raw is None or raw.strip() == "" else raw

        for name in known:
            raw = get(name)
            if raw is None:
                continue
            values[name.lower()] = _PARSERS.get(name.lower(), lambda n, r: r.strip())(name, raw)
        if "database_url" not in values:
            values["database_url"] = "sqlite:///" + os.path.join(os.path.abspath(instance_path), "inference.db")
        settings = cls(**values)
        settings.check()
        return settings

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        names = {f.name for f in fields(self)}
        unknown = sorted(k for k in overrides if k.lower() not in names)
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(unknown)}")
        updated = replace(self, **{k.lower(): v for k, v in overrides.items()})
        updated.check()
        return updated

    def check(self) -> None:
        if self.idle_timeout_seconds < 1:
            raise ConfigError(f"IDLE_TIMEOUT_SECONDS must be at least 1, got {self.idle_timeout_seconds}")
        if self.max_running_containers < 1:
            raise ConfigError(f"MAX_RUNNING_CONTAINERS must be at least 1, got {self.max_running_containers}")
        if not (self.database_url.startswith("sqlite") or self.database_url.startswith("postgresql")):
            raise ConfigError(f"DATABASE_URL must be a sqlite:// or postgresql:// URL, got {self.database_url!r}")
        try:
            parse_memory("DEFAULT_MEMORY", self.default_memory)
            parse_memory("MAX_MEMORY", self.max_memory)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.min_cpus > self.max_cpus:
            raise ConfigError(f"MIN_CPUS ({self.min_cpus}) must not be more than MAX_CPUS ({self.max_cpus})")
        self._check_kafka_security()
        if self.runtime == "kubernetes":
            self._check_kubernetes_names()

    def _check_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ConfigError(
                f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, got {protocol!r}"
            )
        if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
            raise ConfigError(
                f"KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)}, got {self.kafka_sasl_mechanism!r}"
            )
        sasl = protocol.startswith("SASL_")
        for name, value in (
            ("KAFKA_SASL_USERNAME", self.kafka_sasl_username),
            ("KAFKA_SASL_PASSWORD", self.kafka_sasl_password),
        ):
            if sasl and not value:
                raise ConfigError(f"{name} is required when KAFKA_SECURITY_PROTOCOL={protocol}")
            if value and not sasl:
                raise ConfigError(
                    f"{name} is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL (use SASL_SSL or SASL_PLAINTEXT)"
                )
        if self.kafka_ssl_cafile:
            if not protocol.endswith("SSL"):
                raise ConfigError(
                    f"KAFKA_SSL_CAFILE is set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS (use SASL_SSL or SSL)"
                )
            if not (os.path.isfile(self.kafka_ssl_cafile) and os.access(self.kafka_ssl_cafile, os.R_OK)):
                raise ConfigError(f"KAFKA_SSL_CAFILE must be a readable PEM file, got {self.kafka_ssl_cafile!r}")

    def _check_kubernetes_names(self) -> None:
        """Model Deployments are named <CONTAINER_PREFIX>-<INSTANCE_NAME>-model-<id>: DNS labels, short."""
        for name, value in (
            ("KUBE_NAMESPACE", self.kube_namespace),
            ("CONTAINER_PREFIX", self.container_prefix),
            ("INSTANCE_NAME", self.instance_name),
        ):
            if not _DNS_LABEL.match(value):
                raise ConfigError(
                    f"{name} must be lower-case letters, digits and '-' (a DNS label) with RUNTIME=kubernetes, "
                    f"got {value!r}"
                )
        if len(self.container_prefix) + len(self.instance_name) > KUBE_NAME_BUDGET:
            raise ConfigError(
                f"CONTAINER_PREFIX and INSTANCE_NAME together must be at most {KUBE_NAME_BUDGET} characters "
                f"with RUNTIME=kubernetes (pod names stay within 63), got {self.container_prefix}-{self.instance_name}"
            )

    @property
    def allowed_image_prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.image_allowlist.split(",") if p.strip())

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def background_in_web(self) -> bool:
        """Whether the web process also runs the scheduler (the single-process SQLite form)."""
        if self.run_background == "auto":
            return self.is_sqlite
        return self.run_background == "web"


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
KUBE_NAME_BUDGET = 30
_PULL_POLICIES = {p.lower(): p for p in ("IfNotPresent", "Never", "Always")}
_MODEL_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$")
_LOG_SIZE = re.compile(r"^[1-9][0-9]{0,5}[kmg]$")


def _model_user(name: str, raw: str) -> str:
    value = raw.strip()
    if not _MODEL_USER.match(value):
        raise ConfigError(
            f"{name} must be a user or uid, optionally with :group or :gid (like 65534:65534), got {raw!r}"
        )
    return value


def _log_size(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if not _LOG_SIZE.match(value):
        raise ConfigError(f"{name} must be a size like 10m, 512k or 1g, got {raw!r}")
    return value


def _pull_policy(name: str, raw: str) -> str:
    return _PULL_POLICIES[parse_choice(name, raw, tuple(_PULL_POLICIES))]


def _int(minimum: int, maximum: int | None = None):
    return lambda name, raw: parse_int(name, raw, minimum, maximum)


def _float(minimum: float):
    return lambda name, raw: parse_float(name, raw, minimum)


_PARSERS = {
    "port": _int(1, 65535),
    "idle_timeout_seconds": _int(1),
    "idle_check_interval_seconds": _float(0.1),
    "reconcile_interval_seconds": _float(1.0),
    "max_running_containers": _int(1, 10_000),
    "start_timeout_seconds": _float(0.5),
    "infer_timeout_seconds": _float(0.5),
    "stop_timeout_seconds": _int(0, 600),
    "max_request_bytes": _int(1),
    "default_cpus": _float(0.01),
    "min_cpus": _float(0.01),
    "max_cpus": _float(0.01),
    "pids_limit": _int(16),
    "read_only_rootfs": parse_bool,
    "max_running_per_owner": _int(0, 10_000),
    "max_replicas_per_model": _int(1, 1000),
    "scale_check_interval_seconds": _float(0.1),
    "scale_up_window_seconds": _float(0.0),
    "scale_down_delay_seconds": _float(0.0),
    "model_user": lambda n, r: _model_user(n, r),
    "model_log_max_size": lambda n, r: _log_size(n, r),
    "model_log_max_files": _int(1, 100),
    "max_waiters_per_model": _int(1),
    "queue_timeout_seconds": _float(0.1),
    "run_background": lambda n, r: parse_choice(n, r, ("auto", "web", "worker")),
    "log_level": lambda n, r: parse_choice(n, r, ("debug", "info", "warning", "error")).upper(),
    "log_json": parse_bool,
    "auth_disabled": parse_bool,
    "rate_limit_per_minute": _int(0),
    "max_concurrent_inferences_per_token": _int(0),
    "session_lifetime_seconds": _int(60, 31 * 24 * 3600),
    "session_cookie_secure": parse_bool,
    "kafka_max_event_bytes": _int(256, 16 * 1024 * 1024),
    "kafka_batch_size": _int(1, 100_000),
    "kafka_security_protocol": _upper_choice(KAFKA_SECURITY_PROTOCOLS),
    "kafka_sasl_mechanism": _upper_choice(KAFKA_SASL_MECHANISMS),
    "kafka_sasl_password": lambda name, raw: raw,  # kept as given: spaces may belong to it
    "event_max_future_skew_seconds": _int(0, 366 * 24 * 3600),
    "runtime": lambda n, r: parse_choice(n, r, ("docker", "kubernetes")),
    "kube_image_pull_policy": _pull_policy,
    "kube_schedule_timeout_seconds": _float(0.0),
}
