"""The service's lifecycle with RUNTIME=kubernetes: what holds on Docker holds on the cluster.

The same lifecycle code runs over the Kubernetes runtime here: one scale-up under a herd, idle
stop, a request in flight never cut, the cap with eviction, reconciliation (adoption, a pod
deleted outside, a stray), and a pod lost under a request retried once.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import requests
from conftest import INSTANCE, IRIS, SLOW, service_env
from kubernetes import client as k8s
from kubernetes_support import NAMESPACE, admin, delete_objects, eventually, kube_settings, require_cluster
from service_process import Processes

from inference_app.extensions import db
from inference_app.jobs.idle import reap_idle
from inference_app.jobs.reconcile import reconcile
from inference_app.models import ServedModel, utcnow
from inference_app.runtime import kube_objects as objects
from inference_app.services.context import context


def on_cluster(**overrides):
    """The app's settings marker: the Kubernetes runtime on the test cluster (a test's own marker replaces this one)."""
    return pytest.mark.settings(**kube_settings(), **{"default_cpus": 0.1, **overrides})


pytestmark = on_cluster()


@pytest.fixture(autouse=True)
def cluster_objects():
    require_cluster()
    yield
    delete_objects(INSTANCE)


def pods(model_id: int) -> list[k8s.V1Pod]:
    found = k8s.CoreV1Api(admin()).list_namespaced_pod(NAMESPACE, label_selector=objects.selector(INSTANCE, model_id))
    return [p for p in found.items if p.metadata.deletion_timestamp is None]


def answers(ip: str, port: int = 8080) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def shown(client, model_id: int) -> dict:
    return client.get(f"/api/models/{model_id}").get_json()


def events(client, model_id: int) -> list[str]:
    return [e["kind"] for e in client.get(f"/api/models/{model_id}/lifecycle-events").get_json()["items"]]


def test_a_herd_across_two_service_replicas_and_their_workers_starts_one_pod(app, register, client, tmp_path):
    """200 first requests split over two gunicorn services of two workers each: one pod, one start."""
    env = service_env(web_concurrency=2, gunicorn_threads=64, default_cpus=0.1, **kube_settings())
    procs = Processes(tmp_path)
    try:
        bases = [procs.web(env, name=f"web{i}").base for i in (1, 2)]
        # the example model: a threaded Python server with keep-alive, as real model servers are
        model = register(model_name="iris", image=IRIS, memory="256m")

        def call(i):
            flower = [5.1, 3.5, 1.4, 0.2] if i % 2 else [6.7, 3.1, 4.7, 1.5]
            url = f"{bases[i % 2]}/api/models/{model['id']}/infer"
            return requests.post(url, json={"instances": [flower]}, timeout=120)

        with ThreadPoolExecutor(200) as pool:
            responses = list(pool.map(call, range(200)))
    finally:
        procs.stop_all()
    codes = [r.status_code for r in responses]
    assert codes == [200] * 200, (
        {c: codes.count(c) for c in set(codes)},
        [r.text[:300] for r in responses if r.status_code != 200][:3],
    )
    assert [r.json()["predictions"] for r in responses] == [["setosa"] if i % 2 else ["versicolor"] for i in range(200)]
    assert len(pods(model["id"])) == 1
    assert events(client, model["id"]).count("started") == 1


def test_a_herd_of_first_requests_scales_up_once(live_server, register, client):
    # /start waits for the model like a first /infer does, through the same single flight; the test
    # image (busybox nc) drops connections when twenty arrive at once without Docker's port proxy
    model = register()

    def call(i):
        return requests.post(f"{live_server}/api/models/{model['id']}/start", json={}, timeout=90)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(call, range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert {r.json()["status"] for r in responses} == {"running"}
    assert len(pods(model["id"])) == 1
    scale = k8s.AppsV1Api(admin()).read_namespaced_deployment_scale(f"itest-{INSTANCE}-model-{model['id']}", NAMESPACE)
    assert scale.spec.replicas == 1
    assert events(client, model["id"]).count("started") == 1
    assert client.post(f"/api/models/{model['id']}/infer", json={"x": 1}).get_json()["echo"] == {"x": 1}


@on_cluster(idle_timeout_seconds=1)
def test_idle_model_is_scaled_to_zero(app, client, register):
    model = register()
    assert client.post(f"/api/models/{model['id']}/infer", json={}).status_code == 200
    with app.app_context():
        context().activity.flush()
        assert reap_idle(now=utcnow() + timedelta(seconds=3)) == [model["id"]]
    assert shown(client, model["id"])["status"] == "stopped"
    assert pods(model["id"]) == []
    scale = k8s.AppsV1Api(admin()).read_namespaced_deployment_scale(f"itest-{INSTANCE}-model-{model['id']}", NAMESPACE)
    assert not scale.spec.replicas


@on_cluster(idle_timeout_seconds=1)
def test_a_request_in_flight_is_never_cut(app, client, register, live_server):
    model = register(image=SLOW)
    assert client.post(f"/api/models/{model['id']}/start").status_code == 200
    outcome = {}

    def long_call():
        outcome["response"] = requests.post(
            f"{live_server}/api/models/{model['id']}/infer?seconds=3", data=b"{}", timeout=30
        )

    caller = threading.Thread(target=long_call)
    caller.start()
    stopped_during = []
    with app.app_context():
        eventually(lambda: context().activity.in_flight(model["id"]), 10, "the request to arrive")
        while caller.is_alive():
            stopped_during += reap_idle(now=utcnow() + timedelta(seconds=30))
            db.session.remove()
            time.sleep(0.3)
    caller.join()
    assert stopped_during == []
    assert outcome["response"].status_code == 200 and outcome["response"].json() == {"slept": 3}
    assert len(pods(model["id"])) == 1


@on_cluster(max_running_containers=1, max_running_per_owner=1)
def test_at_the_cap_the_least_recently_used_model_is_evicted(client, register):
    first, second = register(model_name="first"), register(model_name="second")
    assert client.post(f"/api/models/{first['id']}/infer", json={}).status_code == 200
    assert client.post(f"/api/models/{second['id']}/infer", json={}).status_code == 200
    assert shown(client, first["id"])["status"] == "stopped" and "evicted" in events(client, first["id"])
    assert pods(first["id"]) == [] and len(pods(second["id"])) == 1


def test_reconcile_adopts_notices_a_deleted_pod_and_removes_strays(app, client, register):
    kept, killed, forgotten = (register(model_name=name) for name in ("kept", "killed", "forgotten"))
    for model in (kept, killed, forgotten):
        assert client.post(f"/api/models/{model['id']}/start").status_code == 200
    core = k8s.CoreV1Api(admin())
    [victim] = pods(killed["id"])
    core.delete_namespaced_pod(victim.metadata.name, NAMESPACE, grace_period_seconds=0)
    stray = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=f"itest-{INSTANCE}-stray", labels=objects.model_labels(INSTANCE, 999_999)),
        spec=k8s.V1PodSpec(
            containers=[k8s.V1Container(name="model", image="inference-test/echo:1", image_pull_policy="Never")]
        ),
    )
    core.create_namespaced_pod(NAMESPACE, stray)
    with app.app_context():
        row = db.session.get(ServedModel, forgotten["id"])  # as after a crash between start and commit
        row.status, row.container_id, row.host_port, row.container_host = "stopped", None, None, None
        db.session.commit()
        report = reconcile()
    assert report.adopted == [forgotten["id"]]
    assert report.vanished == [killed["id"]]
    assert stray.metadata.name in report.removed
    assert shown(client, kept["id"])["status"] == "running"
    assert shown(client, killed["id"])["status"] == "stopped" and "vanished" in events(client, killed["id"])
    assert client.post(f"/api/models/{forgotten['id']}/infer", json={}).headers["X-Cold-Start"] == "false"
    again = client.post(f"/api/models/{killed['id']}/infer", json={"n": 2})  # restarted on demand
    assert again.status_code == 200 and again.headers["X-Cold-Start"] == "true"
    assert len(pods(killed["id"])) == 1


def test_a_pod_lost_under_a_request_is_retried_once(client, register):
    model = register()
    assert client.post(f"/api/models/{model['id']}/infer", json={}).status_code == 200
    [pod] = pods(model["id"])
    k8s.CoreV1Api(admin()).delete_namespaced_pod(pod.metadata.name, NAMESPACE, grace_period_seconds=0)
    eventually(lambda: all(p.metadata.name != pod.metadata.name for p in pods(model["id"])), 20, "the pod to go")
    # a pod deleted at once leaves the API first; its container is killed a moment later
    eventually(lambda: not answers(pod.status.pod_ip), 30, "the deleted pod's container to stop")
    response = client.post(f"/api/models/{model['id']}/infer", json={"n": 3})
    assert response.status_code == 200 and response.get_json()["echo"] == {"n": 3}
    assert response.headers["X-Cold-Start"] == "true"
    assert "vanished" in events(client, model["id"])
    [now] = pods(model["id"])
    assert now.metadata.name != pod.metadata.name


def test_an_evicted_pod_is_noticed_and_its_model_started_again_on_demand(app, client, register):
    """The Eviction API (a node drain, or a cluster autoscaler making room) takes the model's pod."""
    model = register()
    assert client.post(f"/api/models/{model['id']}/infer", json={}).status_code == 200
    [pod] = pods(model["id"])
    eviction = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=pod.metadata.name, namespace=NAMESPACE))
    k8s.CoreV1Api(admin()).create_namespaced_pod_eviction(pod.metadata.name, NAMESPACE, eviction)
    eventually(lambda: all(p.metadata.name != pod.metadata.name for p in pods(model["id"])), 30, "the pod to go")
    with app.app_context():
        report = reconcile()
    assert report.vanished == [model["id"]]
    assert shown(client, model["id"])["status"] == "stopped" and "vanished" in events(client, model["id"])
    again = client.post(f"/api/models/{model['id']}/infer", json={"n": 4})
    assert again.status_code == 200 and again.headers["X-Cold-Start"] == "true"
    [now] = pods(model["id"])
    assert now.metadata.name != pod.metadata.name


@on_cluster(scale_up_window_seconds=0.5, scale_down_delay_seconds=1.0, queue_timeout_seconds=20.0)
def test_replicas_are_pods_of_the_models_deployment_added_and_removed_exactly(app, client, register, live_server):
    from test_replicas import Load, Scaler, replicas

    model = register(image=SLOW, max_replicas=2, target_concurrency=1)
    assert client.post(f"/api/models/{model['id']}/start").status_code == 200
    [first] = pods(model["id"])
    scaler = Scaler(app)
    try:
        with Load(f"{live_server}/api/models/{model['id']}/infer?seconds=0.5", clients=3) as load:
            scaler.until(lambda: replicas(app, model["id"])["ready"] == 2, what="two ready replicas")
            both = pods(model["id"])
            served = len(load.statuses)
            eventually(lambda: len(load.statuses) >= served + 6, 30, "requests served by both replicas")
        assert load.failures == []
        assert sorted(p.metadata.labels[objects.REPLICA] for p in both) == ["0", "1"]
        scale = k8s.AppsV1Api(admin()).read_namespaced_deployment_scale(
            f"itest-{INSTANCE}-model-{model['id']}", NAMESPACE
        )
        assert scale.spec.replicas == 2
        scaler.until(lambda: replicas(app, model["id"])["ready"] == 1 and len(pods(model["id"])) == 1, what="one left")
    finally:
        scaler.close()
    [left] = pods(model["id"])
    assert left.metadata.name == first.metadata.name  # the drained replica 1 went, replica 0 stayed


def test_the_dashboard_and_the_metrics_show_the_pod_and_its_node(client, register):
    model = register()
    assert client.post(f"/api/models/{model['id']}/infer", json={"n": 1}).status_code == 200
    [pod] = pods(model["id"])
    page = client.get(f"/models/{model['id']}").get_data(as_text=True)
    assert f"<dt>Name</dt><dd><code>{pod.metadata.name}</code></dd>" in page
    assert f"<dt>Node</dt><dd><code>{pod.spec.node_name}</code></dd>" in page
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'inference_containers{state="running"} 1.0' in metrics
    assert 'inference_lifecycle_events_total{kind="started"}' in metrics
    assert f'inference_requests_total{{model_id="{model["id"]}",status="200"}}' in metrics
