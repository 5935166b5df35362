"""On-demand serving against the real Docker engine: start, wait, forward, stop, recover."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import CRASH, IRIS, NEVER_HEALTHY, SLOW, created_since, managed_containers
from waiting import wait_for


def infer(client, model_id, payload, **kwargs):
    return client.post(
        f"/api/models/{model_id}/infer", data=json.dumps(payload), content_type="application/json", **kwargs
    )


def test_cold_start_ready_infer_stop(client, register, docker_client):
    model = register(env={"MODEL_LABEL": "first"})
    first = infer(client, model["id"], {"x": 1})
    assert first.status_code == 200
    assert first.headers["X-Cold-Start"] == "true"
    assert int(first.headers["X-Start-Wait-Ms"]) > 0
    assert first.get_json() == {"echo": {"x": 1}, "model": "first"}
    assert first.headers["Content-Type"].startswith("application/json")

    shown = client.get(f"/api/models/{model['id']}").get_json()
    assert shown["status"] == "running" and isinstance(shown["host_port"], int)
    assert shown["last_used_at"] is not None
    [container] = managed_containers(docker_client, model["id"])
    assert container.status == "running"
    assert container.attrs["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"

    second = infer(client, model["id"], {"x": 2})
    assert second.status_code == 200 and second.headers["X-Cold-Start"] == "false"
    assert second.get_json()["echo"] == {"x": 2}

    stopped = client.post(f"/api/models/{model['id']}/stop")
    assert stopped.status_code == 200 and stopped.get_json()["status"] == "stopped"
    assert stopped.get_json()["host_port"] is None
    assert managed_containers(docker_client, model["id"]) == []
    again = client.post(f"/api/models/{model['id']}/stop")
    assert again.status_code == 200 and again.get_json()["status"] == "stopped"


def test_container_has_safe_defaults(client, register, docker_client):
    model = register(memory="96m", cpus=0.5, env={"GREETING": "hi"})
    assert client.post(f"/api/models/{model['id']}/start").status_code == 200
    [container] = managed_containers(docker_client, model["id"])
    host = container.attrs["HostConfig"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["CapDrop"] == ["ALL"]
    assert host["Memory"] == 96 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 256
    assert host["RestartPolicy"]["Name"] == "no"
    assert not host["Privileged"] and not host["Binds"]
    assert "GREETING=hi" in container.attrs["Config"]["Env"]
    labels = container.attrs["Config"]["Labels"]
    assert labels["io.inference-service.managed"] == "true"
    assert labels["io.inference-service.model-id"] == str(model["id"])
    assert labels["io.inference-service.version"] == "1"


def test_twenty_concurrent_first_requests_start_one_container(live_server, register, docker_client):
    model = register()
    since = time.time()

    def call(i):
        return requests.post(f"{live_server}/api/models/{model['id']}/infer", json={"i": i}, timeout=60)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(call, range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert sorted(r.json()["echo"]["i"] for r in responses) == list(range(20))
    # every request that came while it started waited for that one start (one that a busy machine
    # sent only after the start finished is warm)
    assert any(r.headers["X-Cold-Start"] == "true" for r in responses)
    assert created_since(docker_client, since, model["id"]) == 1
    assert len(managed_containers(docker_client, model["id"])) == 1


def test_missing_image_is_a_clear_error_recorded_on_the_model(client, register):
    model = register(image="registry.example/nobody/missing:9")
    response = infer(client, model["id"], {})
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "image_not_found"
    assert "registry.example/nobody/missing:9" in error["message"]
    shown = client.get(f"/api/models/{model['id']}").get_json()
    assert shown["status"] == "failed"
    assert "registry.example/nobody/missing:9" in shown["last_error"]


def test_crash_at_start_reports_the_log_tail_and_removes_the_container(client, register, docker_client):
    model = register(image=CRASH)
    response = infer(client, model["id"], {})
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "container_failed"
    assert "exited with code 3" in error["message"]
    assert "fatal: model weights missing at /models/w.bin" in error["message"]
    shown = client.get(f"/api/models/{model['id']}").get_json()
    assert shown["status"] == "failed" and "weights missing" in shown["last_error"]
    assert managed_containers(docker_client, model["id"]) == []


@pytest.mark.settings(start_timeout_seconds=2.0)
def test_never_healthy_times_out_with_504_and_leaves_nothing(client, register, docker_client):
    model = register(image=NEVER_HEALTHY)
    response = infer(client, model["id"], {})
    assert response.status_code == 504
    assert response.get_json()["error"]["code"] == "start_timeout"
    assert "503" in response.get_json()["error"]["message"]
    assert managed_containers(docker_client, model["id"]) == []
    assert client.get(f"/api/models/{model['id']}").get_json()["status"] == "failed"


def test_container_killed_from_outside_is_started_again(client, register, docker_client):
    model = register()
    assert infer(client, model["id"], {"n": 1}).status_code == 200
    [container] = managed_containers(docker_client, model["id"])
    container.remove(force=True)
    response = infer(client, model["id"], {"n": 2})
    assert response.status_code == 200
    assert response.get_json()["echo"] == {"n": 2}
    assert response.headers["X-Cold-Start"] == "true"
    [replacement] = managed_containers(docker_client, model["id"])
    assert replacement.id != container.id
    kinds = [e["kind"] for e in client.get(f"/api/models/{model['id']}/lifecycle-events").get_json()["items"]]
    assert "vanished" in kinds


def test_non_default_health_and_predict_paths(client, register):
    model = register(model_name="kserve-like", health_path="/v2/health/ready", predict_path="/v2/models/echo/infer")
    response = infer(client, model["id"], {"inputs": [1]})
    assert response.status_code == 200
    assert response.get_json()["echo"] == {"inputs": [1]}


def test_request_id_is_forwarded_and_returned(client, register):
    model = register(predict_path="/headers")
    response = client.post(f"/api/models/{model['id']}/infer", data=b"{}", headers={"X-Request-ID": "req-abc.123"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req-abc.123"
    assert "req-abc.123" in response.get_data(as_text=True)
    unsafe = client.post(f"/api/models/{model['id']}/infer", data=b"{}", headers={"X-Request-ID": "bad id\x01"})
    assert unsafe.headers["X-Request-ID"] != "bad id\x01" and len(unsafe.headers["X-Request-ID"]) == 32


def test_start_then_wait_false_returns_202_starting(client, register):
    model = register()
    response = client.post(f"/api/models/{model['id']}/start?wait=false")
    assert response.status_code == 202
    assert response.get_json()["status"] in ("starting", "running")
    running = lambda: client.get(f"/api/models/{model['id']}").get_json()["status"] == "running"  # noqa: E731
    wait_for(running, 20, "the background start never finished", interval=0.05)
    warm = infer(client, model["id"], {"a": 1})
    assert warm.status_code == 200 and warm.headers["X-Cold-Start"] == "false"


def test_start_waits_until_ready_and_keep_warm(client, register):
    model = register()
    response = client.post(f"/api/models/{model['id']}/start", json={"keep_warm": True})
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "running" and body["keep_warm"] is True and body["idle_deadline"] is None
    bad = client.post(f"/api/models/{model['id']}/start", json={"keep_warm": "yes"})
    assert bad.status_code == 400 and bad.get_json()["error"]["details"]["field"] == "keep_warm"


@pytest.mark.settings(infer_timeout_seconds=1.0)
def test_inference_timeout_is_504(client, register):
    model = register(image=SLOW)
    response = client.post(f"/api/models/{model['id']}/infer?seconds=3", data=b"{}")
    assert response.status_code == 504
    assert response.get_json()["error"]["code"] == "inference_timeout"


def test_model_error_status_passes_through(client, register):
    model = register(predict_path="/no-such-path")
    response = infer(client, model["id"], {})
    assert response.status_code == 404
    assert response.headers["X-Cold-Start"] == "true"


def test_example_iris_model_predicts(client, register):
    model = register(user_id="demo", model_name="iris", image=IRIS, memory="256m")
    response = infer(client, model["id"], {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.7, 1.5]]})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["predictions"] == ["setosa", "versicolor"]


def test_inference_minutes_are_recorded(app, client, register):
    from inference_app.extensions import db
    from inference_app.models import InferenceMinute
    from inference_app.services.context import context

    model = register()
    for i in range(3):
        assert infer(client, model["id"], {"i": i}).status_code == 200
    bad = register(model_name="broken", predict_path="/missing")
    assert infer(client, bad["id"], {}).status_code == 404
    with app.app_context():
        context().activity.flush()
        rows = {r.model_id: r for r in db.session.query(InferenceMinute).all()}
    assert rows[model["id"]].requests == 3 and rows[model["id"]].cold_starts == 1
    assert rows[model["id"]].errors == 0 and rows[model["id"]].max_ms > 0
    assert rows[bad["id"]].requests == 1 and rows[bad["id"]].errors == 0  # a model's 404 is its answer


def test_infer_goes_to_the_newest_version_unless_one_is_named(client, register):
    old = register(model_name="family", version="1", env={"MODEL_LABEL": "v1"})
    new = register(model_name="family", version="2", env={"MODEL_LABEL": "v2"})
    newest = infer(client, old["id"], {"q": 1})
    assert newest.status_code == 200
    assert newest.get_json()["model"] == "v2" and newest.headers["X-Model-Id"] == str(new["id"])
    named = client.post(f"/api/models/{new['id']}/infer?version=1", json={"q": 2})
    assert named.get_json()["model"] == "v1" and named.headers["X-Model-Version"] == "1"
    missing = client.post(f"/api/models/{new['id']}/infer?version=7", json={})
    assert missing.status_code == 404
