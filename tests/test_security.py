"""Tokens, tenancy, allowlist, rate limits and container confinement, against the real service parts."""

import json

import pytest
from conftest import ECHO, built_app, managed_containers

from inference_app.services import auth
from inference_app.services.rate_limit import RateLimiter


@pytest.fixture
def secured(database, docker_client):
    with built_app(docker_client, auth_disabled=False, image_allowlist="inference-test/,inference-examples/") as app:
        auth.forget_cached_tokens()
        with app.app_context():
            _, admin = auth.create_token("admin", None, True)
            _, alice = auth.create_token("alice", "alice", False)
            _, bob = auth.create_token("bob", "bob", False)
        yield app, {"admin": admin, "alice": alice, "bob": bob}
        auth.forget_cached_tokens()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_token_matrix_for_every_route(secured, docker_client):
    app, tokens = secured
    client = app.test_client()
    alice_model = client.post(
        "/api/models", json={"user_id": "alice", "model_name": "a", "image": ECHO}, headers=bearer(tokens["alice"])
    ).get_json()
    bob_model = client.post(
        "/api/models", json={"user_id": "bob", "model_name": "b", "image": ECHO}, headers=bearer(tokens["bob"])
    ).get_json()
    a, b = alice_model["id"], bob_model["id"]
    routes = [
        ("get", "/api/models"),
        ("post", "/api/models"),
        ("get", f"/api/models/{b}"),
        ("post", f"/api/models/{b}/start"),
        ("post", f"/api/models/{b}/infer"),
        ("post", f"/api/models/{b}/stop"),
        ("get", f"/api/models/{b}/lifecycle-events"),
        ("get", "/api/lifecycle-events"),
        ("get", "/api/events"),
        ("get", "/api/events/dead-letters"),
    ]
    for method, path in routes:
        for headers in ({}, bearer("inf_not-a-real-token"), {"Authorization": "Basic YWxpY2U6eA=="}):
            response = getattr(client, method)(path, json={}, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.get_json()["error"]["code"] == "unauthorized"
    # alice on bob's model: 404, never 403, and nothing is started
    for method, path in routes[2:7]:
        response = getattr(client, method)(path, json={}, headers=bearer(tokens["alice"]))
        assert response.status_code == 404, (method, path)
    assert managed_containers(docker_client, b) == []
    listed = client.get("/api/models", headers=bearer(tokens["alice"])).get_json()
    assert [m["id"] for m in listed["items"]] == [a]
    assert client.get("/api/models?user_id=bob", headers=bearer(tokens["alice"])).get_json()["total"] == 0
    foreign = client.post(
        "/api/models", json={"user_id": "bob", "model_name": "x", "image": ECHO}, headers=bearer(tokens["alice"])
    )
    assert foreign.status_code == 403
    for path in ("/api/events", "/api/events/dead-letters"):
        assert client.get(path, headers=bearer(tokens["alice"])).status_code == 403
    # the owner and the admin may do everything
    owner = bearer(tokens["bob"])
    assert client.post(f"/api/models/{b}/infer", json={"k": 1}, headers=owner).get_json()["echo"] == {"k": 1}
    assert client.post(f"/api/models/{b}/stop", headers=owner).status_code == 200
    admin = bearer(tokens["admin"])
    assert client.get("/api/models", headers=admin).get_json()["total"] == 2
    assert client.post(f"/api/models/{a}/infer", json={"k": 2}, headers=admin).status_code == 200
    for path in (
        "/api/events",
        "/api/events/dead-letters",
        "/api/lifecycle-events",
        f"/api/models/{a}/lifecycle-events",
    ):
        assert client.get(path, headers=admin).status_code == 200


def test_revoked_token_stops_working(secured):
    app, tokens = secured
    client = app.test_client()
    assert client.get("/api/models", headers=bearer(tokens["alice"])).status_code == 200
    with app.app_context():
        token_id = auth.principal_for_token(tokens["alice"]).token_id
        auth.revoke_token(token_id)
    auth.forget_cached_tokens()  # in production the cache expires within CACHE_SECONDS
    assert client.get("/api/models", headers=bearer(tokens["alice"])).status_code == 401


def test_tokens_are_stored_hashed(secured):
    app, tokens = secured
    from inference_app.extensions import db
    from inference_app.models import ApiToken

    with app.app_context():
        stored = db.session.query(ApiToken).all()
        assert {t.token_hash for t in stored} == {auth.hash_token(t) for t in tokens.values()}
        assert not any(plain in (t.token_hash + t.prefix + t.name) for t in stored for plain in tokens.values())


def test_cli_creates_lists_and_revokes_tokens(secured):
    app, _tokens = secured
    runner = app.test_cli_runner()
    created = runner.invoke(args=["tokens", "create", "--user", "carol"])
    assert created.exit_code == 0, created.output
    plain = created.output.split(": ", 1)[1].split()[0]
    assert plain.startswith("inf_")
    assert app.test_client().get("/api/models", headers=bearer(plain)).status_code == 200
    listing = runner.invoke(args=["tokens", "list"])
    assert "user carol" in listing.output and plain not in listing.output
    token_id = created.output.split()[1]
    assert runner.invoke(args=["tokens", "revoke", token_id]).exit_code == 0
    auth.forget_cached_tokens()
    assert app.test_client().get("/api/models", headers=bearer(plain)).status_code == 401
    assert runner.invoke(args=["tokens", "create"]).exit_code != 0  # neither --user nor --admin


def test_image_allowlist_refuses_other_images_from_the_api(secured):
    app, tokens = secured
    response = app.test_client().post(
        "/api/models",
        json={"user_id": "alice", "model_name": "evil", "image": "docker.io/library/alpine:3"},
        headers=bearer(tokens["alice"]),
    )
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["details"]["field"] == "image" and "IMAGE_ALLOWLIST" in error["message"]


def test_image_allowlist_dead_letters_kafka_events(database, docker_client):
    from inference_app.events.contract import Position, Rejected, decode
    from inference_app.services.context import context

    with built_app(docker_client, image_allowlist="inference-test/") as app, app.app_context():
        settings = context().settings
        event = json.dumps({"user_id": "u", "model_name": "m", "image": "evil.example/miner:1"}).encode()
        decoded = decode(Position(settings.kafka_topic_uploaded, 0, 1), event, settings)
        assert isinstance(decoded, Rejected) and "IMAGE_ALLOWLIST" in decoded.reason
        smuggled = json.dumps(
            {
                "user_id": "u",
                "model_name": "m",
                "image": ECHO,
                "privileged": True,
                "volumes": {"/": "/host"},
                "cap_add": ["SYS_ADMIN"],
            }
        ).encode()
        accepted = decode(Position(settings.kafka_topic_uploaded, 0, 2), smuggled, settings)
        assert accepted.registration.metadata == {
            "privileged": True,
            "volumes": {"/": "/host"},
            "cap_add": ["SYS_ADMIN"],
        }


@pytest.mark.settings(read_only_rootfs=True, max_memory="128m", max_cpus=0.5, pids_limit=64)
def test_container_confinement_is_real(client, register, docker_client):
    model = register(env={"A": "1"}, cpus=0.5, metadata={"privileged": True})
    assert client.post(f"/api/models/{model['id']}/start").status_code == 200
    [container] = managed_containers(docker_client, model["id"])
    host = container.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["SecurityOpt"] == ["no-new-privileges:true"] and host["CapDrop"] == ["ALL"]
    assert not host["CapAdd"] and not host["Privileged"] and not host["Devices"] and not host["Binds"]
    assert host["NetworkMode"] != "host" and host["PidMode"] == "" and host["IpcMode"] != "host"
    assert host["Memory"] == 64 * 1024 * 1024  # the default, under the maximum
    assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 64
    assert all(b["HostIp"] == "127.0.0.1" for b in host["PortBindings"]["8080/tcp"])
    assert container.attrs["Config"]["Env"].count("A=1") == 1
    assert (
        client.post(
            "/api/models", json={"user_id": "a", "model_name": "big", "image": ECHO, "memory": "1g"}
        ).status_code
        == 400
    )


def test_rate_limit_answers_429_with_retry_after(database, docker_client):
    with built_app(docker_client, rate_limit_per_minute=3) as app:
        client = app.test_client()
        model = client.post("/api/models", json={"user_id": "a", "model_name": "m", "image": ECHO}).get_json()
        codes = [client.post(f"/api/models/{model['id']}/infer", json={}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.post(f"/api/models/{model['id']}/infer", json={})
        assert limited.get_json()["error"]["code"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1


def test_rate_limiter_refills_with_time():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    for _ in range(60):
        limiter.check("k")
    with pytest.raises(Exception) as caught:
        limiter.check("k")
    assert caught.value.retry_after == 1
    now[0] += 1.0
    limiter.check("k")
    limiter.check("other")  # buckets are per key
