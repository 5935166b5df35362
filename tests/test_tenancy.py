"""Nobody can starve another owner: per-owner limits and fair share, on the real service parts.

Each test runs on both runtimes: the Docker engine and the test cluster (pods count against the
cap and the owners' shares just as containers do).
"""

from __future__ import annotations

import pytest
from conftest import INSTANCE, built_app
from kubernetes_support import delete_objects, kube_settings, require_cluster

from inference_app.services import auth

ECHO_BODY = {"x": 1}


@pytest.fixture(params=["docker", "kubernetes"])
def runtime_settings(request):
    if request.param == "docker":
        yield {}
        return
    require_cluster()
    yield kube_settings(default_cpus=0.1)
    delete_objects(INSTANCE)


@pytest.fixture
def tenants(database, docker_client, runtime_settings, request):
    marker = request.node.get_closest_marker("settings")
    overrides = {
        "auth_disabled": False,
        "queue_timeout_seconds": 1.0,
        **runtime_settings,
        **(marker.kwargs if marker else {}),
    }
    with built_app(docker_client, **overrides) as app:
        auth.forget_cached_tokens()
        with app.app_context():
            tokens = {
                "admin": auth.create_token("admin", None, True)[1],
                "alice": auth.create_token("alice", "alice", False)[1],
                "bob": auth.create_token("bob", "bob", False)[1],
                "carol": auth.create_token("carol", "carol", False)[1],
            }
        yield app, tokens
        auth.forget_cached_tokens()


def as_user(app, tokens, who):
    client = app.test_client()
    headers = {"Authorization": f"Bearer {tokens[who]}"}

    def post(path, **kwargs):
        return client.post(path, headers=headers, **kwargs)

    return post


@pytest.fixture
def register_as(tenants):
    from inference_app.services.context import context
    from inference_app.services.registry import register_model

    app, _ = tenants

    def _register(owner: str, name: str) -> int:
        with app.app_context():
            model, _ = register_model(
                {"user_id": owner, "model_name": name, "image": "inference-test/echo:1"}, context().settings
            )
            return model.id

    return _register


def events_of(app, model_id):
    from inference_app.models import ModelEvent

    with app.app_context():
        return [(e.kind, e.detail) for e in ModelEvent.query.filter_by(model_id=model_id).order_by(ModelEvent.id)]


@pytest.mark.settings(max_running_containers=2)
def test_keep_warm_cannot_take_every_slot(tenants, register_as):
    """The reported starvation: alice pins two models under a cap of two, then bob asks for his."""
    app, tokens = tenants
    alice, bob = as_user(app, tokens, "alice"), as_user(app, tokens, "bob")
    a1, a2, b1 = register_as("alice", "a1"), register_as("alice", "a2"), register_as("bob", "b1")
    assert alice(f"/api/models/{a1}/start", json={"keep_warm": True}).status_code == 200
    refused = alice(f"/api/models/{a2}/start", json={"keep_warm": True})
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "owner_limit"
    assert "MAX_RUNNING_PER_OWNER" in refused.get_json()["error"]["message"] and refused.headers["Retry-After"]
    answered = bob(f"/api/models/{b1}/infer", json=ECHO_BODY)
    assert answered.status_code == 200 and answered.get_json()["echo"] == ECHO_BODY


@pytest.mark.settings(max_running_containers=2, max_running_per_owner=2)
def test_pins_above_the_fair_share_give_way_to_an_owner_below_it(tenants, register_as):
    app, tokens = tenants
    alice, bob = as_user(app, tokens, "alice"), as_user(app, tokens, "bob")
    a1, a2, b1 = register_as("alice", "a1"), register_as("alice", "a2"), register_as("bob", "b1")
    for model_id in (a1, a2):
        assert alice(f"/api/models/{model_id}/start", json={"keep_warm": True}).status_code == 200
    assert bob(f"/api/models/{b1}/infer", json=ECHO_BODY).status_code == 200
    evicted = [m for m in (a1, a2) if any(kind == "evicted" for kind, _ in events_of(app, m))]
    assert evicted == [a1]  # the least recently used of alice's pins
    assert "fair share" in events_of(app, a1)[-1][1]
    # alice, now at her share, cannot take it back from bob's single slot
    again = alice(f"/api/models/{a1}/infer", json=ECHO_BODY)
    assert again.status_code == 503 and again.get_json()["error"]["code"] == "no_capacity"


@pytest.mark.settings(max_running_containers=2)
def test_an_admin_may_pin_beyond_the_owner_limit(tenants, register_as):
    app, tokens = tenants
    admin, bob = as_user(app, tokens, "admin"), as_user(app, tokens, "bob")
    a1, a2, b1 = register_as("alice", "a1"), register_as("alice", "a2"), register_as("bob", "b1")
    for model_id in (a1, a2):
        assert admin(f"/api/models/{model_id}/start", json={"keep_warm": True}).status_code == 200
    refused = bob(f"/api/models/{b1}/infer", json=ECHO_BODY)  # an admin's pins are never reclaimed
    assert refused.status_code == 503 and refused.get_json()["error"]["code"] == "no_capacity"
    assert not any(kind == "evicted" for m in (a1, a2) for kind, _ in events_of(app, m))


@pytest.mark.settings(max_running_containers=3, max_running_per_owner=3)
def test_the_owner_holding_most_slots_gives_one_up_first(tenants, register_as, monkeypatch):
    from inference_app.services import activity

    # alice's uses stay unwritten until a start writes them: eviction must not pass over her models
    # (and take bob's only slot) because their last use is newer than the flusher's last run
    monkeypatch.setattr(activity, "FLUSH_INTERVAL", 3600)
    app, tokens = tenants
    alice, bob, carol = (as_user(app, tokens, who) for who in ("alice", "bob", "carol"))
    b1 = register_as("bob", "b1")
    a1, a2 = register_as("alice", "a1"), register_as("alice", "a2")
    c1 = register_as("carol", "c1")
    assert bob(f"/api/models/{b1}/infer", json=ECHO_BODY).status_code == 200  # bob's is the oldest use
    for model_id in (a1, a2):
        assert alice(f"/api/models/{model_id}/infer", json=ECHO_BODY).status_code == 200
    assert carol(f"/api/models/{c1}/infer", json=ECHO_BODY).status_code == 200
    assert [kind for kind, _ in events_of(app, b1)] == ["started"]  # bob holds one slot: he keeps it
    assert "evicted" in [kind for kind, _ in events_of(app, a1)]
