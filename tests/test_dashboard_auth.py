"""The dashboard's sign-in: a token opens a session with the token's scope."""

import pytest
from conftest import ECHO

from inference_app.services import auth


@pytest.fixture
def tokens(app):
    auth.forget_cached_tokens()
    with app.app_context():
        _, admin = auth.create_token("admin", None, True)
        _, alice = auth.create_token("alice", "alice", False)
    yield {"admin": admin, "alice": alice}
    auth.forget_cached_tokens()


def sign_in(client, token):
    page = client.get("/login")
    csrf = page.get_data(as_text=True).split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return client.post("/login", data={"token": token, "next": "/", "csrf_token": csrf})


@pytest.mark.settings(auth_disabled=False)
def test_pages_need_a_session(client, tokens):
    response = client.get("/running")
    assert response.status_code == 302 and "/login?next=/running" in response.headers["Location"]
    htmx = client.get("/", headers={"HX-Request": "true"})
    assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/login")
    assert sign_in(client, "inf_nope").status_code == 401
    assert sign_in(client, tokens["alice"]).status_code == 303
    assert client.get("/running").status_code == 200


@pytest.mark.settings(auth_disabled=False)
def test_a_user_sees_only_their_models_and_no_kafka_log(client, register, tokens):
    mine = register(user_id="alice", model_name="mine", image=ECHO)
    theirs = register(user_id="bob", model_name="theirs", image=ECHO)
    sign_in(client, tokens["alice"])
    listing = client.get("/").get_data(as_text=True)
    assert "mine" in listing and "theirs" not in listing
    assert client.get(f"/models/{mine['id']}").status_code == 200
    assert client.get(f"/models/{theirs['id']}").status_code == 404
    assert client.get(f"/models/{theirs['id']}/row").status_code == 404
    events = client.get("/events").get_data(as_text=True)
    assert "Dead-lettered events" not in events and "shown to admins" in events


@pytest.mark.settings(auth_disabled=False)
def test_admin_sees_everything_and_can_sign_out(client, register, tokens):
    register(user_id="alice", model_name="mine", image=ECHO)
    register(user_id="bob", model_name="theirs", image=ECHO)
    sign_in(client, tokens["admin"])
    listing = client.get("/").get_data(as_text=True)
    assert "mine" in listing and "theirs" in listing
    page = client.get("/").get_data(as_text=True)
    csrf = page.split('"X-CSRFToken": "', 1)[1].split('"', 1)[0]
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/").status_code == 302
