"""Model containers stay in their box: isolation, log rotation, user, bounded health reads, start pool."""

from __future__ import annotations

import http.server
import threading
import time

import pytest
import urllib3
from conftest import BASE_SETTINGS, INSTANCE, NEVER_HEALTHY, managed_containers

from inference_app.extensions import db
from inference_app.models import ServedModel
from inference_app.runtime import Endpoint
from inference_app.runtime.isolation import network_name
from inference_app.runtime.readiness import HEALTH_BODY_LIMIT, health_answer

HEALTH_PROBE = "printf 'GET /health HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 8080"


def start(client, model) -> None:
    assert client.post(f"/api/models/{model['id']}/start").status_code == 200


def container_ip(container) -> str:
    container.reload()
    [network] = container.attrs["NetworkSettings"]["Networks"].values()
    return network["IPAddress"]


def test_models_cannot_reach_one_another_but_the_service_reaches_each(client, register, docker_client):
    first, second = register(model_name="first"), register(model_name="second")
    start(client, first)
    start(client, second)
    [a] = managed_containers(docker_client, first["id"])
    [b] = managed_containers(docker_client, second["id"])
    probe = a.exec_run(["sh", "-c", HEALTH_PROBE.format(host=container_ip(b))])
    assert b"200 OK" not in probe.output  # refused or timed out: no path from one model to another
    for model in (first, second):
        answer = client.post(f"/api/models/{model['id']}/infer", json={"x": 1})
        assert answer.status_code == 200 and answer.get_json()["echo"] == {"x": 1}
    own = a.exec_run(["sh", "-c", HEALTH_PROBE.format(host="127.0.0.1")])
    assert b"200 OK" in own.output  # the probe itself works: only the path between models is closed


@pytest.mark.settings(model_log_max_size="2m", model_log_max_files=4)
def test_model_logs_rotate(client, register, docker_client):
    model = register()
    start(client, model)
    [container] = managed_containers(docker_client, model["id"])
    assert container.attrs["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "2m", "max-file": "4"},
    }


@pytest.mark.settings(model_user="65534:65534")
def test_model_user_runs_containers_as_non_root(client, register, docker_client):
    model = register()
    answer = client.post(f"/api/models/{model['id']}/infer", json={"x": 2})
    assert answer.status_code == 200
    [container] = managed_containers(docker_client, model["id"])
    assert container.attrs["Config"]["User"] == "65534:65534"
    assert container.exec_run(["id", "-u"]).output.decode().strip() == "65534"


class _EndlessHealth(http.server.BaseHTTPRequestHandler):
    sent = 0

    def do_GET(self):  # noqa: N802 (the standard library's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        chunk = b"x" * 65536
        try:
            while _EndlessHealth.sent < 512 * 1024 * 1024:  # far more than anyone should read
                self.wfile.write(chunk)
                _EndlessHealth.sent += len(chunk)
        except OSError:
            pass  # the reader hung up, as it should

    def log_message(self, *args):
        pass


def _health_check_against(handler: type[http.server.BaseHTTPRequestHandler]) -> list:
    """health_answer against a real server with this handler; [its answer], or [] if it never came."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    outcome = []
    reader = threading.Thread(
        target=lambda: outcome.append(
            health_answer(urllib3.PoolManager(), Endpoint("127.0.0.1", server.server_port, "x"), "/health")
        ),
        daemon=True,
    )
    reader.start()
    reader.join(timeout=30)  # the bounds are seconds; an unbounded read would take far longer
    server.shutdown()
    return outcome


def test_a_health_answer_is_read_only_up_to_a_bound():
    outcome = _health_check_against(_EndlessHealth)
    assert outcome == [None]  # a 2xx: healthy, and the endless body was not read to its end
    assert _EndlessHealth.sent < 64 * HEALTH_BODY_LIMIT


class _DrippingHealth(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the standard library's name)
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):  # a byte every 0.1 s: 100 s for the whole body, each read under its timeout
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass  # the reader hung up, as it should

    def log_message(self, *args):
        pass


def test_a_health_answer_trickling_in_is_not_waited_for():
    outcome = _health_check_against(_DrippingHealth)  # the whole body would take 100 s
    assert outcome == [None], "the health check was still reading a body that trickles in"


@pytest.mark.settings(start_timeout_seconds=3.0)
def test_wait_false_starts_use_a_small_pool_not_a_thread_per_call(client, register):
    model = register(image=NEVER_HEALTHY)
    answers = [client.post(f"/api/models/{model['id']}/start?wait=false").status_code for _ in range(30)]
    assert answers == [202] * 30
    starters = [t for t in threading.enumerate() if t.name.startswith(("model-start", "start-model"))]
    assert 1 <= len(starters) <= 4


@pytest.mark.settings(start_timeout_seconds=3.0, max_running_containers=10)
def test_one_owner_cannot_take_every_background_start_worker(client, register):
    before = {t for t in threading.enumerate() if t.name.startswith("model-start")}  # other tests' pools
    models = {
        owner: [register(user_id=owner, model_name=f"m{i}", image=NEVER_HEALTHY)["id"] for i in range(3)]
        for owner in ("alice", "bob", "carol")
    }
    alice = [client.post(f"/api/models/{i}/start?wait=false") for i in models["alice"]]
    assert [a.status_code for a in alice] == [202, 202, 429]
    assert "alice already has 2 starts queued or running" in alice[2].get_json()["error"]["message"]
    assert alice[2].headers["Retry-After"] == "2"
    others = [client.post(f"/api/models/{i}/start?wait=false").status_code for i in models["bob"] + models["carol"]]
    assert others == [202, 202, 429] * 2  # each owner gets their share of the workers, not a thread per model
    starters = [t for t in threading.enumerate() if t.name.startswith("model-start") and t not in before]
    assert 1 <= len(starters) <= 4


@pytest.mark.settings(image_allowlist="inference-test/")
def test_the_allowlist_is_checked_again_at_every_start(app, client, register, docker_client):
    from dataclasses import replace

    model = register()
    ctx = app.extensions["inference"]
    ctx.settings = replace(ctx.settings, image_allowlist="inference-examples/")  # the operator narrowed it
    refused = client.post(f"/api/models/{model['id']}/start")
    assert refused.status_code == 403
    assert "inference-test/echo:1 is not in IMAGE_ALLOWLIST" in refused.get_json()["error"]["message"]
    assert client.get(f"/api/models/{model['id']}").get_json()["status"] == "failed"
    assert managed_containers(docker_client, model["id"]) == []


def test_code_loading_env_keys_are_refused_again_at_every_start(app, client, register, docker_client):
    model = register(env={"MODE": "fast"})
    with app.app_context():  # as a registration from before the rule, or written past the API
        row = db.session.get(ServedModel, model["id"])
        row.env = {"MODE": "fast", "LD_PRELOAD": "/tmp/evil.so"}
        db.session.commit()
    refused = client.post(f"/api/models/{model['id']}/start")
    assert refused.status_code == 403
    assert "env key LD_PRELOAD changes how the container loads code" in refused.get_json()["error"]["message"]
    assert managed_containers(docker_client, model["id"]) == []


@pytest.mark.settings(instance_name=f"{INSTANCE}open")
def test_a_network_of_our_name_without_isolation_is_never_used(client, register, docker_client):
    name = network_name(BASE_SETTINGS["container_prefix"], f"{INSTANCE}open")
    squatter = docker_client.networks.create(name, driver="bridge")  # made by hand: traffic between containers on
    try:
        model = register()
        refused = client.post(f"/api/models/{model['id']}/start")
        assert refused.status_code == 502
        message = refused.get_json()["error"]["message"]
        assert f"the Docker network {name} exists but inter-container traffic is on" in message
        assert managed_containers(docker_client, model["id"]) == []
        assert {c.name for c in docker_client.networks.get(squatter.id).containers} == set()
    finally:
        squatter.remove()
