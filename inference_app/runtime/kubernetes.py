"""The Kubernetes runtime: each model is a Deployment, each of its instances a pod.

start(spec) scales the model's Deployment up by one and claims the new pod for spec.replica
(a label); remove(pod) deletes exactly that pod and scales down by one; remove_model scales to
zero. Pods are addressed by their own IP (per pod, for balancing across replicas), which the
service reaches from inside the cluster, or from a host that routes the pod network. Waiting
follows the API with watches; every failure Kubernetes can name is raised as the project's
error within a bounded time. One API client per process, created lazily after fork.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from ..config import Settings
from ..errors import ContainerFailed, EngineUnavailable, ImageMissing, NoCapacity, ServiceError, StartTimeout
from . import kube_objects as objects
from . import kube_status as status
from .base import Endpoint, Instance, InstanceSpec, Runtime
from .kube_api import PING_TIMEOUT, WATCH_CHUNK, KubeApi, refused
from .readiness import ended_error, health_answer, poll_ready

logger = logging.getLogger(__name__)

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
        self.kube = KubeApi(settings.kubeconfig, settings.kube_namespace)
        self._http: urllib3.PoolManager | None = None
        self._http_pid = 0
        self._policy_made = False

    @property
    def api(self) -> client.ApiClient:
        return self.kube.client

    @property
    def health_http(self) -> urllib3.PoolManager:
        """Connections for the one health check that words a start timeout, one pool per process."""
        if self._http is None or self._http_pid != os.getpid():
            self._http = urllib3.PoolManager(num_pools=64, maxsize=4, block=False, retries=False)
            self._http_pid = os.getpid()
        return self._http

    def ping(self) -> None:
        """Raise EngineUnavailable unless the API answers and lets us list pods in our namespace."""
        self.kube.call(
            self.kube.core.list_namespaced_pod,
            self.namespace,
            limit=1,
            label_selector=self._selector(),
            _request_timeout=PING_TIMEOUT,
        )

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
            self.kube.call(self.kube.networking.create_namespaced_network_policy, self.namespace, policy)
            logger.info("created the NetworkPolicy %s that keeps model pods apart", policy.metadata.name)
        except ApiException as exc:
            if exc.status != 409:
                raise refused("create the models' NetworkPolicy", exc) from exc
        self._policy_made = True

    def _ensure_deployment(self, spec: InstanceSpec, name: str) -> str:
        """Create the model's Deployment (at zero replicas) or bring its template up to date; returns its hash."""
        s = self.settings
        template = objects.make_pod_template(
            spec, s.instance_name, s.kube_image_pull_policy, s.stop_timeout_seconds, s.model_user
        )
        want = template.metadata.annotations[objects.TEMPLATE_HASH]
        try:
            current = self.kube.call(self.kube.apps.read_namespaced_deployment, name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise refused("read the model's Deployment", exc) from exc
            try:
                self.kube.call(
                    self.kube.apps.create_namespaced_deployment, self.namespace, objects.make_deployment(name, template)
                )
                logger.info("created Deployment %s for model %s", name, spec.model_id)
                return want
            except ApiException as again:
                if again.status != 409:  # 409: another process created it meanwhile
                    raise refused("create the model's Deployment", again) from again
                current = self.kube.call(self.kube.apps.read_namespaced_deployment, name, self.namespace)
        if (current.metadata.annotations or {}).get(objects.TEMPLATE_HASH) != want:
            logger.info("Deployment %s: new pod template (image %s, version %s)", name, spec.image, spec.version)
            try:
                self.kube.call(
                    self.kube.apps.patch_namespaced_deployment, name, self.namespace, objects.template_patch(template)
                )
            except ApiException as exc:
                raise refused("update the model's Deployment", exc) from exc
        return want

    def _claim(self, spec: InstanceSpec, name: str, template_hash: str, deadline: float) -> client.V1Pod:
        """Claim an unclaimed pod of the current template for the replica, scaling up by one for it."""
        scaled_at = None
        while True:
            for pod in status.claimable(self._pod_list(spec.model_id).items, name, template_hash):
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
            self.kube.wait_pods(
                lambda pods: bool(status.claimable(pods, name, template_hash)),
                min(deadline - now, QUOTA_LOOK_AFTER),
                label_selector=self._selector(spec.model_id),
            )

    def _try_claim(self, pod: client.V1Pod, replica: int) -> client.V1Pod | None:
        patch = objects.claim_patch(replica, pod.metadata.resource_version)
        try:
            return self.kube.call(self.kube.core.patch_namespaced_pod, pod.metadata.name, self.namespace, patch)
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or changed since we read it (maybe claimed): look again
                return None
            raise refused("label the model's pod", exc) from exc

    def _scale_by(self, name: str, delta: int) -> int | None:
        """Change the Deployment's replicas by delta (not below zero), safe against concurrent changes.

        Returns the replicas it set, or None when there is no such Deployment.
        """
        for _ in range(CLAIM_ATTEMPTS):
            try:
                scale = self.kube.call(self.kube.apps.read_namespaced_deployment_scale, name, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise refused("read the model's scale", exc) from exc
            current = scale.spec.replicas or 0  # zero is left out of the answer
            want = max(0, current + delta)
            if want == current:
                return want
            scale.spec.replicas = want
            try:
                self.kube.call(self.kube.apps.replace_namespaced_deployment_scale, name, self.namespace, scale)
                return want
            except ApiException as exc:
                if exc.status != 409:  # 409: scaled by someone else since we read it; again
                    raise refused("scale the model's Deployment", exc) from exc
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
            for event in self.kube.stream(
                self.kube.core.list_namespaced_pod,
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
        if status.probe_path(pod) != health_path:  # an older template: poll the path asked for ourselves
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
            return self.kube.call(self.kube.core.read_namespaced_pod, name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise refused("read the pod", exc) from exc

    def _pod_list(self, model_id: int | None = None) -> client.V1PodList:
        return self.kube.pods(label_selector=self._selector(model_id))

    def _replica_sets(self, model_id: int) -> list[client.V1ReplicaSet]:
        try:
            found = self.kube.call(
                self.kube.apps.list_namespaced_replica_set, self.namespace, label_selector=self._selector(model_id)
            )
        except ApiException as exc:
            raise refused("list ReplicaSets", exc) from exc
        return found.items

    def inspect(self, instance_id: str) -> Instance | None:
        """Live facts about a pod, or None when it does not exist."""
        pod = self._read_pod(instance_id)
        return None if pod is None else self._instance(pod)

    def _instance(self, pod: client.V1Pod) -> Instance:
        return status.instance(pod, self.deployment_for)

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
            text = self.kube.call(
                self.kube.core.read_namespaced_pod_log,
                instance_id,
                self.namespace,
                container=objects.CONTAINER,
                tail_lines=lines,
                previous=previous,
            )
        except ApiException as exc:
            if exc.status in (400, 404):  # not started yet, or gone
                return ""
            raise refused("read the pod's log", exc) from exc
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
                self.kube.call(
                    self.kube.core.patch_namespaced_pod, instance_id, self.namespace, objects.leaving_patch()
                )
                self.kube.call(
                    self.kube.core.delete_namespaced_pod, instance_id, self.namespace, grace_period_seconds=grace
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise refused("delete the pod", exc) from exc
            model_id = status.digits((pod.metadata.labels or {}).get(objects.MODEL_ID))
            if model_id is not None and status.owned_by(pod, self.deployment_for(model_id)):
                desired = self._scale_by(self.deployment_for(model_id), -1)
                self._settle(model_id, desired)
        self._wait_gone(grace + GONE_MARGIN, field_selector=f"metadata.name={instance_id}")
        return True

    def _settle(self, model_id: int, desired: int | None) -> None:
        """Until the ReplicaSet has dropped any pod it made between our delete and our scale-down.

        There is no atomic "delete this pod and scale down": in between, the ReplicaSet may
        replace the pod. The replacement is unclaimed, so it is the one the scale-down removes.
        """
        if desired is None:
            return

        def settled(pods: list[client.V1Pod]) -> bool:
            return sum(p.metadata.deletion_timestamp is None for p in pods) <= desired

        if not self.kube.wait_pods(settled, SETTLE_SECONDS, label_selector=self._selector(model_id)):
            logger.warning("model %s: more pods than its %s replicas after %s s", model_id, desired, SETTLE_SECONDS)

    def remove_model(self, model_id: int, timeout: int | None = None) -> int:
        """Scale the model's Deployment to zero and wait for its pods to go; returns how many there were."""
        name = self.deployment_for(model_id)
        pods = self._pod_list(model_id).items  # before scaling: then the ReplicaSet starts deleting them
        try:
            self.kube.call(
                self.kube.apps.patch_namespaced_deployment_scale, name, self.namespace, {"spec": {"replicas": 0}}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise refused("scale the model's Deployment to zero", exc) from exc
        grace = self.settings.stop_timeout_seconds if timeout is None else timeout
        removed = 0
        for pod in pods:
            if pod.metadata.deletion_timestamp is None:
                removed += 1
                try:
                    self.kube.call(
                        self.kube.core.delete_namespaced_pod,
                        pod.metadata.name,
                        self.namespace,
                        grace_period_seconds=grace,
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise refused("delete the pod", exc) from exc
        if pods:
            self._wait_gone(grace + GONE_MARGIN, label_selector=self._selector(model_id))
        return removed

    def _wait_gone(self, seconds: float, **selectors) -> None:
        """Until no pod matches the selectors, or `seconds` passed (then a warning, no error)."""
        if not self.kube.wait_pods(lambda pods: not pods, seconds, **selectors):
            logger.warning("pods (%s) still there after %.0f s", selectors, seconds)
