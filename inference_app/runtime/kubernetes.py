"""The Kubernetes runtime: each model is a Deployment, each of its instances a pod.

start(spec) scales the model's Deployment up by one and claims the new pod for spec.replica
(a label); remove(pod) deletes exactly that pod and scales down by one; remove_model scales to
zero. Pods are addressed by their own IP (per pod, for balancing across replicas), which the
service reaches from inside the cluster, or from a host that routes the pod network. Waiting
follows the API with watches; every failure Kubernetes can name is raised as the project's
error within a bounded time. One API client per process, created lazily after fork.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.utils import parse_quantity

from ..config import Settings
from ..errors import ContainerFailed, EngineUnavailable, ImageMissing, NoCapacity, ServiceError, StartTimeout
from . import kube_objects as objects
from . import kube_status as status
from .base import Endpoint, Instance, InstanceSpec, Limits, Runtime
from .readiness import ended_error, health_answer, poll_ready

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = (3.0, 20.0)  # connect, read: an unreachable API fails fast, never hangs
WATCH_CHUNK = 10.0  # seconds one watch request lasts before it is renewed
QUOTA_LOOK_AFTER = 1.0  # a pod not created by then: ask the ReplicaSet why (a quota, a webhook)
GONE_MARGIN = 30.0  # beyond the grace period, how long remove() waits for a pod to disappear
SETTLE_SECONDS = 10.0  # how long remove() waits for the ReplicaSet to drop a replacement it made
CLAIM_ATTEMPTS = 10


class KubernetesRuntime(Runtime):
    """Model instances as pods of one Deployment per model, in one namespace."""

    name = "kubernetes"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.namespace = settings.kube_namespace
        self._api: client.ApiClient | None = None
        self._api_pid = 0
        self._lock = threading.Lock()
        self._http: urllib3.PoolManager | None = None
        self._http_pid = 0
        self._policy_made = False

    # -- plumbing -----------------------------------------------------------------------------
    @property
    def api(self) -> client.ApiClient:
        if self._api is None or self._api_pid != os.getpid():
            with self._lock:
                if self._api is None or self._api_pid != os.getpid():
                    self._api = self._connect()
                    self._api_pid = os.getpid()
        return self._api

    def _connect(self) -> client.ApiClient:
        configuration = client.Configuration()
        try:
            if self.settings.kubeconfig:
                config.load_kube_config(config_file=self.settings.kubeconfig, client_configuration=configuration)
            else:
                config.load_incluster_config(client_configuration=configuration)
        except (ConfigException, OSError, TypeError, ValueError) as exc:
            where = self.settings.kubeconfig or "the in-cluster service account"
            raise EngineUnavailable(f"Kubernetes configuration from {where} is unusable: {exc}", retry_after=5) from exc
        configuration.retries = 1
        return client.ApiClient(configuration)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def health_http(self) -> urllib3.PoolManager:
        if self._http is None or self._http_pid != os.getpid():
            self._http = urllib3.PoolManager(num_pools=64, maxsize=4, block=False, retries=False)
            self._http_pid = os.getpid()
        return self._http

    def _call(self, fn: Callable, *args, **kwargs):
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

    def _stream(self, fn: Callable, timeout: float, **kwargs):
        """Watch events for at most `timeout` seconds (the server ends the request then)."""
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
            if exc.status == 410:  # our resource version expired: the caller reads afresh
                return
            unavailable = _unavailable(exc)
            if unavailable is not None:
                raise unavailable from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise EngineUnavailable(f"Kubernetes API unreachable: {_short(exc)}", retry_after=5) from exc

    def ping(self) -> None:
        """Raise EngineUnavailable unless the API answers and lets us list pods in our namespace."""
        self._call(self.core.list_namespaced_pod, self.namespace, limit=1, label_selector=self._selector())

    def deployment_for(self, model_id: int) -> str:
        return objects.deployment_name(self.settings.container_prefix, self.settings.instance_name, model_id)

    def _selector(self, model_id: int | None = None) -> str:
        return objects.selector(self.settings.instance_name, model_id)

    # -- start --------------------------------------------------------------------------------
    def start(self, spec: InstanceSpec) -> Instance:
        """Scale the model's Deployment so it has a pod for spec.replica, and return that pod once it started."""
        deadline = time.monotonic() + self.settings.start_timeout_seconds
        name = self.deployment_for(spec.model_id)
        self._ensure_network_policy()
        template_hash = self._ensure_deployment(spec, name)
        for pod in self._pod_list(spec.model_id).items:
            if status.replica_of(pod) == spec.replica and pod.metadata.deletion_timestamp is None:
                logger.info(
                    "model %s replica %s is already pod %s; replacing it",
                    spec.model_id,
                    spec.replica,
                    pod.metadata.name,
                )
                self.remove(pod.metadata.name, timeout=0)
        pod = self._claim(spec, name, template_hash, deadline)
        try:
            pod = self._follow(pod, deadline, lambda p: status.phase(p)[0] != "created")
        except ServiceError:
            self.remove(pod.metadata.name, timeout=0)
            raise
        return self._instance(pod)

    def _ensure_network_policy(self) -> None:
        if self._policy_made:
            return
        s = self.settings
        policy = objects.make_network_policy(
            objects.network_policy_name(s.container_prefix, s.instance_name), s.instance_name
        )
        try:
            self._call(client.NetworkingV1Api(self.api).create_namespaced_network_policy, self.namespace, policy)
            logger.info("created the NetworkPolicy %s that keeps model pods apart", policy.metadata.name)
        except ApiException as exc:
            if exc.status != 409:
                raise _refused("create the models' NetworkPolicy", exc) from exc
        self._policy_made = True

    def _ensure_deployment(self, spec: InstanceSpec, name: str) -> str:
        """Create the model's Deployment (at zero replicas) or bring its template up to date; returns its hash."""
        s = self.settings
        template = objects.make_pod_template(
            spec, s.instance_name, s.kube_image_pull_policy, s.stop_timeout_seconds, s.model_user
        )
        want = template.metadata.annotations[objects.TEMPLATE_HASH]
        try:
            current = self._call(self.apps.read_namespaced_deployment, name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise _refused("read the model's Deployment", exc) from exc
            try:
                self._call(
                    self.apps.create_namespaced_deployment, self.namespace, objects.make_deployment(name, template)
                )
                logger.info("created Deployment %s for model %s", name, spec.model_id)
                return want
            except ApiException as again:
                if again.status != 409:  # 409: another process created it meanwhile
                    raise _refused("create the model's Deployment", again) from again
                current = self._call(self.apps.read_namespaced_deployment, name, self.namespace)
        if (current.metadata.annotations or {}).get(objects.TEMPLATE_HASH) != want:
            logger.info("Deployment %s: new pod template (image %s, version %s)", name, spec.image, spec.version)
            try:
                self._call(
                    self.apps.patch_namespaced_deployment, name, self.namespace, objects.template_patch(template)
                )
            except ApiException as exc:
                raise _refused("update the model's Deployment", exc) from exc
        return want

    def _claim(self, spec: InstanceSpec, name: str, template_hash: str, deadline: float) -> client.V1Pod:
        """Claim an unclaimed pod of the current template for the replica, scaling up by one for it."""
        scaled_at = None
        while True:
            listing = self._pod_list(spec.model_id)
            for pod in _claimable(listing.items, name, template_hash):
                claimed = self._try_claim(pod, spec.replica)
                if claimed is not None:
                    logger.info("model %s replica %s: pod %s", spec.model_id, spec.replica, pod.metadata.name)
                    return claimed
            now = time.monotonic()
            if scaled_at is None:
                self._scale_by(name, +1)
                scaled_at = now
            elif now - scaled_at >= QUOTA_LOOK_AFTER:
                refusal = status.replica_failure(self._replica_sets(spec.model_id))
                if refusal is not None:
                    self._scale_by(name, -1)
                    raise NoCapacity(f"Kubernetes refused the model's pod: {refusal}", retry_after=self._retry_after())
            if now >= deadline:
                self._scale_by(name, -1)
                raise StartTimeout("no pod was created for the model before the start timeout", retry_after=5)
            wait = min(deadline - now, QUOTA_LOOK_AFTER)
            for _event in self._stream(
                self.core.list_namespaced_pod,
                wait,
                label_selector=self._selector(spec.model_id),
                resource_version=listing.metadata.resource_version,
            ):
                break  # something changed: look again

    def _try_claim(self, pod: client.V1Pod, replica: int) -> client.V1Pod | None:
        patch = objects.claim_patch(replica, pod.metadata.resource_version)
        try:
            return self._call(self.core.patch_namespaced_pod, pod.metadata.name, self.namespace, patch)
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or changed since we read it (maybe claimed): look again
                return None
            raise _refused("label the model's pod", exc) from exc

    def _scale_by(self, name: str, delta: int) -> int | None:
        """Change the Deployment's replicas by delta (not below zero), safe against concurrent changes.

        Returns the replicas it set, or None when there is no such Deployment.
        """
        for _ in range(CLAIM_ATTEMPTS):
            try:
                scale = self._call(self.apps.read_namespaced_deployment_scale, name, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise _refused("read the model's scale", exc) from exc
            current = scale.spec.replicas or 0  # zero is left out of the answer
            want = max(0, current + delta)
            if want == current:
                return want
            scale.spec.replicas = want
            try:
                self._call(self.apps.replace_namespaced_deployment_scale, name, self.namespace, scale)
                return want
            except ApiException as exc:
                if exc.status != 409:  # 409: scaled by someone else since we read it; again
                    raise _refused("scale the model's Deployment", exc) from exc
        raise EngineUnavailable(f"could not scale {name}: too many concurrent changes", retry_after=1)

    # -- following a pod ----------------------------------------------------------------------
    def _follow(self, pod: client.V1Pod, deadline: float, done: Callable[[client.V1Pod], bool]) -> client.V1Pod:
        """Watch one pod until done(pod) or the deadline; raise the error for a pod that cannot get there."""
        name = pod.metadata.name
        unschedulable_since: float | None = None
        while True:
            problem = status.problem(pod)
            if problem is not None and problem.kind == "unschedulable":
                unschedulable_since = unschedulable_since or time.monotonic()
                if time.monotonic() - unschedulable_since >= self.settings.kube_schedule_timeout_seconds:
                    raise NoCapacity(
                        f"no node has room for the model: {problem.message}", retry_after=self._retry_after()
                    )
            elif problem is not None:
                raise self._problem_error(pod, problem)
            else:
                unschedulable_since = None
            if done(pod):
                return pod
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return pod
            if unschedulable_since is not None:
                remaining = min(
                    remaining, unschedulable_since + self.settings.kube_schedule_timeout_seconds - time.monotonic()
                )
            changed = None
            for event in self._stream(
                self.core.list_namespaced_pod,
                min(max(remaining, 0.1), WATCH_CHUNK),
                field_selector=f"metadata.name={name}",
                resource_version=pod.metadata.resource_version,
            ):
                if event["type"] == "DELETED":
                    raise ContainerFailed("the pod was removed while it was starting")
                changed = event["object"]
                if isinstance(changed, client.V1Pod):
                    break
            if changed is None:  # the watch ran out, or expired: read the pod afresh
                changed = self._read_pod(name)
                if changed is None:
                    raise ContainerFailed("the pod was removed while it was starting")
            pod = changed

    def _problem_error(self, pod: client.V1Pod, problem: status.Problem) -> ServiceError:
        if problem.kind == "image":
            container = status.container_spec(pod)
            image = container.image if container is not None else "?"
            return ImageMissing(
                f"image {image} is not available on the cluster's nodes ({problem.message}); "
                f"load it into the nodes' container runtime (imagePullPolicy {self.settings.kube_image_pull_policy})",
                details={"image": image},
            )
        if problem.kind == "config":
            return ContainerFailed(f"Kubernetes could not create the model's container: {problem.message}")
        return ContainerFailed(f"the model's pod failed: {problem.message}")

    def _retry_after(self) -> int:
        return max(1, int(self.settings.idle_check_interval_seconds))

    def wait_ready(self, instance: Instance, health_path: str, deadline: float) -> Endpoint:
        """Watch the pod until its readiness probe (the model's health path) passes."""
        pod = self._read_pod(instance.instance_id)
        if pod is None:
            raise ContainerFailed("the pod was removed while it was starting")
        if _probe_path(pod) != health_path:  # an older template: poll the path asked for ourselves
            return poll_ready(self, self.health_http, instance, health_path, deadline)
        pod = self._follow(pod, deadline, lambda p: status.ready(p) or status.phase(p)[0] in ("exited", "dead"))
        if status.ready(pod):
            endpoint = self._instance(pod).endpoint
            if endpoint is not None:
                return endpoint
        current = self._instance(pod)
        if current.ended:
            if current.phase == "dead":
                raise ContainerFailed("the pod was removed while it was starting")
            raise ended_error(self, current)
        if current.endpoint is None:
            raise StartTimeout("the model's pod did not start before the start timeout", retry_after=5)
        problem = health_answer(self.health_http, current.endpoint, health_path)
        if problem is None:  # healthy by now, the probe will tell the kubelet within a period
            return current.endpoint
        raise StartTimeout(f"the model did not become ready before the start timeout ({problem})")

    # -- facts --------------------------------------------------------------------------------
    def _read_pod(self, name: str) -> client.V1Pod | None:
        try:
            return self._call(self.core.read_namespaced_pod, name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _refused("read the pod", exc) from exc

    def _pod_list(self, model_id: int | None = None) -> client.V1PodList:
        try:
            return self._call(self.core.list_namespaced_pod, self.namespace, label_selector=self._selector(model_id))
        except ApiException as exc:
            raise _refused("list pods", exc) from exc

    def _replica_sets(self, model_id: int) -> list[client.V1ReplicaSet]:
        try:
            found = self._call(
                self.apps.list_namespaced_replica_set, self.namespace, label_selector=self._selector(model_id)
            )
        except ApiException as exc:
            raise _refused("list ReplicaSets", exc) from exc
        return found.items

    def inspect(self, instance_id: str) -> Instance | None:
        """Live facts about a pod, or None when it does not exist."""
        pod = self._read_pod(instance_id)
        return None if pod is None else self._instance(pod)

    def _instance(self, pod: client.V1Pod) -> Instance:
        labels = pod.metadata.labels or {}
        annotations = pod.metadata.annotations or {}
        model_id = _digits(labels.get(objects.MODEL_ID))
        if model_id is not None and not status.owned_by(pod, self.deployment_for(model_id)):
            model_id = None  # our labels on a pod our Deployment did not make: a stray
        phase, exit_code = status.phase(pod)
        container = status.container_spec(pod)
        port = container.ports[0].container_port if container is not None and container.ports else None
        replica = status.replica_of(pod)
        endpoint = None
        if phase == "running" and pod.status.pod_ip and port and replica >= 0:
            # only a claimed pod is addressed: one the ReplicaSet made by itself (a replacement) is
            # not an instance the service started until a start claims it, so reconciliation
            # treats a replaced pod as vanished, the same as on Docker
            endpoint = Endpoint(host=pod.status.pod_ip, port=port, instance_id=pod.metadata.name)
        state = status.container_status(pod)
        started = state.state.running.started_at if state and state.state and state.state.running else None
        return Instance(
            instance_id=pod.metadata.name,
            name=pod.metadata.name,
            model_id=model_id,
            replica=replica,
            version=annotations.get(objects.VERSION),
            phase=phase,
            exit_code=exit_code,
            endpoint=endpoint,
            started_at=started.isoformat() if started else None,
            image=container.image if container is not None else "",
            limits=_limits(container),
            node=pod.spec.node_name,
        )

    def list_managed(self, model_id: int | None = None) -> list[Instance]:
        """Every pod carrying this service's labels (of one model, if given); claimed replicas first.

        Pods already being deleted are left out: they are on their way, and nothing is left to decide.
        """
        pods = self._pod_list(model_id).items
        found = [self._instance(pod) for pod in pods if pod.metadata.deletion_timestamp is None]
        return sorted(found, key=lambda i: (i.model_id or 0, i.replica < 0, i.replica, i.name))

    def logs(self, instance_id: str, lines: int = 20) -> str:
        """The last lines of the pod's model container (of its previous run while it waits to restart)."""
        pod = self._read_pod(instance_id)
        if pod is None:
            return ""
        state = status.container_status(pod)
        previous = bool(
            state is not None
            and state.restart_count
            and state.state is not None
            and state.state.running is None
            and state.state.terminated is None
        )
        try:
            text = self._call(
                self.core.read_namespaced_pod_log,
                instance_id,
                self.namespace,
                container=objects.CONTAINER,
                tail_lines=lines,
                previous=previous,
            )
        except ApiException as exc:
            if exc.status in (400, 404):  # not started yet, or gone
                return ""
            raise _refused("read the pod's log", exc) from exc
        return (text or "").strip()

    # -- removal ------------------------------------------------------------------------------
    def remove(self, instance_id: str, timeout: int | None = None) -> bool:
        """Delete exactly this pod and scale its Deployment down by one; True if it was there."""
        pod = self._read_pod(instance_id)
        if pod is None:
            return False
        grace = self.settings.stop_timeout_seconds if timeout is None else timeout
        if pod.metadata.deletion_timestamp is None:
            try:
                self._call(self.core.patch_namespaced_pod, instance_id, self.namespace, objects.leaving_patch())
                self._call(self.core.delete_namespaced_pod, instance_id, self.namespace, grace_period_seconds=grace)
            except ApiException as exc:
                if exc.status != 404:
                    raise _refused("delete the pod", exc) from exc
            model_id = _digits((pod.metadata.labels or {}).get(objects.MODEL_ID))
            if model_id is not None and status.owned_by(pod, self.deployment_for(model_id)):
                desired = self._scale_by(self.deployment_for(model_id), -1)
                self._settle(model_id, desired)
        self._wait_gone(f"metadata.name={instance_id}", None, grace + GONE_MARGIN)
        return True

    def _settle(self, model_id: int, desired: int | None) -> None:
        """Until the ReplicaSet has dropped any pod it made between our delete and our scale-down.

        There is no atomic "delete this pod and scale down": in between, the ReplicaSet may
        replace the pod. The replacement is unclaimed, so it is the one the scale-down removes.
        """
        if desired is None:
            return
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            listing = self._pod_list(model_id)
            if sum(p.metadata.deletion_timestamp is None for p in listing.items) <= desired:
                return
            for _event in self._stream(
                self.core.list_namespaced_pod,
                min(deadline - time.monotonic(), WATCH_CHUNK),
                label_selector=self._selector(model_id),
                resource_version=listing.metadata.resource_version,
            ):
                break
        logger.warning("model %s: more pods than its %s replicas after %s s", model_id, desired, SETTLE_SECONDS)

    def remove_model(self, model_id: int, timeout: int | None = None) -> int:
        """Scale the model's Deployment to zero and wait for its pods to go; returns how many there were."""
        name = self.deployment_for(model_id)
        pods = self._pod_list(model_id).items  # before scaling: then the ReplicaSet starts deleting them
        try:
            self._call(self.apps.patch_namespaced_deployment_scale, name, self.namespace, {"spec": {"replicas": 0}})
        except ApiException as exc:
            if exc.status != 404:
                raise _refused("scale the model's Deployment to zero", exc) from exc
        grace = self.settings.stop_timeout_seconds if timeout is None else timeout
        removed = 0
        for pod in pods:
            if pod.metadata.deletion_timestamp is None:
                removed += 1
                try:
                    self._call(
                        self.core.delete_namespaced_pod, pod.metadata.name, self.namespace, grace_period_seconds=grace
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise _refused("delete the pod", exc) from exc
        if pods:
            self._wait_gone(None, self._selector(model_id), grace + GONE_MARGIN)
        return removed

    def _wait_gone(self, field_selector: str | None, label_selector: str | None, seconds: float) -> None:
        """Until no pod matches (watching deletions), or `seconds` passed (then a warning, no error)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            listing = self._call(
                self.core.list_namespaced_pod,
                self.namespace,
                field_selector=field_selector,
                label_selector=label_selector,
            )
            left = {p.metadata.name for p in listing.items}
            if not left:
                return
            for event in self._stream(
                self.core.list_namespaced_pod,
                min(deadline - time.monotonic(), WATCH_CHUNK),
                field_selector=field_selector,
                label_selector=label_selector,
                resource_version=listing.metadata.resource_version,
            ):
                if event["type"] == "DELETED":
                    left.discard(event["object"].metadata.name)
                    if not left:
                        return
        logger.warning("pods (%s) still there after %.0f s", field_selector or label_selector, seconds)


def _claimable(pods: list[client.V1Pod], deployment: str, template_hash: str) -> list[client.V1Pod]:
    """Unclaimed pods of the current template, readiest first."""
    rank = {"running": 0, "created": 1, "exited": 2}
    found = [
        p
        for p in pods
        if status.replica_of(p) < 0
        and p.metadata.deletion_timestamp is None
        and status.owned_by(p, deployment)
        and (p.metadata.annotations or {}).get(objects.TEMPLATE_HASH) == template_hash
        and status.phase(p)[0] in rank
    ]
    return sorted(found, key=lambda p: (not status.ready(p), rank[status.phase(p)[0]], p.metadata.name))


def _probe_path(pod: client.V1Pod) -> str | None:
    container = status.container_spec(pod)
    probe = container.readiness_probe if container is not None else None
    return probe.http_get.path if probe is not None and probe.http_get is not None else None


def _limits(container: client.V1Container | None) -> Limits:
    limits = (container.resources.limits if container is not None and container.resources else None) or {}
    memory = int(parse_quantity(limits["memory"])) if "memory" in limits else None
    cpus = float(parse_quantity(limits["cpu"])) if "cpu" in limits else None
    return Limits(memory_bytes=memory, cpus=cpus, pids_limit=None)  # pid limits are the kubelet's, per node


def _digits(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason or exc.status)


def _unavailable(exc: ApiException) -> EngineUnavailable | None:
    """The API is down, or will not let the service in: the runtime is unavailable, not the model."""
    if exc.status in (0, 401, 403) or exc.status >= 500:
        return EngineUnavailable(f"Kubernetes API: {exc.status} {_message(exc)}", retry_after=5)
    return None


def _refused(what: str, exc: ApiException) -> ServiceError:
    return ContainerFailed(f"Kubernetes would not {what}: {exc.status} {_message(exc)}")


def _short(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else exc.__class__.__name__
