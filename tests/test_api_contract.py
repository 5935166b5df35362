"""The OpenAPI document matches the real routes, and no generated request produces a 500."""

import re

import pytest
import schemathesis
from conftest import built_app
from hypothesis import HealthCheck, settings

from inference_app.services import auth

DOCUMENTED_BLUEPRINTS = ("api.", "health.")


def test_every_route_is_described(app, client):
    spec = client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith(DOCUMENTED_BLUEPRINTS):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if method.lower() not in spec["paths"].get(path, {}):
                missing.append(f"{method} {path}")
    assert missing == []
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    routed = {
        (m, re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", r.rule))
        for r in app.url_map.iter_rules()
        for m in r.methods - {"HEAD", "OPTIONS"}
    }
    assert described <= routed, described - routed


def test_docs_page_lists_the_operations(client):
    page = client.get("/api/docs")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "POST /api/models/{model_id}/infer" in text and "Authorization: Bearer" in text


@pytest.fixture
def fuzz_target(database, docker_client):
    with built_app(docker_client, auth_disabled=False, start_timeout_seconds=3.0) as app:
        auth.forget_cached_tokens()
        with app.app_context():
            _, token = auth.create_token("fuzz admin", None, True)
        app.config["FUZZ_TOKEN"] = token
        yield app
        auth.forget_cached_tokens()


@pytest.fixture
def api_schema(fuzz_target):
    return schemathesis.openapi.from_wsgi("/api/openapi.json", fuzz_target)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_is_a_server_error(case, fuzz_target):
    response = case.call(headers={"Authorization": f"Bearer {fuzz_target.config['FUZZ_TOKEN']}"})
    assert response.status_code < 500 or response.status_code in (502, 503, 504), (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if response.status_code >= 500:
        assert response.json()["error"]["code"] in (
            "image_not_found",
            "container_failed",
            "engine_unavailable",
            "no_capacity",
            "start_timeout",
        )
