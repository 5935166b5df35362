"""The Kubernetes objects and status readings, checked without a cluster (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kubernetes import client

from inference_app.config import ConfigError, Settings
from inference_app.runtime import InstanceSpec, make_runtime
from inference_app.runtime import kube_objects as objects
from inference_app.runtime import kube_status as status

SPEC = InstanceSpec(
    model_id=7,
    user_id="alice@example.com",  # not a valid label value: owners and versions are annotations
    version="1.0+build.3",
    image="inference-test/echo:1",
    port=8080,
    env={"B": "2", "A": "1"},
    memory_bytes=64 * 1024 * 1024,
    nano_cpus=500_000_000,
    health_path="/ready",
)


def template(spec: InstanceSpec = SPEC, **kw) -> client.V1PodTemplateSpec:
    return objects.make_pod_template(spec, "prod", kw.pop("pull", "IfNotPresent"), 5, **kw)


def test_deployment_is_named_and_labelled_for_the_model():
    deployment = objects.make_deployment(objects.deployment_name("inference", "prod", 7), template())
    assert deployment.metadata.name == "inference-prod-model-7"
    labels = {objects.MANAGED: "true", objects.INSTANCE: "prod", objects.MODEL_ID: "7"}
    assert deployment.spec.selector.match_labels == labels
    assert deployment.spec.template.metadata.labels == labels
    assert deployment.spec.replicas == 0
    assert deployment.spec.strategy.type == "Recreate"
    annotations = deployment.spec.template.metadata.annotations
    assert annotations[objects.OWNER] == "alice@example.com" and annotations[objects.VERSION] == "1.0+build.3"
    assert deployment.metadata.annotations[objects.TEMPLATE_HASH] == annotations[objects.TEMPLATE_HASH]
    assert objects.selector("prod", 7) == ",".join(f"{k}={v}" for k, v in labels.items())


def test_pod_runs_the_image_with_its_env_and_nothing_else():
    pod = template().spec
    [container] = pod.containers
    assert container.image == "inference-test/echo:1" and container.image_pull_policy == "IfNotPresent"
    assert [(e.name, e.value) for e in container.env] == [("A", "1"), ("B", "2")]
    assert [(p.container_port, p.protocol) for p in container.ports] == [(8080, "TCP")]
    assert pod.enable_service_links is False  # no variables for every Service in the namespace
    assert pod.automount_service_account_token is False
    assert container.command is None and container.args is None
    assert template(pull="Never").spec.containers[0].image_pull_policy == "Never"


def test_memory_and_cpus_are_requests_and_limits():
    [container] = template().spec.containers
    assert container.resources.requests == {"memory": str(64 * 1024 * 1024), "cpu": "500m"}
    assert container.resources.limits == container.resources.requests  # Guaranteed QoS
    assert objects.cpu_quantity(1_000_000_000) == "1000m"
    assert objects.cpu_quantity(1) == "1m"


def test_pod_is_locked_down():
    pod = template().spec
    [container] = pod.containers
    assert pod.security_context.seccomp_profile.type == "RuntimeDefault"
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.privileged is False
    assert container.security_context.capabilities.drop == ["ALL"]
    assert container.security_context.read_only_root_filesystem is False
    assert pod.volumes is None


def test_read_only_root_gets_a_small_writable_tmp():
    import dataclasses

    pod = template(dataclasses.replace(SPEC, read_only=True)).spec
    [container] = pod.containers
    assert container.security_context.read_only_root_filesystem is True
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("tmp", "/tmp")]
    assert pod.volumes[0].empty_dir.size_limit == objects.TMP_SIZE


def test_numeric_model_user_runs_as_non_root():
    pod = template(model_user="65534:65534").spec
    assert (pod.security_context.run_as_user, pod.security_context.run_as_group) == (65534, 65534)
    assert pod.containers[0].security_context.run_as_non_root is True
    named = template(model_user="nobody").spec  # Kubernetes needs numbers: the image's user then
    assert named.security_context.run_as_user is None and named.containers[0].security_context.run_as_non_root is None


def test_readiness_probe_is_the_models_health_path():
    probe = template().spec.containers[0].readiness_probe
    assert (probe.http_get.path, probe.http_get.port) == ("/ready", 8080)
    assert probe.period_seconds == 1


def test_template_hash_follows_the_template():
    import dataclasses

    first = template().metadata.annotations[objects.TEMPLATE_HASH]
    assert template().metadata.annotations[objects.TEMPLATE_HASH] == first
    for change in ({"image": "inference-test/echo:2"}, {"env": {"A": "3"}}, {"memory_bytes": 1}, {"version": "2"}):
        assert template(dataclasses.replace(SPEC, **change)).metadata.annotations[objects.TEMPLATE_HASH] != first
    other_replica = dataclasses.replace(SPEC, replica=3)  # replicas share one template
    assert template(other_replica).metadata.annotations[objects.TEMPLATE_HASH] == first
    patch = objects.template_patch(template())
    assert "replicas" not in patch["spec"] and patch["metadata"]["annotations"][objects.TEMPLATE_HASH] == first


def test_network_policy_admits_only_pods_that_are_not_models():
    policy = objects.make_network_policy(objects.network_policy_name("inference", "prod"), "prod")
    assert policy.metadata.name == "inference-prod-models"
    assert policy.spec.pod_selector.match_labels == {objects.MANAGED: "true", objects.INSTANCE: "prod"}
    assert policy.spec.policy_types == ["Ingress"]
    [rule] = policy.spec.ingress
    [peer] = rule._from
    [requirement] = peer.pod_selector.match_expressions
    assert (requirement.key, requirement.operator) == (objects.MANAGED, "DoesNotExist")
    assert peer.namespace_selector is None  # only this namespace's pods


def test_claim_is_conditional_and_protects_the_replica():
    patch = objects.claim_patch(2, "123")
    assert patch["metadata"]["resourceVersion"] == "123"
    assert patch["metadata"]["labels"] == {objects.REPLICA: "2"}
    assert int(patch["metadata"]["annotations"][objects.DELETION_COST]) > 0
    assert int(objects.leaving_patch()["metadata"]["annotations"][objects.DELETION_COST]) < 0


# -- reading pod status ---------------------------------------------------------------------------


def pod(
    phase: str = "Pending",
    state: client.V1ContainerState | None = None,
    last: client.V1ContainerState | None = None,
    conditions: list[client.V1PodCondition] | None = None,
    labels: dict | None = None,
    owner: str | None = "inference-prod-model-7-5d9f8c7b6",
    deleting: bool = False,
    reason: str | None = None,
    restarts: int = 0,
) -> client.V1Pod:
    statuses = None
    if state is not None:
        statuses = [
            client.V1ContainerStatus(
                name=objects.CONTAINER,
                image="inference-test/echo:1",
                image_id="",
                ready=False,
                restart_count=restarts,
                state=state,
                last_state=last,
            )
        ]
    owners = None
    if owner:
        owners = [
            client.V1OwnerReference(api_version="apps/v1", kind="ReplicaSet", name=owner, uid="u", controller=True)
        ]
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name="p",
            labels=labels or {},
            owner_references=owners,
            deletion_timestamp=datetime.now(UTC) if deleting else None,
        ),
        spec=template().spec,
        status=client.V1PodStatus(phase=phase, conditions=conditions, container_statuses=statuses, reason=reason),
    )


def waiting(reason: str, message: str = "") -> client.V1ContainerState:
    return client.V1ContainerState(waiting=client.V1ContainerStateWaiting(reason=reason, message=message))


def terminated(code: int) -> client.V1ContainerState:
    return client.V1ContainerState(terminated=client.V1ContainerStateTerminated(exit_code=code))


RUNNING = client.V1ContainerState(running=client.V1ContainerStateRunning())


def test_phases_in_the_runtimes_words():
    assert status.phase(pod()) == ("created", None)
    assert status.phase(pod(state=waiting("ContainerCreating"))) == ("created", None)
    assert status.phase(pod("Running", RUNNING)) == ("running", None)
    assert status.phase(pod("Running", terminated(3))) == ("exited", 3)
    crash_loop = pod("Running", waiting("CrashLoopBackOff"), last=terminated(3), restarts=1)
    assert status.phase(crash_loop) == ("exited", 3)
    assert status.phase(pod("Failed", reason="Evicted")) == ("exited", None)
    assert status.phase(pod("Running", RUNNING, deleting=True)) == ("dead", None)
    assert status.phase(pod("Unknown")) == ("dead", None)


def test_ready_is_the_pods_ready_condition():
    ready = [client.V1PodCondition(type="Ready", status="True")]
    assert status.ready(pod("Running", RUNNING, conditions=ready))
    assert not status.ready(pod("Running", RUNNING, conditions=[client.V1PodCondition(type="Ready", status="False")]))
    assert not status.ready(pod("Running", RUNNING, conditions=ready, deleting=True))


@pytest.mark.parametrize(
    "reason, kind",
    [
        ("ErrImageNeverPull", "image"),
        ("ImagePullBackOff", "image"),
        ("ErrImagePull", "image"),
        ("InvalidImageName", "image"),
        ("CreateContainerConfigError", "config"),
        ("ContainerCreating", None),
        ("CrashLoopBackOff", None),  # a crash is the phase "exited", with its log
    ],
)
def test_waiting_reasons_are_named(reason, kind):
    found = status.problem(pod(state=waiting(reason, "details")))
    assert (found.kind if found else None) == kind
    if found:
        assert found.message == f"{reason}: details"


def test_unschedulable_carries_the_schedulers_message():
    message = "0/1 nodes are available: 1 Insufficient memory."
    since = datetime(2026, 1, 1, tzinfo=UTC)
    condition = client.V1PodCondition(
        type="PodScheduled", status="False", reason="Unschedulable", message=message, last_transition_time=since
    )
    assert status.problem(pod(conditions=[condition])) == status.Problem("unschedulable", message, since)
    assert status.problem(pod("Failed", reason="Evicted")).kind == "failed"


def test_replicas_and_ownership():
    assert status.replica_of(pod(labels={objects.REPLICA: "2"})) == 2
    assert status.replica_of(pod()) == -1
    assert status.owned_by(pod(), "inference-prod-model-7")
    assert not status.owned_by(pod(), "inference-prod-model-70")
    assert not status.owned_by(pod(owner=None), "inference-prod-model-7")


def test_replica_failure_is_the_replica_sets_message():
    quota = 'pods "x" is forbidden: exceeded quota: q, requested: requests.memory=64Mi'
    refused = client.V1ReplicaSet(
        status=client.V1ReplicaSetStatus(
            replicas=0,
            conditions=[client.V1ReplicaSetCondition(type="ReplicaFailure", status="True", message=quota)],
        )
    )
    assert status.replica_failure([client.V1ReplicaSet(status=client.V1ReplicaSetStatus(replicas=1)), refused]) == quota
    assert status.replica_failure([]) is None


# -- settings -------------------------------------------------------------------------------------


def test_runtime_setting_chooses_the_runtime():
    base = {"DATABASE_URL": "sqlite://"}
    assert make_runtime(Settings.from_env(base)).name == "docker"
    chosen = Settings.from_env({**base, "RUNTIME": "Kubernetes", "KUBE_IMAGE_PULL_POLICY": "never"})
    assert chosen.kube_image_pull_policy == "Never"
    assert make_runtime(chosen).name == "kubernetes"  # no connection until first used


@pytest.mark.parametrize(
    "env, named",
    [
        ({"RUNTIME": "nomad"}, "RUNTIME"),
        ({"RUNTIME": "kubernetes", "INSTANCE_NAME": "Prod_1"}, "INSTANCE_NAME"),
        ({"RUNTIME": "kubernetes", "KUBE_NAMESPACE": "-x"}, "KUBE_NAMESPACE"),
        ({"RUNTIME": "kubernetes", "INSTANCE_NAME": "x" * 40}, "INSTANCE_NAME"),
        ({"KUBE_IMAGE_PULL_POLICY": "sometimes"}, "KUBE_IMAGE_PULL_POLICY"),
    ],
)
def test_bad_kubernetes_settings_are_named(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env({"DATABASE_URL": "sqlite://", **env})


def test_instance_is_addressed_only_once_claimed():
    ready = [client.V1PodCondition(type="Ready", status="True")]
    claimed = pod("Running", RUNNING, conditions=ready, labels={objects.MODEL_ID: "7", objects.REPLICA: "0"})
    claimed.status.pod_ip = "10.244.0.9"
    claimed.spec.node_name = "node-a"
    claimed.metadata.annotations = template().metadata.annotations  # a pod carries its template's
    found = status.instance(claimed, lambda model_id: f"inference-prod-model-{model_id}")
    assert (found.model_id, found.replica, found.phase, found.node) == (7, 0, "running", "node-a")
    assert (found.endpoint.host, found.endpoint.port, found.endpoint.instance_id) == ("10.244.0.9", 8080, "p")
    assert (found.limits.memory_bytes, found.limits.cpus, found.limits.pids_limit) == (64 * 1024 * 1024, 0.5, None)
    assert found.version == "1.0+build.3"

    spare = pod("Running", RUNNING, conditions=ready, labels={objects.MODEL_ID: "7"})  # the ReplicaSet's own
    spare.status.pod_ip = "10.244.0.10"
    unclaimed = status.instance(spare, lambda model_id: f"inference-prod-model-{model_id}")
    assert unclaimed.replica == -1 and unclaimed.model_id == 7 and unclaimed.endpoint is None

    stray = status.instance(
        pod("Running", RUNNING, labels={objects.MODEL_ID: "7", objects.REPLICA: "0"}, owner=None), lambda m: "x"
    )
    assert stray.model_id is None


def test_claimable_pods_are_unclaimed_current_and_readiest_first():
    current = template().metadata.annotations[objects.TEMPLATE_HASH]

    def candidate(name, phase="Pending", state=None, labels=None, annotations=True, deleting=False, ready=False):
        found = pod(phase, state, labels=labels, deleting=deleting)
        found.metadata.name = name
        found.metadata.annotations = {objects.TEMPLATE_HASH: current} if annotations else {}
        if ready:
            found.status.conditions = [client.V1PodCondition(type="Ready", status="True")]
        return found

    pods = [
        candidate("pending"),
        candidate("ready", "Running", RUNNING, ready=True),
        candidate("claimed", "Running", RUNNING, labels={objects.REPLICA: "1"}),
        candidate("old-template", "Running", RUNNING, annotations=False),
        candidate("going", "Running", RUNNING, deleting=True),
    ]
    picked = status.claimable(pods, "inference-prod-model-7", current)
    assert [p.metadata.name for p in picked] == ["ready", "pending"]
    assert status.probe_path(pods[0]) == "/ready"
