"""Kubernetes objects for model instances, built by pure functions (in the manner of KubeSpawner's objects.py).

Each model is one Deployment; its pods are the model's instances. A pod becomes a replica when
the runtime claims it (the REPLICA label); a claimed pod is expensive to delete, so when the
ReplicaSet must pick a pod to remove it takes an unclaimed one first. One NetworkPolicy per
service instance admits traffic to model pods only from pods that are not models. Nothing here
talks to a cluster: tests check these objects as they are.
"""

from __future__ import annotations

import hashlib
import json
import re

from kubernetes import client

from .base import InstanceSpec

PREFIX = "inference-service.io/"
MANAGED = PREFIX + "managed"
INSTANCE = PREFIX + "instance"
MODEL_ID = PREFIX + "model-id"
REPLICA = PREFIX + "replica"  # set on a pod when start() claims it for a replica
VERSION = PREFIX + "version"  # annotations: versions and owners need not be valid label values
OWNER = PREFIX + "user-id"
TEMPLATE_HASH = PREFIX + "template-hash"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"

CONTAINER = "model"
CLAIMED_COST = 1000  # a claimed replica: the ReplicaSet removes unclaimed pods first
LEAVING_COST = -(2**31)  # the pod being removed: first to go should the ReplicaSet choose
TMP_SIZE = "64Mi"  # the writable /tmp of a model with a read-only root file system
PROBE_PERIOD_SECONDS = 1

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_dns_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS_LABEL.match(value))


def deployment_name(prefix: str, instance: str, model_id: int) -> str:
    """Deterministic, like the Docker runtime's container names: a restart finds it again."""
    return f"{prefix}-{instance}-model-{model_id}"


def network_policy_name(prefix: str, instance: str) -> str:
    return f"{prefix}-{instance}-models"


def model_labels(instance: str, model_id: int) -> dict[str, str]:
    """The labels every object of a model carries; also the Deployment's pod selector."""
    return {MANAGED: "true", INSTANCE: instance, MODEL_ID: str(model_id)}


def selector(instance: str, model_id: int | None = None) -> str:
    """A label selector for this service's pods (of one model, if given)."""
    terms = [f"{MANAGED}=true", f"{INSTANCE}={instance}"]
    if model_id is not None:
        terms.append(f"{MODEL_ID}={model_id}")
    return ",".join(terms)


def cpu_quantity(nano_cpus: int) -> str:
    """Nano-CPUs as a Kubernetes CPU quantity in millicores (at least 1m)."""
    return f"{max(1, round(nano_cpus / 1_000_000))}m"


def run_as(model_user: str) -> tuple[int | None, int | None]:
    """MODEL_USER as numeric uid and gid; Kubernetes cannot run as a user name (None for those)."""
    user, _, group = model_user.partition(":")
    uid = int(user) if user.isdigit() else None
    gid = int(group) if group.isdigit() else None
    return uid, gid


def make_pod_template(
    spec: InstanceSpec,
    instance: str,
    pull_policy: str,
    stop_timeout: int,
    model_user: str = "",
) -> client.V1PodTemplateSpec:
    """The pod of one model: its image, port, env and nothing else, locked down, probed on health_path."""
    resources = {"memory": str(spec.memory_bytes), "cpu": cpu_quantity(spec.nano_cpus)}
    uid, gid = run_as(model_user)
    volumes, mounts = None, None
    if spec.read_only:
        volumes = [
            client.V1Volume(name="tmp", empty_dir=client.V1EmptyDirVolumeSource(medium="Memory", size_limit=TMP_SIZE))
        ]
        mounts = [client.V1VolumeMount(name="tmp", mount_path="/tmp")]
    container = client.V1Container(
        name=CONTAINER,
        image=spec.image,
        image_pull_policy=pull_policy,
        ports=[client.V1ContainerPort(name="http", container_port=spec.port, protocol="TCP")],
        env=[client.V1EnvVar(name=k, value=v) for k, v in sorted(spec.env.items())],
        resources=client.V1ResourceRequirements(requests=dict(resources), limits=dict(resources)),
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path=spec.health_path, port=spec.port),
            period_seconds=PROBE_PERIOD_SECONDS,
            timeout_seconds=1,
            success_threshold=1,
            failure_threshold=3,
        ),
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            privileged=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
            read_only_root_filesystem=spec.read_only,
            run_as_non_root=True if uid not in (None, 0) else None,
        ),
        termination_message_policy="FallbackToLogsOnError",  # a crash's last lines land in its status too
        volume_mounts=mounts,
    )
    labels = model_labels(instance, spec.model_id)
    annotations = {VERSION: spec.version, OWNER: spec.user_id}
    pod_spec = client.V1PodSpec(
        containers=[container],
        restart_policy="Always",
        termination_grace_period_seconds=stop_timeout,
        automount_service_account_token=False,  # a model has no business with the Kubernetes API
        enable_service_links=False,  # no environment variables for every Service in the namespace
        security_context=client.V1PodSecurityContext(
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
            run_as_user=uid,
            run_as_group=gid,
        ),
        volumes=volumes,
    )
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels, annotations=annotations), spec=pod_spec
    )
    template.metadata.annotations[TEMPLATE_HASH] = template_hash(template)
    return template


def template_hash(template: client.V1PodTemplateSpec) -> str:
    """A digest of a pod template as built here (without its own hash annotation)."""
    data = client.ApiClient().sanitize_for_serialization(template)
    data.get("metadata", {}).get("annotations", {}).pop(TEMPLATE_HASH, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def make_deployment(name: str, template: client.V1PodTemplateSpec, replicas: int = 0) -> client.V1Deployment:
    """A model's Deployment; created at zero replicas, then scaled one claimed pod at a time."""
    labels = dict(template.metadata.labels)
    return client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=client.V1ObjectMeta(
            name=name,
            labels=labels,
            annotations={TEMPLATE_HASH: template.metadata.annotations[TEMPLATE_HASH]},
        ),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=template,
            strategy=client.V1DeploymentStrategy(type="Recreate"),  # a new version never mixes with the old
            revision_history_limit=2,
        ),
    )


def template_patch(template: client.V1PodTemplateSpec) -> dict:
    """The patch that brings a Deployment to a new template, leaving its replicas alone."""
    sanitized = client.ApiClient().sanitize_for_serialization(template)
    return {
        "metadata": {"annotations": {TEMPLATE_HASH: template.metadata.annotations[TEMPLATE_HASH]}},
        "spec": {"template": sanitized},
    }


def make_network_policy(name: str, instance: str) -> client.V1NetworkPolicy:
    """Model pods accept connections only from pods that are not models (the service, probes).

    Enforced only where the cluster's network plugin implements NetworkPolicy (Calico, Cilium,
    ...); a plain bridge network accepts the object and ignores it.
    """
    return client.V1NetworkPolicy(
        api_version="networking.k8s.io/v1",
        kind="NetworkPolicy",
        metadata=client.V1ObjectMeta(name=name, labels={MANAGED: "true", INSTANCE: instance}),
        spec=client.V1NetworkPolicySpec(
            pod_selector=client.V1LabelSelector(match_labels={MANAGED: "true", INSTANCE: instance}),
            policy_types=["Ingress"],
            ingress=[
                client.V1NetworkPolicyIngressRule(
                    _from=[
                        client.V1NetworkPolicyPeer(
                            pod_selector=client.V1LabelSelector(
                                match_expressions=[
                                    client.V1LabelSelectorRequirement(key=MANAGED, operator="DoesNotExist")
                                ]
                            )
                        )
                    ]
                )
            ],
        ),
    )


def claim_patch(replica: int, resource_version: str) -> dict:
    """Label a pod as a replica, only if nobody changed it since it was read (optimistic concurrency)."""
    return {
        "metadata": {
            "resourceVersion": resource_version,
            "labels": {REPLICA: str(replica)},
            "annotations": {DELETION_COST: str(CLAIMED_COST)},
        }
    }


def leaving_patch() -> dict:
    """Mark a pod as the one to remove, should the ReplicaSet have to pick one itself."""
    return {"metadata": {"annotations": {DELETION_COST: str(LEAVING_COST)}}}
