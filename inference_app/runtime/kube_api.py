"""One handle on the Kubernetes API per process: calls with timeouts, watches, and errors in the project's words.

The API being down, or refusing the service (401, 403), is EngineUnavailable: the runtime is
unavailable, not the model. Other API errors reach the caller as ApiException, to decide on
(404 gone, 409 changed meanwhile) or to turn into a named error with refused().
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from ..errors import ContainerFailed, EngineUnavailable, ServiceError

REQUEST_TIMEOUT = (3.0, 20.0)  # connect, read: an unreachable API fails fast, never hangs
PING_TIMEOUT = (1.0, 2.0)  # /readyz's look: a silent API server must not hold a readiness probe
WATCH_CHUNK = 10.0  # seconds one watch request lasts before it is renewed


class KubeApi:
    """A lazily made API client (again after a fork), for one namespace."""

    def __init__(self, kubeconfig: str, namespace: str):
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self._client: client.ApiClient | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def client(self) -> client.ApiClient:
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client = self._connect()
                    self._pid = os.getpid()
        return self._client

    def _connect(self) -> client.ApiClient:
        configuration = client.Configuration()
        try:
            if self.kubeconfig:
                config.load_kube_config(config_file=self.kubeconfig, client_configuration=configuration)
            else:
                config.load_incluster_config(client_configuration=configuration)
        except (ConfigException, OSError, TypeError, ValueError) as exc:
            where = self.kubeconfig or "the in-cluster service account"
            raise EngineUnavailable(f"Kubernetes configuration from {where} is unusable: {exc}", retry_after=5) from exc
        configuration.retries = 1
        return client.ApiClient(configuration)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.client)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.client)

    @property
    def networking(self) -> client.NetworkingV1Api:
        return client.NetworkingV1Api(self.client)

    def call(self, fn: Callable, *args, **kwargs):
        """One API call, bounded in time."""
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            unavailable = _unavailable(exc)
            if unavailable is not None:
                raise unavailable from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise EngineUnavailable(f"Kubernetes API unreachable: {_short(exc)}", retry_after=5) from exc

    def stream(self, fn: Callable, timeout: float, **kwargs):
        """Watch events of a namespaced list for at most `timeout` seconds (the server ends it then)."""
        seconds = max(1, math.ceil(timeout))
        try:
            yield from watch.Watch().stream(
                fn,
                self.namespace,
                timeout_seconds=seconds,
                _request_timeout=(REQUEST_TIMEOUT[0], seconds + 10),
                **kwargs,
            )
        except ApiException as exc:
            if exc.status == 410:  # the resource version expired: the caller reads afresh
                return
            unavailable = _unavailable(exc)
            if unavailable is not None:
                raise unavailable from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise EngineUnavailable(f"Kubernetes API unreachable: {_short(exc)}", retry_after=5) from exc

    def pods(self, **selectors) -> client.V1PodList:
        try:
            return self.call(self.core.list_namespaced_pod, self.namespace, **selectors)
        except ApiException as exc:
            raise refused("list pods", exc) from exc

    def wait_pods(self, done: Callable[[list[client.V1Pod]], bool], seconds: float, **selectors) -> bool:
        """Until done(pods) holds for the pods the selectors match, watching them change; False after `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            listing = self.pods(**selectors)
            if done(listing.items):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            events = self.stream(
                self.core.list_namespaced_pod,
                min(remaining, WATCH_CHUNK),
                resource_version=listing.metadata.resource_version,
                **selectors,
            )
            for _event in events:
                break  # something changed: look again


def _message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason or exc.status)


def _unavailable(exc: ApiException) -> EngineUnavailable | None:
    if exc.status in (0, 401, 403) or exc.status >= 500:
        return EngineUnavailable(f"Kubernetes API: {exc.status} {_message(exc)}", retry_after=5)
    return None


def refused(what: str, exc: ApiException) -> ServiceError:
    """An API refusal the service cannot work around, named."""
    return ContainerFailed(f"Kubernetes would not {what}: {exc.status} {_message(exc)}")


def _short(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else exc.__class__.__name__
