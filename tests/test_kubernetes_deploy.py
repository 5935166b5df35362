"""The service in the cluster: deploy/kubernetes/ applied to the test cluster, as it is.

The service image is built from the locally made base (scripts/build-service-image.sh) and
imported into the cluster's containerd. The manifests are applied as they are, with the test's
settings in the ConfigMap and Secret and the local image. The service's pods run on the pod
network, two web and two worker replicas, and reach model pods by their pod IPs (the normal
home). The test PostgreSQL listens on this host's loopback only, so a relay on the node address
stands in for a database of their own; the test starts a broker of its own on the node address.
A model registered through Kafka then answers through the in-cluster Service.
"""

from __future__ import annotations

import secrets
import subprocess
import uuid

import pytest
import requests
import yaml
from conftest import ECHO, INSTANCE, PG_URL
from deployment_support import ROOT, Relay, build_service_image
from kafka_support import PrivateBroker, create_topics, fresh_topics, producer, send
from kubernetes import client as k8s
from kubernetes import utils
from kubernetes_support import admin, eventually, node_address, require_cluster
from sqlalchemy import make_url

from inference_app.runtime import kube_objects

MANIFESTS = ROOT / "deploy" / "kubernetes"


def manifests() -> list[dict]:
    """The objects `kubectl apply -k deploy/kubernetes` would apply."""
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    return [doc for name in listed for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc]


@pytest.fixture(scope="module")
def service_image() -> str:
    require_cluster()
    image = build_service_image()
    imported = subprocess.run(
        ["bash", str(ROOT / "scripts" / "kubernetes.sh"), "import", image], capture_output=True, text=True, timeout=900
    )
    if imported.returncode != 0:
        pytest.fail(f"kubernetes.sh import {image} failed:\n{imported.stderr[-4000:]}")
    return image


def adapted(docs: list[dict], image: str, settings: dict[str, str]) -> list[dict]:
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            doc["data"].update(settings)
        if doc["kind"] == "Deployment":
            [container] = doc["spec"]["template"]["spec"]["containers"]
            container["image"] = image
            container["imagePullPolicy"] = "Never"
    return docs


@pytest.fixture
def reachable_from_pods(tmp_path):
    """PostgreSQL through a relay, and a broker of this test's own, both on the node address."""
    require_cluster()
    node = node_address()
    database = make_url(PG_URL)
    relay = Relay.tcp(node, (database.host, database.port))
    broker = PrivateBroker(tmp_path / "kafka", host=node)
    broker.start()
    try:
        yield database.set(host=node, port=relay.port).render_as_string(hide_password=False), broker.bootstrap
    finally:
        broker.stop()
        relay.close()


@pytest.mark.timeout(900)
def test_the_manifests_serve_a_model_registered_through_kafka(app, service_image, reachable_from_pods):
    database_url, bootstrap = reachable_from_pods
    api = admin()
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    namespace = f"{INSTANCE}-deploy"
    topics = fresh_topics(bootstrap)
    create_topics(topics)
    settings = {
        **{name.upper(): value for name, value in topics.items()},
        "INSTANCE_NAME": f"{INSTANCE}d",
        "CONTAINER_PREFIX": "itest",
        "KUBE_IMAGE_PULL_POLICY": "Never",
        "AUTH_DISABLED": "true",
        "DEFAULT_MEMORY": "64m",
        "STOP_TIMEOUT_SECONDS": "1",
        "START_TIMEOUT_SECONDS": "60",
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "8",
    }
    metrics_token = secrets.token_hex(16)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    try:
        core.create_namespaced_secret(
            namespace,
            k8s.V1Secret(
                metadata=k8s.V1ObjectMeta(name="inference-service"),
                string_data={
                    "DATABASE_URL": database_url,
                    "SECRET_KEY": secrets.token_hex(32),
                    "METRICS_TOKEN": metrics_token,  # an optional key; KAFKA_SASL_PASSWORD is left out
                },
            ),
        )
        docs = adapted(manifests(), service_image, settings)
        assert {d["metadata"]["name"]: d["spec"]["replicas"] for d in docs if d["kind"] == "Deployment"} == {
            "inference-web": 2,
            "inference-worker": 2,
        }
        for doc in docs:
            utils.create_from_dict(api, doc, namespace=namespace)

        def available(name: str, want: int):
            found = apps.read_namespaced_deployment(name, namespace).status
            return (found.ready_replicas or 0) >= want

        eventually(lambda: available("inference-web", 2), 240, "both web pods to be Ready")
        eventually(lambda: available("inference-worker", 2), 120, "both worker pods to be Ready")
        web_pods = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/component=web").items
        node = node_address()
        assert [p.spec.host_network for p in web_pods] == [None, None]  # on the pod network
        assert node not in {p.status.pod_ip for p in web_pods}
        service = core.read_namespaced_service("inference-service", namespace)
        base = f"http://{service.spec.cluster_ip}:8002"  # the in-cluster Service, through kube-proxy
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
        assert requests.get(f"{base}/metrics", timeout=5).status_code == 401  # METRICS_TOKEN from the Secret
        scraped = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {metrics_token}"}, timeout=5)
        assert scraped.status_code == 200 and "inference_containers_cap" in scraped.text

        event = {"event_id": f"k8s-{uuid.uuid4().hex[:8]}", "user_id": "deploy", "model_name": "echo", "image": ECHO}
        prod = producer(bootstrap)
        send(prod, topics["kafka_topic_uploaded"], event, key="deploy/echo")
        prod.flush()
        prod.close()
        listed = lambda: requests.get(f"{base}/api/models", timeout=5).json()["items"]  # noqa: E731
        [model] = eventually(listed, 60, "the model registered through Kafka")
        answer = requests.post(f"{base}/api/models/{model['id']}/infer", json={"k": 8}, timeout=90)
        assert answer.status_code == 200, answer.text
        assert answer.json()["echo"] == {"k": 8} and answer.headers["X-Cold-Start"] == "true"

        [pod] = core.list_namespaced_pod(
            namespace, label_selector=kube_objects.selector(f"{INSTANCE}d", model["id"])
        ).items
        assert pod.metadata.labels[kube_objects.REPLICA] == "0"
        assert pod.spec.service_account_name == "default" and pod.spec.automount_service_account_token is False
    finally:
        core.delete_namespace(namespace)
        # the service's four pods hold a CPU request each until they are gone: the tests after
        # this one need the node's room back
        eventually(lambda: not core.list_namespaced_pod(namespace).items, 120, "the deploy namespace's pods to go")


def test_the_role_allows_every_runtime_operation(kube_cluster, tmp_path):
    """The runtime as the manifests' ServiceAccount: start, wait, logs, remove, and the failures it names."""
    import json
    import time

    from conftest import CRASH
    from kubernetes_support import kube_settings

    from inference_app.config import Settings
    from inference_app.errors import ContainerFailed, NoCapacity
    from inference_app.runtime import InstanceSpec, make_runtime

    api = admin()
    core = k8s.CoreV1Api(api)
    namespace = f"{INSTANCE}-rbac"
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    try:
        for doc in yaml.safe_load_all((MANIFESTS / "rbac.yaml").read_text()):
            utils.create_from_dict(api, doc, namespace=namespace)
        token = core.create_namespaced_service_account_token(
            "inference-service", namespace, k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[]))
        ).status.token
        with open(require_cluster()) as f:
            admin_config = yaml.safe_load(f)
        kubeconfig = tmp_path / "service-account"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": admin_config["clusters"],
                    "users": [{"name": "service", "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": "service",
                            "context": {"cluster": admin_config["clusters"][0]["name"], "user": "service"},
                        }
                    ],
                    "current-context": "service",
                }
            )
        )
        settings = {
            "database_url": "sqlite://",
            "container_prefix": "itest",
            "instance_name": f"{INSTANCE}r",
            "stop_timeout_seconds": 1,
            **kube_settings(kubeconfig=str(kubeconfig), kube_namespace=namespace),
        }
        runtime = make_runtime(Settings().with_overrides(settings))
        runtime.ping()

        def spec(image: str = ECHO) -> InstanceSpec:
            return InstanceSpec(
                model_id=1, user_id="u", version="1", image=image, port=8080, memory_bytes=64 * 2**20, nano_cpus=10**8
            )

        instance = runtime.start(spec())
        endpoint = runtime.wait_ready(instance, "/health", time.monotonic() + 30)
        assert requests.get(endpoint.base_url + "/health", timeout=5).status_code == 200
        assert [i.instance_id for i in runtime.list_managed()] == [instance.instance_id]
        assert runtime.remove(instance.instance_id) is True

        crashed = runtime.start(spec(CRASH))
        with pytest.raises(ContainerFailed, match="model weights missing"):  # pods/log
            runtime.wait_ready(crashed, "/health", time.monotonic() + 30)
        assert runtime.remove_model(1, timeout=0) == 1

        quota = k8s.V1ResourceQuota(
            metadata=k8s.V1ObjectMeta(name="q"), spec=k8s.V1ResourceQuotaSpec(hard={"pods": "0"})
        )
        core.create_namespaced_resource_quota(namespace, quota)
        with pytest.raises(NoCapacity, match="exceeded quota"):  # replicasets: list
            runtime.start(spec())
        with pytest.raises(Exception) as refused:  # and nothing beyond the Role: no Secrets
            k8s.CoreV1Api(make_runtime(Settings().with_overrides(settings)).api).list_namespaced_secret(namespace)
        assert getattr(refused.value, "status", None) == 403
    finally:
        core.delete_namespace(namespace)
