"""Cold start of one model image, side by side: through the service (a client's first /infer of a
stopped model) and through the runtime alone, on Docker and on Kubernetes, and a bare Deployment
scaled 0 -> 1 until its pod is Ready (what `kubectl scale` plus a wait gives).

    KUBECONFIG=$(scripts/kubernetes.sh env | sed -n 's/^KUBECONFIG=//p') \
        .venv/bin/python scripts/kubernetes/measure-cold-start.py [IMAGE] [ROUNDS]

The image must be on the Docker engine and imported into the cluster (scripts/kubernetes.sh
import IMAGE); it must answer GET /health on port 8080 (inference-test/echo:1 does).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from kubernetes import client, config, watch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the checkout

from inference_app.config import Settings  # noqa: E402
from inference_app.runtime import InstanceSpec, make_runtime  # noqa: E402

IMAGE = sys.argv[1] if len(sys.argv) > 1 else "inference-test/echo:1"
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
KUBECONFIG = os.environ["KUBECONFIG"]
NAMESPACE = "default"
INSTANCE = f"coldstart{os.getpid()}"
SETTLE = 2.0  # seconds after the last pod is gone before the next round


def through_runtime(runtime_name: str) -> list[float]:
    overrides = {
        "database_url": "sqlite://",
        "instance_name": INSTANCE,
        "container_prefix": "bench",
        "stop_timeout_seconds": 1,
    }
    if runtime_name == "kubernetes":
        overrides.update(runtime="kubernetes", kubeconfig=KUBECONFIG, kube_image_pull_policy="Never")
    runtime = make_runtime(Settings().with_overrides(overrides))
    spec = InstanceSpec(model_id=1, user_id="bench", version="1", image=IMAGE, port=8080, memory_bytes=64 * 2**20)
    times = []
    for _ in range(ROUNDS):
        began = time.monotonic()
        instance = runtime.start(spec)
        runtime.wait_ready(instance, "/health", began + 60)
        times.append(time.monotonic() - began)
        runtime.remove_model(1, timeout=0)
        if runtime_name == "kubernetes":
            no_pods_left(f"inference-service.io/instance={INSTANCE}")
    if runtime_name == "kubernetes":
        api = config.new_client_from_config(config_file=KUBECONFIG)
        selector = f"inference-service.io/instance={INSTANCE}"
        client.AppsV1Api(api).delete_collection_namespaced_deployment(NAMESPACE, label_selector=selector)
        client.NetworkingV1Api(api).delete_collection_namespaced_network_policy(NAMESPACE, label_selector=selector)
    return times


def through_service(runtime_name: str) -> list[float]:
    """The time a client waits for a cold model's first answer (POST /infer), the service in-process."""
    import tempfile

    from flask_migrate import upgrade

    from inference_app import create_app
    from inference_app.services.context import context
    from inference_app.services.registry import register_model

    folder = tempfile.mkdtemp()
    overrides = {
        "database_url": f"sqlite:///{folder}/measure.db",
        "instance_name": f"{INSTANCE}s",
        "container_prefix": "bench",
        "stop_timeout_seconds": 1,
        "auth_disabled": True,
        "run_background": "worker",
        "TESTING": True,
    }
    if runtime_name == "kubernetes":
        overrides.update(runtime="kubernetes", kubeconfig=KUBECONFIG, kube_image_pull_policy="Never")
    app = create_app(overrides)
    with app.app_context():
        upgrade()
        model, _ = register_model(
            {"user_id": "bench", "model_name": "echo", "image": IMAGE, "memory": "64m"}, context().settings
        )
        model_id = model.id
    web = app.test_client()
    times = []
    for _ in range(ROUNDS):
        began = time.monotonic()
        answer = web.post(f"/api/models/{model_id}/infer", json={"x": 1})
        times.append(time.monotonic() - began)
        assert answer.status_code == 200 and answer.headers["X-Cold-Start"] == "true", answer.get_json()
        assert web.post(f"/api/models/{model_id}/stop").status_code == 200
        if runtime_name == "kubernetes":
            no_pods_left(f"inference-service.io/instance={INSTANCE}s")
    app.extensions["inference"].close()
    if runtime_name == "kubernetes":
        api = config.new_client_from_config(config_file=KUBECONFIG)
        selector = f"inference-service.io/instance={INSTANCE}s"
        client.AppsV1Api(api).delete_collection_namespaced_deployment(NAMESPACE, label_selector=selector)
        client.NetworkingV1Api(api).delete_collection_namespaced_network_policy(NAMESPACE, label_selector=selector)
    return times


def no_pods_left(selector: str) -> None:
    """Between rounds, for every way alike: the stopped pod is gone and the kubelet has a moment
    to tear it down, as when a model stopped minutes ago (a start is never measured against the
    kubelet still removing the last pod)."""
    core = client.CoreV1Api(config.new_client_from_config(config_file=KUBECONFIG))
    while core.list_namespaced_pod(NAMESPACE, label_selector=selector).items:
        time.sleep(0.2)
    time.sleep(SETTLE)


def bare_scale() -> list[float]:
    api = config.new_client_from_config(config_file=KUBECONFIG)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    name, labels = f"bare-{INSTANCE}", {"app": f"bare-{INSTANCE}"}
    container = client.V1Container(
        name="model",
        image=IMAGE,
        image_pull_policy="Never",
        readiness_probe=client.V1Probe(http_get=client.V1HTTPGetAction(path="/health", port=8080), period_seconds=1),
    )
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels),
        spec=client.V1PodSpec(containers=[container], termination_grace_period_seconds=0),
    )
    spec = client.V1DeploymentSpec(replicas=0, selector=client.V1LabelSelector(match_labels=labels), template=template)
    apps.create_namespaced_deployment(
        NAMESPACE, client.V1Deployment(metadata=client.V1ObjectMeta(name=name), spec=spec)
    )
    selector = f"app={name}"
    times = []
    try:
        for _ in range(ROUNDS):
            began = time.monotonic()
            apps.patch_namespaced_deployment_scale(name, NAMESPACE, {"spec": {"replicas": 1}})
            for event in watch.Watch().stream(
                core.list_namespaced_pod, NAMESPACE, label_selector=selector, timeout_seconds=60
            ):
                conditions = event["object"].status.conditions or []
                if any(c.type == "Ready" and c.status == "True" for c in conditions):
                    break
            times.append(time.monotonic() - began)
            apps.patch_namespaced_deployment_scale(name, NAMESPACE, {"spec": {"replicas": 0}})
            no_pods_left(selector)
    finally:
        apps.delete_namespaced_deployment(name, NAMESPACE)
    return times


def show(label: str, times: list[float]) -> None:
    ms = sorted(t * 1000 for t in times)
    print(
        f"{label:<34} median {statistics.median(ms):6.0f} ms   min {ms[0]:6.0f}   max {ms[-1]:6.0f}   ({len(ms)} rounds)"
    )


if __name__ == "__main__":
    print(f"cold start of {IMAGE} to its health path answering, {ROUNDS} rounds each")
    show("service on Docker (first /infer)", through_service("docker"))
    show("service on Kubernetes (first /infer)", through_service("kubernetes"))
    show("Docker runtime (start+wait_ready)", through_runtime("docker"))
    show("Kubernetes runtime (start+wait)", through_runtime("kubernetes"))
    show("bare Deployment scale 0->1, Ready", bare_scale())
