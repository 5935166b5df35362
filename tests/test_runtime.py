"""The runtime behaviour suite: what the lifecycle relies on, checked against every runtime.

Each runtime (the Docker engine, and Kubernetes on the test cluster) runs the same tests through
the Runtime interface only: start, readiness, inspect, list, logs, remove, and the failures it
must name. Without the cluster (TEST_KUBECONFIG unset) the Kubernetes half fails, it is not skipped.
"""

from __future__ import annotations

import time

import pytest
import requests
from conftest import BASE_SETTINGS, CRASH, ECHO, INSTANCE, NEVER_HEALTHY
from kubernetes_support import delete_objects, kube_settings, require_cluster

from inference_app.config import Settings
from inference_app.errors import ContainerFailed, ImageMissing, StartTimeout
from inference_app.runtime import InstanceSpec, Runtime, make_runtime
from inference_app.runtime.docker import DockerRuntime

RUNTIMES = ["docker", "kubernetes"]  # the cluster: `make test` starts it
MODEL = 9_100  # model ids far from the ones the database hands out to other tests


def _settings(runtime: str) -> Settings:
    fields = {k: v for k, v in BASE_SETTINGS.items() if k.islower()}
    if runtime == "kubernetes":
        fields.update(kube_settings())
    return Settings().with_overrides({**fields, "instance_name": f"{INSTANCE}rt"})


@pytest.fixture(params=RUNTIMES)
def runtime(request, docker_client) -> Runtime:
    if request.param == "kubernetes":
        require_cluster()
    made = make_runtime(_settings(request.param))
    assert made.name == request.param
    yield made
    for instance in made.list_managed():
        made.remove(instance.instance_id, timeout=0)
    if request.param == "kubernetes":
        delete_objects(f"{INSTANCE}rt")


def spec(model_id: int = MODEL, image: str = ECHO, replica: int = 0, **extra) -> InstanceSpec:
    return InstanceSpec(
        model_id=model_id,
        user_id="alice",
        version="1",
        image=image,
        port=8080,
        replica=replica,
        memory_bytes=64 * 1024 * 1024,
        **extra,
    )


def deadline(seconds: float = 20.0) -> float:
    return time.monotonic() + seconds


def test_start_ready_inspect_list_logs_remove(runtime):
    instance = runtime.start(spec(env={"MODEL_LABEL": "suite"}))
    assert instance.model_id == MODEL and instance.replica == 0 and instance.phase in ("created", "running")

    endpoint = runtime.wait_ready(instance, "/health", deadline())
    assert endpoint.instance_id == instance.instance_id
    answer = requests.post(endpoint.base_url + "/predict", json={"x": 1}, timeout=10)
    assert answer.status_code == 200 and answer.json() == {"echo": {"x": 1}, "model": "suite"}

    seen = runtime.inspect(instance.instance_id)
    assert seen is not None and seen.running and seen.endpoint == endpoint
    assert seen.limits.memory_bytes == 64 * 1024 * 1024 and seen.limits.cpus == 1.0

    assert [i.instance_id for i in runtime.list_managed(MODEL)] == [instance.instance_id]
    assert instance.instance_id in {i.instance_id for i in runtime.list_managed()}
    assert runtime.list_managed(MODEL + 1) == []
    assert "POST /predict" in runtime.logs(instance.instance_id)

    assert runtime.remove(instance.instance_id) is True
    assert runtime.inspect(instance.instance_id) is None
    assert runtime.list_managed(MODEL) == []


def test_every_operation_is_idempotent(runtime):
    instance = runtime.start(spec())
    again = runtime.start(spec())  # the same model and replica again: replaces, never two
    assert [i.instance_id for i in runtime.list_managed(MODEL)] == [again.instance_id]
    assert runtime.inspect(instance.instance_id) is None
    assert runtime.remove(again.instance_id) is True
    assert runtime.remove(again.instance_id) is False
    assert runtime.logs(again.instance_id) == ""
    assert runtime.remove_model(MODEL) == 0


def test_replicas_of_one_model_have_their_own_endpoints(runtime):
    first = runtime.start(spec(replica=0))
    second = runtime.start(spec(replica=1))
    endpoints = {runtime.wait_ready(i, "/health", deadline()) for i in (first, second)}
    assert len(endpoints) == 2
    for endpoint in endpoints:
        assert requests.get(endpoint.base_url + "/health", timeout=5).status_code == 200
    listed = runtime.list_managed(MODEL)
    assert sorted(i.replica for i in listed) == [0, 1]
    assert {i.model_id for i in listed} == {MODEL}
    assert runtime.remove_model(MODEL) == 2
    assert runtime.list_managed(MODEL) == []


def test_missing_image_is_named(runtime):
    with pytest.raises(ImageMissing) as raised:
        runtime.start(spec(image="inference-test/does-not-exist:1"))
    assert "inference-test/does-not-exist:1" in raised.value.message
    assert runtime.list_managed(MODEL) == []


def test_instance_that_exits_during_start_fails_with_its_log(runtime):
    instance = runtime.start(spec(image=CRASH))
    with pytest.raises(ContainerFailed) as raised:
        runtime.wait_ready(instance, "/health", deadline())
    assert "exited with code 3" in raised.value.message
    assert "model weights missing" in raised.value.message
    ended = runtime.inspect(instance.instance_id)
    assert ended is not None and ended.ended and ended.exit_code == 3


def test_instance_never_healthy_times_out(runtime):
    instance = runtime.start(spec(image=NEVER_HEALTHY))
    with pytest.raises(StartTimeout) as raised:
        runtime.wait_ready(instance, "/health", deadline(1.5))
    assert "health check answered 503" in raised.value.message


def test_instance_removed_during_start_is_named(runtime):
    instance = runtime.start(spec(image=NEVER_HEALTHY))
    runtime.remove(instance.instance_id, timeout=0)
    with pytest.raises(ContainerFailed) as raised:
        runtime.wait_ready(instance, "/health", deadline())
    assert "removed while it was starting" in raised.value.message


def test_foreign_containers_with_our_labels_are_strays(runtime, docker_client):
    """An instance carrying our labels under a name we would not give it is listed without a model."""
    if not isinstance(runtime, DockerRuntime):
        pytest.skip("names are the Docker runtime's way of finding instances")
    from inference_app.runtime import labels

    stray = docker_client.containers.create(
        ECHO,
        name=f"itest-{INSTANCE}rt-impostor",
        labels=labels.labels_for(f"{INSTANCE}rt", MODEL, "1", "mallory", 8080),
    )
    try:
        [listed] = [i for i in runtime.list_managed() if i.instance_id == stray.id]
        assert listed.model_id is None
    finally:
        stray.remove(force=True)
