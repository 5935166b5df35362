"""The API and the dashboard share their paths: one owner-scoping rule for events, one way in for an inference."""

from __future__ import annotations

import re

import pytest
from conftest import ECHO, built_app

from inference_app.extensions import db
from inference_app.models import ModelEvent
from inference_app.services import auth

RATE = 3


@pytest.fixture
def secured(database, docker_client):
    with built_app(docker_client, auth_disabled=False, rate_limit_per_minute=RATE) as app:
        auth.forget_cached_tokens()
        with app.app_context():
            tokens = {
                name: auth.create_token(name, None if name == "admin" else name, name == "admin")[1]
                for name in ("admin", "alice", "bob")
            }
        yield app, tokens
        auth.forget_cached_tokens()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def signed_in(app, token: str):
    """A dashboard client with a session for this token, and its CSRF token."""
    client = app.test_client()
    form = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    assert client.post("/login", data={"token": token, "next": "/", "csrf_token": csrf}).status_code == 303
    page = client.get("/events").get_data(as_text=True)
    return client, re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)


def register(client, token: str, **fields) -> dict:
    response = client.post("/api/models", json={"image": ECHO, **fields}, headers=bearer(token))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_events_are_scoped_by_one_rule_in_the_api_and_the_dashboard(secured):
    app, tokens = secured
    api = app.test_client()
    mine = register(api, tokens["alice"], user_id="alice", model_name="mine")
    theirs = register(api, tokens["bob"], user_id="bob", model_name="theirs")
    with app.app_context():
        for model_id, detail in ((mine["id"], "alice-started"), (theirs["id"], "bob-started"), (None, "no-model")):
            db.session.add(ModelEvent(model_id=model_id, kind="started", detail=detail))
        db.session.commit()

    def api_details(token: str, query: str = "") -> set[str]:
        response = api.get(f"/api/lifecycle-events{query}", headers=bearer(token))
        assert response.status_code == 200
        return {item["detail"] for item in response.get_json()["items"]}

    def page_details(token: str) -> set[str]:
        client, _csrf = signed_in(app, token)
        html = client.get("/events").get_data(as_text=True)
        return set(re.findall(r'class="detail">([^<]*)</td>', html))

    assert api_details(tokens["alice"]) == page_details(tokens["alice"]) == {"alice-started"}
    assert api_details(tokens["bob"]) == page_details(tokens["bob"]) == {"bob-started"}
    everything = {"alice-started", "bob-started", "no-model"}
    assert api_details(tokens["admin"]) == page_details(tokens["admin"]) == everything
    assert api_details(tokens["alice"], f"?model_id={theirs['id']}") == set()
    assert api_details(tokens["admin"], f"?model_id={theirs['id']}") == {"bob-started"}
    own = api.get(f"/api/models/{mine['id']}/lifecycle-events", headers=bearer(tokens["alice"])).get_json()
    assert [item["detail"] for item in own["items"]] == ["alice-started"]


def test_the_dashboards_infer_shares_the_apis_rate_limit_and_keeps_its_version(secured):
    app, tokens = secured
    api = app.test_client()
    first = register(api, tokens["alice"], user_id="alice", model_name="m", version="1", env={"MODEL_LABEL": "first"})
    register(api, tokens["alice"], user_id="alice", model_name="m", version="2", env={"MODEL_LABEL": "second"})
    dashboard, csrf = signed_in(app, tokens["alice"])

    def infer_on_page(n: int):
        return dashboard.post(
            f"/models/{first['id']}/infer",
            data={"body": f'{{"n": {n}}}', "csrf_token": csrf},
            headers={"HX-Request": "true"},
        )

    answered = infer_on_page(1)
    assert answered.status_code == 200
    assert "&#34;model&#34;: &#34;first&#34;" in answered.get_data(as_text=True)  # version 1, not the newest
    assert api.post(f"/api/models/{first['id']}/infer", json={}, headers=bearer(tokens["alice"])).status_code == 200
    assert infer_on_page(3).status_code == 200
    limited = infer_on_page(4)
    assert limited.status_code == 429
    assert f"more than {RATE} requests a minute" in limited.get_data(as_text=True)
    api_limited = api.post(f"/api/models/{first['id']}/infer", json={}, headers=bearer(tokens["alice"]))
    assert api_limited.status_code == 429
    other = api.post(f"/api/models/{first['id']}/infer", json={}, headers=bearer(tokens["admin"]))
    assert other.status_code == 200  # a bucket per token
