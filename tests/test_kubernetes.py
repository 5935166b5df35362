"""The Kubernetes runtime on the real one-node cluster: replicas as pods, and every failure named.

The behaviour every runtime shares is in tests/test_runtime.py; here is what only Kubernetes
has: a Deployment scaled per claimed pod, removal of exactly one pod, the scheduler, quotas,
image pulls, crash loops, and an API server that does not answer. A few go through the service
(RUNTIME=kubernetes) to check the status codes a client sees.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time

import pytest
import yaml
from conftest import CRASH, ECHO, INSTANCE, NEVER_HEALTHY, built_app
from kubernetes import client as k8s
from kubernetes_support import NAMESPACE, admin, delete_objects, eventually, kube_settings, require_cluster

from inference_app.config import Settings
from inference_app.errors import ContainerFailed, EngineUnavailable, ImageMissing, NoCapacity
from inference_app.runtime import InstanceSpec, make_runtime
from inference_app.runtime import kube_objects as objects
from inference_app.runtime.kubernetes import KubernetesRuntime

MODEL = 9_200
TIB = 1024**4


def make(instance: str = f"{INSTANCE}k", **overrides) -> KubernetesRuntime:
    require_cluster()
    settings = Settings().with_overrides(
        {
            "database_url": "sqlite://",
            "container_prefix": "itest",
            "instance_name": instance,
            "start_timeout_seconds": 30.0,
            "stop_timeout_seconds": 1,
            **kube_settings(**overrides),
        }
    )
    made = make_runtime(settings)
    assert isinstance(made, KubernetesRuntime)
    return made


pytestmark = pytest.mark.usefixtures("kube_cluster")


@pytest.fixture
def runtime():
    made = make()
    yield made
    delete_objects(made.settings.instance_name)


def spec(image: str = ECHO, replica: int = 0, **extra) -> InstanceSpec:
    fields = {"user_id": "alice", "version": "1", "port": 8080, "memory_bytes": 64 * 2**20, "nano_cpus": 10**8, **extra}
    return InstanceSpec(model_id=MODEL, image=image, replica=replica, **fields)


def replicas(runtime: KubernetesRuntime) -> int:
    scale = k8s.AppsV1Api(admin()).read_namespaced_deployment_scale(runtime.deployment_for(MODEL), NAMESPACE)
    return scale.spec.replicas or 0  # zero is left out of the answer


def deadline(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


# -- the Deployment and its pods ------------------------------------------------------------------


def test_each_replica_is_a_pod_of_one_deployment(runtime):
    started = [runtime.start(spec(replica=r)) for r in (0, 1, 2)]
    assert replicas(runtime) == 3
    [deployment] = (
        k8s.AppsV1Api(admin())
        .list_namespaced_deployment(NAMESPACE, label_selector=objects.selector(runtime.settings.instance_name))
        .items
    )
    assert deployment.metadata.name == runtime.deployment_for(MODEL)
    pods = {
        p.metadata.name: p
        for p in k8s.CoreV1Api(admin())
        .list_namespaced_pod(NAMESPACE, label_selector=objects.selector(runtime.settings.instance_name, MODEL))
        .items
    }
    assert sorted(pods) == sorted(i.instance_id for i in started)
    assert sorted(p.metadata.labels[objects.REPLICA] for p in pods.values()) == ["0", "1", "2"]
    pod = next(iter(pods.values()))
    assert pod.spec.containers[0].security_context.capabilities.drop == ["ALL"]
    assert pod.spec.automount_service_account_token is False


def test_remove_takes_exactly_that_pod_and_scales_down(runtime):
    first, second, third = (runtime.start(spec(replica=r)) for r in (0, 1, 2))
    for instance in (first, second, third):
        runtime.wait_ready(instance, "/health", deadline())
    assert runtime.remove(second.instance_id) is True
    assert replicas(runtime) == 2
    left = runtime.list_managed(MODEL)
    assert [(i.instance_id, i.replica) for i in left] == [(first.instance_id, 0), (third.instance_id, 2)]
    assert all(i.running for i in left)
    assert runtime.remove_model(MODEL) == 2
    assert replicas(runtime) == 0 and runtime.list_managed(MODEL) == []


def test_a_restarted_service_finds_its_pods_by_label(runtime):
    instance = runtime.start(spec(version="7"))
    endpoint = runtime.wait_ready(instance, "/health", deadline())
    again = make()  # a new process: nothing in memory
    [found] = again.list_managed()
    assert (found.instance_id, found.model_id, found.replica, found.version) == (instance.instance_id, MODEL, 0, "7")
    assert found.endpoint == endpoint
    assert found.node == "inference-node"  # the test cluster's one node


def test_pod_deleted_outside_is_gone_and_its_replacement_is_claimed_on_the_next_start(runtime):
    instance = runtime.start(spec())
    runtime.wait_ready(instance, "/health", deadline())
    k8s.CoreV1Api(admin()).delete_namespaced_pod(instance.instance_id, NAMESPACE, grace_period_seconds=0)
    eventually(lambda: runtime.inspect(instance.instance_id) is None, what="the deleted pod to be gone")
    # the ReplicaSet made a replacement nobody claimed: it is listed without a replica
    [spare] = eventually(lambda: runtime.list_managed(MODEL), what="the ReplicaSet's replacement pod")
    assert spare.replica == -1 and spare.model_id == MODEL
    restarted = runtime.start(spec())
    assert restarted.instance_id == spare.instance_id and replicas(runtime) == 1
    assert runtime.list_managed(MODEL)[0].replica == 0


def test_a_foreign_pod_with_our_labels_is_a_stray(runtime):
    labels = objects.model_labels(runtime.settings.instance_name, MODEL)
    foreign = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=f"{runtime.deployment_for(MODEL)}-impostor", labels=labels),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="model", image=ECHO, image_pull_policy="Never")]),
    )
    k8s.CoreV1Api(admin()).create_namespaced_pod(NAMESPACE, foreign)
    [listed] = runtime.list_managed()
    assert listed.instance_id == foreign.metadata.name and listed.model_id is None


# -- failures, named ------------------------------------------------------------------------------


def test_no_node_with_room_is_no_capacity_with_the_schedulers_message(runtime):
    with pytest.raises(NoCapacity) as raised:
        runtime.start(spec(memory_bytes=TIB))
    assert "Insufficient memory" in raised.value.message
    assert raised.value.status == 503 and raised.value.retry_after >= 1
    assert runtime.list_managed(MODEL) == [] and replicas(runtime) == 0


def test_image_that_cannot_be_pulled_is_named():
    runtime = make(kube_image_pull_policy="IfNotPresent")  # the kubelet tries a registry it cannot reach
    try:
        with pytest.raises(ImageMissing) as raised:
            runtime.start(spec(image="inference-test/not-imported:1"))
        assert "inference-test/not-imported:1" in raised.value.message
        assert "ErrImagePull" in raised.value.message or "ImagePullBackOff" in raised.value.message
        assert runtime.list_managed(MODEL) == [] and replicas(runtime) == 0
    finally:
        delete_objects(runtime.settings.instance_name)


def test_crash_loop_reports_the_last_run_from_the_pod_log(runtime):
    instance = runtime.start(spec(image=CRASH))
    core = k8s.CoreV1Api(admin())

    def backing_off():
        pod = core.read_namespaced_pod(instance.instance_id, NAMESPACE)
        statuses = pod.status.container_statuses or []
        return any(s.state.waiting and s.state.waiting.reason == "CrashLoopBackOff" for s in statuses)

    eventually(backing_off, what="CrashLoopBackOff")
    with pytest.raises(ContainerFailed) as raised:
        runtime.wait_ready(instance, "/health", deadline())
    assert "exited with code 3" in raised.value.message
    assert "fatal: model weights missing at /models/w.bin" in raised.value.message
    assert raised.value.details["exit_code"] == 3


def test_quota_refusal_is_no_capacity_with_the_quotas_message():
    namespace = f"{INSTANCE}-quota"
    core = k8s.CoreV1Api(admin())
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    try:
        quota = k8s.V1ResourceQuota(
            metadata=k8s.V1ObjectMeta(name="models"), spec=k8s.V1ResourceQuotaSpec(hard={"requests.memory": "32Mi"})
        )
        core.create_namespaced_resource_quota(namespace, quota)
        runtime = make(kube_namespace=namespace)
        with pytest.raises(NoCapacity) as raised:
            runtime.start(spec())
        assert "exceeded quota: models" in raised.value.message
        assert raised.value.status == 503 and raised.value.retry_after >= 1
        scale = k8s.AppsV1Api(admin()).read_namespaced_deployment_scale(runtime.deployment_for(MODEL), namespace)
        assert not scale.spec.replicas  # zero is left out of the answer
    finally:
        core.delete_namespace(namespace)


def test_unreachable_api_is_engine_unavailable(tmp_path):
    with open(require_cluster()) as f:
        kubeconfig = yaml.safe_load(f)
    kubeconfig["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # nothing listens there
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    runtime = make(kubeconfig=str(path))
    with pytest.raises(EngineUnavailable) as raised:
        runtime.ping()
    assert "Kubernetes API unreachable" in raised.value.message and raised.value.status == 503
    with pytest.raises(EngineUnavailable):
        runtime.start(spec())
    with pytest.raises(EngineUnavailable, match="unusable"):
        make(kubeconfig=str(tmp_path / "missing")).ping()


# -- through the service --------------------------------------------------------------------------


def infer(client, model_id, payload=None):
    return client.post(f"/api/models/{model_id}/infer", data=json.dumps(payload or {}), content_type="application/json")


@pytest.fixture
def cluster_app_objects():
    yield
    delete_objects(INSTANCE)


@pytest.mark.settings(**kube_settings())
def test_cold_start_infer_and_stop_through_the_service(client, register, cluster_app_objects):
    model = register(env={"MODEL_LABEL": "on-kubernetes"})
    first = infer(client, model["id"], {"x": 1})
    assert first.status_code == 200, first.get_json()
    assert first.headers["X-Cold-Start"] == "true"
    assert first.get_json() == {"echo": {"x": 1}, "model": "on-kubernetes"}
    shown = client.get(f"/api/models/{model['id']}").get_json()
    assert shown["status"] == "running"
    assert infer(client, model["id"], {"x": 2}).headers["X-Cold-Start"] == "false"
    assert client.post(f"/api/models/{model['id']}/stop").get_json()["status"] == "stopped"
    pods = k8s.CoreV1Api(admin()).list_namespaced_pod(NAMESPACE, label_selector=objects.selector(INSTANCE, model["id"]))
    assert pods.items == []


@pytest.mark.settings(**kube_settings(), max_cpus=64.0)
def test_no_room_is_503_with_retry_after_through_the_service(client, register, cluster_app_objects):
    model = register(cpus=64)  # the node has far fewer
    response = infer(client, model["id"])
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    error = response.get_json()["error"]
    assert error["code"] == "no_capacity" and "Insufficient cpu" in error["message"]


@pytest.mark.settings(**kube_settings())
def test_missing_image_is_502_naming_it_through_the_service(client, register, cluster_app_objects):
    model = register(image="inference-test/not-imported:1")
    response = infer(client, model["id"])
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "image_not_found" and "inference-test/not-imported:1" in error["message"]


@pytest.mark.settings(**kube_settings(), start_timeout_seconds=2.0)
def test_never_healthy_is_504_through_the_service(client, register, cluster_app_objects):
    model = register(image=NEVER_HEALTHY)
    response = infer(client, model["id"])
    assert response.status_code == 504
    assert "503" in response.get_json()["error"]["message"]


@pytest.mark.settings(**kube_settings(kubeconfig="/nonexistent/kubeconfig"))
def test_readyz_says_the_kubernetes_api_is_unusable(client):
    response = client.get("/readyz")
    assert response.status_code == 503
    reason = json.dumps(response.get_json()["checks"])
    assert "Kubernetes configuration" in reason


def kubeconfig_for(server: str, tmp_path) -> str:
    """The test cluster's admin kubeconfig, pointed at another API server address."""
    with open(require_cluster()) as f:
        kubeconfig = yaml.safe_load(f)
    kubeconfig["clusters"][0]["cluster"]["server"] = server
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    return str(path)


def _silent_api_server() -> socket.socket:
    """A TLS server with the test cluster's API server certificate that never answers a request
    (a hung API server): the handshake passes, then nothing, until the test closes it."""
    pki = os.path.dirname(require_cluster())  # the admin kubeconfig lives beside the certificates
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(os.path.join(pki, "apiserver.crt"), os.path.join(pki, "apiserver.key"))
    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                held.append(tls.wrap_socket(conn, server_side=True))  # read nothing, answer nothing
            except (OSError, ssl.SSLError):
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_readyz_is_not_held_by_a_silent_api_server(database, docker_client, tmp_path):
    silent = _silent_api_server()
    server = f"https://127.0.0.1:{silent.getsockname()[1]}"
    try:
        with built_app(docker_client, **kube_settings(kubeconfig=kubeconfig_for(server, tmp_path))) as app:
            answers = []
            probe = threading.Thread(target=lambda: answers.append(app.test_client().get("/readyz")), daemon=True)
            probe.start()
            probe.join(timeout=15)  # PING_TIMEOUT bounds it (a try or two of 1 + 2 s); the read timeout is 20 s
            assert answers, "/readyz was still waiting for a silent API server"
            assert answers[0].status_code == 503
            assert "Kubernetes API unreachable" in json.dumps(answers[0].get_json()["checks"])
    finally:
        silent.close()


def test_an_unreachable_api_is_503_and_readyz_says_so_through_the_service(database, docker_client, tmp_path):
    path = kubeconfig_for("https://127.0.0.1:9", tmp_path)  # the API down: nothing listens
    with built_app(docker_client, **kube_settings(kubeconfig=path)) as app:
        client = app.test_client()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "Kubernetes API unreachable" in json.dumps(ready.get_json()["checks"])
        model = client.post("/api/models", json={"user_id": "alice", "model_name": "echo", "image": ECHO}).get_json()
        answer = infer(client, model["id"])
        assert answer.status_code == 503 and answer.get_json()["error"]["code"] == "engine_unavailable"
        assert "Retry-After" in answer.headers
