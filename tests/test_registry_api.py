"""Registration and listing through the JSON API, against real PostgreSQL."""

import pytest
from conftest import ECHO


def test_register_returns_201_with_id_and_defaults(client):
    response = client.post("/api/models", json={"user_id": "alice", "model_name": "echo", "image": ECHO})
    assert response.status_code == 201
    body = response.get_json()
    assert isinstance(body["id"], int)
    assert body["status"] == "stopped"
    assert body["version"] == "1"
    assert body["port"] == 8080
    assert body["health_path"] == "/health"
    assert body["predict_path"] == "/predict"
    assert body["host_port"] is None


def test_reregistering_updates_instead_of_duplicating(client):
    first = client.post("/api/models", json={"user_id": "a", "model_name": "m", "version": "2", "image": ECHO})
    second = client.post(
        "/api/models",
        json={"user_id": "a", "model_name": "m", "version": "2", "image": ECHO, "env": {"MODEL_LABEL": "x"}},
    )
    assert first.status_code == 201 and second.status_code == 200
    assert first.get_json()["id"] == second.get_json()["id"]
    assert second.get_json()["env"] == {"MODEL_LABEL": "x"}
    assert client.get("/api/models").get_json()["total"] == 1


@pytest.mark.parametrize(
    "body, field",
    [
        ({"model_name": "m", "image": ECHO}, "user_id"),
        ({"user_id": "a", "image": ECHO}, "model_name"),
        ({"user_id": "a", "model_name": "m"}, "image"),
        ({"user_id": "../etc", "model_name": "m", "image": ECHO}, "user_id"),
        ({"user_id": "a/b", "model_name": "m", "image": ECHO}, "user_id"),
        ({"user_id": "a", "model_name": "m\n", "image": ECHO}, "model_name"),
        ({"user_id": "a", "model_name": "x" * 129, "image": ECHO}, "model_name"),
        ({"user_id": "a", "model_name": "m", "version": "1/2", "image": ECHO}, "version"),
        ({"user_id": "a", "model_name": "m", "image": "Not An Image"}, "image"),
        ({"user_id": "a", "model_name": "m", "image": ECHO, "port": "8080"}, "port"),
        ({"user_id": "a", "model_name": "m", "image": ECHO, "port": 0}, "port"),
        ({"user_id": "a", "model_name": "m", "image": ECHO, "health_path": "health"}, "health_path"),
        ({"user_id": "a", "model_name": "m", "image": ECHO, "predict_path": "/a/../b"}, "predict_path"),
        ({"user_id": "a", "model_name": "m", "image": ECHO, "env": {"1BAD": "x"}}, "env"),
        ({"user_id": "a", "model_name": "m", "image": ECHO, "env": ["A=B"]}, "env"),
        ({"user_id": "a", "model_name": "m", "image": ECHO, "memory": "lots"}, "memory"),
        ({"user_id": "a", "model_name": "m", "image": ECHO, "memory": "64g"}, "memory"),
        ({"user_id": "a", "model_name": "m", "image": ECHO, "cpus": -1}, "cpus"),
        ({"user_id": "a", "model_name": "m", "image": ECHO, "idle_timeout_seconds": 0}, "idle_timeout_seconds"),
        ({"user_id": "a", "model_name": "m", "image": ECHO, "metadata": "x"}, "metadata"),
        ({"user_id": "a", "model_name": "m", "image": ECHO, "privileged": True}, "privileged"),
    ],
)
def test_bad_registrations_are_400_naming_the_field(client, body, field):
    response = client.post("/api/models", json=body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input"
    assert error["details"]["field"] == field
    assert field in error["message"]
    assert client.get("/api/models").get_json()["total"] == 0


def test_non_json_and_non_object_bodies_are_400(client):
    response = client.post("/api/models", data="not json", content_type="application/json")
    assert response.status_code == 400 and "not valid JSON" in response.get_json()["error"]["message"]
    response = client.post("/api/models", json=[1, 2])
    assert response.status_code == 400 and "JSON object" in response.get_json()["error"]["message"]
    deep = {"user_id": "a", "model_name": "m", "image": ECHO, "metadata": {}}
    node = deep["metadata"]
    for _ in range(40):
        node["x"] = {}
        node = node["x"]
    response = client.post("/api/models", json=deep)
    assert response.status_code == 400 and "nested deeper" in response.get_json()["error"]["message"]


def test_unknown_model_is_404_json(client):
    for method, path in [
        ("get", "/api/models/999"),
        ("post", "/api/models/999/start"),
        ("post", "/api/models/999/infer"),
        ("post", "/api/models/999/stop"),
    ]:
        response = getattr(client, method)(path, json={})
        assert response.status_code == 404, path
        assert response.get_json()["error"]["code"] == "model_not_found"


def test_unknown_route_and_method_errors_are_json(client):
    response = client.get("/api/nothing-here")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    response = client.delete("/api/models")
    assert response.status_code == 405 and "Allow" in response.headers


def test_body_too_large_is_413(client, register):
    model = register()
    response = client.post(f"/api/models/{model['id']}/infer", data=b"x" * (65 * 1024), content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


def test_list_filters_search_and_pagination(client, register):
    for i in range(25):
        register(user_id="alice" if i % 2 else "bob", model_name=f"resnet-{i:02d}" if i < 5 else f"bert-{i:02d}")
    everything = client.get("/api/models").get_json()
    assert everything["total"] == 25 and everything["page"] == 1 and everything["per_page"] == 20
    assert len(everything["items"]) == 20
    second = client.get("/api/models?page=2").get_json()
    assert len(second["items"]) == 5
    assert not {m["id"] for m in everything["items"]} & {m["id"] for m in second["items"]}
    alice = client.get("/api/models?user_id=alice&per_page=100").get_json()
    assert alice["total"] == 12 and all(m["user_id"] == "alice" for m in alice["items"])
    found = client.get("/api/models?q=resnet").get_json()
    assert found["total"] == 5 and all(m["model_name"].startswith("resnet") for m in found["items"])
    assert client.get("/api/models?status=running").get_json()["total"] == 0
    assert client.get("/api/models?status=stopped").get_json()["total"] == 25


@pytest.mark.parametrize(
    "query, field", [("page=0", "page"), ("per_page=1000", "per_page"), ("status=happy", "status"), ("page=x", "page")]
)
def test_bad_list_parameters_are_400(client, query, field):
    response = client.get(f"/api/models?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == field


def test_healthz_and_readyz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["checks"]["database"]["ok"] and body["checks"]["docker"]["ok"]
