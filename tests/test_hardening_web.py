"""Hostile callers of the API and the dashboard (issue 11, "API and web"), against the real parts.

Each test names the behaviour it shows; the README's security section maps threats to them.
The browser-side items (CSP, sandboxed model answers, the deployed dashboard) are in
test_hardening_browser.py.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import threading
import time

import pytest
import requests
from conftest import ECHO, SLOW, managed_containers, service_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_support import wait_for
from service_process import Processes
from sqlalchemy import event, func, select, text, update

from inference_app import instance_secret
from inference_app.extensions import db
from inference_app.models import DashboardSession, ServedModel, utcnow
from inference_app.services import auth, rate_limit


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(app):
    """An admin's and two users' tokens (plain, and their ids as NAME_id) on the app under test."""
    auth.forget_cached_tokens()
    made = {}
    with app.app_context():
        for name in ("admin", "alice", "bob"):
            row, plain = auth.create_token(name, None if name == "admin" else name, name == "admin")
            made[name], made[f"{name}_id"] = plain, row.id
    yield made
    auth.forget_cached_tokens()


def model_count(app) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).select_from(ServedModel))
        db.session.rollback()
        return count


# -- 1. starts are rate-limited like inference ------------------------------------------------------
@pytest.mark.settings(auth_disabled=False, rate_limit_per_minute=3)
def test_start_is_rate_limited_with_the_inference_budget(client, register, tokens):
    model = register(user_id="alice")
    alice = bearer(tokens["alice"])
    codes = [client.post(f"/api/models/{model['id']}/start", headers=alice).status_code for _ in range(3)]
    assert codes == [200, 200, 200]
    limited = client.post(f"/api/models/{model['id']}/start", headers=alice)
    assert limited.status_code == 429, limited.get_data(as_text=True)
    assert limited.get_json()["error"]["code"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
    # one budget for starts and inferences alike; another token has its own
    assert client.post(f"/api/models/{model['id']}/infer", json={}, headers=alice).status_code == 429
    assert client.post(f"/api/models/{model['id']}/start", headers=bearer(tokens["admin"])).status_code == 200
    sign_in(client, tokens["alice"])  # the dashboard's Start spends the same budget
    csrf = re.search(r'"X-CSRFToken": "([^"]+)"', client.get("/").get_data(as_text=True)).group(1)
    from_page = client.post(f"/models/{model['id']}/start", data={"csrf_token": csrf}, headers={"HX-Request": "true"})
    assert from_page.status_code == 429 and "requests a minute" in from_page.get_data(as_text=True)


# -- 2. inferences in flight per token ----------------------------------------------------------------
@pytest.mark.settings(auth_disabled=False, max_concurrent_inferences_per_token=2)
def test_concurrent_inferences_per_token_are_capped_with_retry_after(app, live_server, register, tokens):
    slow = register(user_id="alice", model_name="slow", image=SLOW)
    url = f"{live_server}/api/models/{slow['id']}/infer"
    alice = bearer(tokens["alice"])
    limiter = app.extensions[rate_limit.EXTENSION]
    key = f"token:{tokens['alice_id']}"
    answers: list[int] = []

    def hold() -> None:
        answers.append(requests.post(f"{url}?seconds=6", json={}, headers=alice, timeout=60).status_code)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for thread in holders:
        thread.start()
    wait_for(lambda: limiter.in_flight(key) == 2, 30, "two inferences never were in flight")
    refused = requests.post(url, json={}, headers=alice, timeout=30)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "too_many_in_flight" and refused.headers["Retry-After"] == "1"
    # the limit is per token: the admin's request goes through meanwhile
    assert requests.post(f"{url}?seconds=0", json={}, headers=bearer(tokens["admin"]), timeout=60).status_code == 200
    for thread in holders:
        thread.join(60)
    assert answers == [200, 200]
    assert limiter.in_flight(key) == 0
    assert requests.post(f"{url}?seconds=0", json={}, headers=alice, timeout=60).status_code == 200


# -- 3. API writes need JSON; cross-site simple requests are refused --------------------------------
REGISTRATION = json.dumps({"user_id": "mallory", "model_name": "planted", "image": ECHO})


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_api_writes_refuse_bodies_a_web_page_can_send_cross_site(app, client, content_type):
    """With AUTH_DISABLED=true (the suite's default), a page's text/plain POST would otherwise register a model."""
    response = client.post("/api/models", data=REGISTRATION, headers={"Content-Type": content_type})
    assert response.status_code == 415, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
    assert model_count(app) == 0
    assert client.post("/api/models", data=REGISTRATION, content_type="application/json").status_code == 201


def test_bodyless_writes_need_json_when_a_browser_sends_them(client, register, docker_client):
    model = register()
    start = f"/api/models/{model['id']}/start"
    # a page's fetch(url, {method: "POST", mode: "no-cors"}) carries an Origin header and no Content-Type
    for headers in ({"Origin": "https://attacker.example"}, {"Origin": "null"}):
        refused = client.post(start, headers=headers)
        assert refused.status_code == 415 and refused.get_json()["error"]["code"] == "unsupported_media_type"
    assert managed_containers(docker_client, model["id"]) == []
    # curl -X POST .../stop and scripts (no Origin, no body) keep working, as does JSON from anywhere
    assert client.post(start).status_code == 200
    assert (
        client.post(f"/api/models/{model['id']}/stop", json={}, headers={"Origin": "https://x.example"}).status_code
        == 200
    )


def test_infer_forwards_any_non_simple_content_type_and_simple_ones_only_with_a_custom_header(client, register):
    model = register()
    infer = f"/api/models/{model['id']}/infer"
    plain = client.post(infer, data=b"[1, 2]", headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415 and "X-Requested-With" in plain.get_json()["error"]["message"]
    form = client.post(infer, data=b"a=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    custom = client.post(infer, data=b"[1, 2]", headers={"Content-Type": "text/plain", "X-Requested-With": "curl"})
    assert custom.status_code == 200 and custom.get_json()["echo"] == [1, 2]
    for content_type in ("application/octet-stream", "text/csv", "application/json; charset=utf-8"):
        answer = client.post(infer, data=b"[3]", headers={"Content-Type": content_type})
        assert answer.status_code == 200, (content_type, answer.get_data(as_text=True))
        assert answer.get_json()["echo"] == [3]


# -- 6. and 7. headers: pages under a strict CSP; model answers sandboxed ---------------------------
PAGES = ["/", "/login", "/running", "/events", "/api/models", "/api/docs", "/api/openapi.json", "/healthz"]
PAGES += ["/metrics", "/static/dashboard.css", "/static/vendor/htmx.min.js", "/no-such-page", "/api/models/999"]
INLINE_CODE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=|hx-on|javascript:", re.I)


def test_every_response_carries_csp_frame_and_nosniff_headers(client, register):
    model = register()
    for path in [*PAGES, f"/models/{model['id']}", f"/models/{model['id']}/infer", f"/models/{model['id']}/row"]:
        response = client.get(path)
        policy = response.headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in policy and "script-src 'self'" in policy, (path, policy)
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
        assert "frame-ancestors 'none'" in policy and response.headers["X-Frame-Options"] == "DENY", path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        if response.mimetype == "text/html":  # nothing the policy would block: no inline code or styles
            assert INLINE_CODE.findall(response.get_data(as_text=True)) == [], path


def test_model_answers_are_sandboxed_and_never_sniffed(client, register):
    model = register()
    answer = client.post(f"/api/models/{model['id']}/infer", json={"x": 1})
    assert answer.status_code == 200 and answer.get_json()["echo"] == {"x": 1}
    assert answer.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    assert answer.headers["X-Content-Type-Options"] == "nosniff" and answer.headers["X-Frame-Options"] == "DENY"


# -- 4. odd input answers 400, never 500 --------------------------------------------------------------
ODD_QUERIES = [
    ("/api/models?page=%D9%A3", "page"),  # ARABIC-INDIC DIGIT THREE
    ("/api/models?page=%C2%B2", "page"),  # SUPERSCRIPT TWO: isdigit() but not int()
    ("/api/models?per_page=" + "9" * 5000, "per_page"),
    ("/api/models?page=99999999999999999999999999", "page"),
    ("/api/models?q=%00", "q"),
    ("/api/models?user_id=a%00b", "user_id"),
    ("/api/lifecycle-events?limit=%EF%BC%95", "limit"),  # FULLWIDTH DIGIT FIVE
    ("/api/lifecycle-events?model_id=%C2%B9", "model_id"),
    ("/api/events?limit=1e3", "limit"),
]


@pytest.mark.parametrize("path, field", ODD_QUERIES)
def test_odd_query_parameters_answer_400_naming_them(client, path, field):
    response = client.get(path)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["details"]["field"] == field


@pytest.mark.parametrize(
    "path", ["/?page=%C2%B2", "/?page=%D9%A3", "/?q=%00", "/events?before=%C2%B2", "/?page=" + "9" * 5000]
)
def test_odd_query_parameters_on_pages_answer_400(client, path):
    assert client.get(path).status_code == 400


def test_infer_with_a_nul_in_the_version_answers_400(client, register):
    model = register()
    assert client.post(f"/api/models/{model['id']}/infer?version=%00", json={}).status_code == 400


REGISTER = '{"user_id": "a", "model_name": "m", "image": "' + ECHO + '", '
ODD_BODIES = [
    ("[" * 20_000 + "]" * 20_000, "nested deeper"),
    (REGISTER + '"metadata": {"x": NaN}}', "NaN"),
    (REGISTER + '"metadata": {"x": -Infinity}}', "Infinity"),
    (REGISTER + '"cpus": 1e999}', "too large"),
    (REGISTER + '"metadata": {"n": ' + "7" * 5000 + "}}", "not valid JSON"),
    (REGISTER + '"metadata": {"x": "a\\u0000b"}}', "NUL"),
    (REGISTER + '"metadata": {"\\ud800": 1}}', "surrogate"),
]


@pytest.mark.parametrize(
    "body, words", ODD_BODIES, ids=["deep", "nan", "infinity", "huge-float", "huge-int", "nul", "surrogate"]
)
def test_odd_json_bodies_answer_400(app, client, body, words):
    response = client.post("/api/models", data=body, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert words in response.get_json()["error"]["message"]
    assert model_count(app) == 0


def test_invalid_utf8_answers_400(client, register):
    model = register()
    raw = b'{"user_id": "a", "model_name": "m\xff\xfe", "image": "x"}'
    assert client.post("/api/models", data=raw, content_type="application/json").status_code == 400
    assert (
        client.post(
            f"/api/models/{model['id']}/start", data=b'{"keep_warm": "\xc3"}', content_type="application/json"
        ).status_code
        == 400
    )
    assert client.get("/api/models?q=%ff%fe").status_code == 200  # undecodable query bytes are replaced, not fatal
    assert client.get("/api/models/%ff").status_code == 404


ODD_CHARS = ["\x00", "\u0663", "\u00b2", "\uff15", "9", "-", ".", "e", "\n", "\u2028", "%", "\\", '"']
DIGITISH = st.text(
    st.sampled_from(["0", "7", "9", "\u0663", "\u00b2", "\u00b9", "\uff15", "\u0e53"]), min_size=1, max_size=30
)
ODD_TEXT = st.text(st.sampled_from(ODD_CHARS) | st.characters(codec="utf-8"), max_size=24)
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | NON_FINITE | st.integers() | ODD_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    name=st.sampled_from(["page", "per_page", "q", "user_id", "status", "limit"]),
    value=DIGITISH | ODD_TEXT | st.integers().map(str),
    metadata=st.dictionaries(ODD_TEXT, JSON_VALUES, min_size=1, max_size=4),
    raw=st.binary(max_size=64),
)
def test_no_odd_query_or_body_is_a_server_error(client, name, value, metadata, raw):
    """Generated: odd characters and numbers in query parameters, NaN/Infinity/NUL/odd text in a registration."""
    for path in ("/api/models", "/api/lifecycle-events", "/", "/events"):
        response = client.get(path, query_string={name: value})
        assert response.status_code in (200, 400), (path, name, value, response.get_data(as_text=True)[:200])
    registration = {"user_id": "fuzz", "model_name": "odd", "image": ECHO, "metadata": metadata}
    registered = client.post("/api/models", data=json.dumps(registration), content_type="application/json")
    assert registered.status_code in (200, 201, 400), (metadata, registered.get_data(as_text=True)[:200])
    garbage = client.post("/api/models", data=raw, content_type="application/json")
    assert garbage.status_code == 400, (raw, garbage.get_data(as_text=True)[:200])


# -- 5. the dashboard's session cookie and server-side sessions ---------------------------------------
def sign_in(client, token: str):
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    return client.post("/login", data={"token": token, "next": "/", "csrf_token": csrf})


def sign_out(client) -> None:
    csrf = re.search(r'"X-CSRFToken": "([^"]+)"', client.get("/").get_data(as_text=True)).group(1)
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303


@pytest.mark.settings(auth_disabled=False)
def test_session_cookie_is_httponly_and_samesite_lax(client, tokens):
    signed_in = sign_in(client, tokens["alice"])
    cookie = signed_in.headers["Set-Cookie"]
    assert signed_in.status_code == 303
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert tokens["alice"] not in cookie and auth.hash_token(tokens["alice"]) not in cookie


@pytest.mark.settings(auth_disabled=False, session_cookie_secure=True)
def test_session_cookie_is_secure_when_configured(client, tokens):
    cookie = sign_in(client, tokens["alice"]).headers["Set-Cookie"]
    assert "; Secure" in cookie and "SameSite=Lax" in cookie


@pytest.mark.settings(auth_disabled=False)
def test_a_cookie_replayed_after_logout_is_refused(app, tokens):
    victim = app.test_client()
    sign_in(victim, tokens["alice"])
    assert victim.get("/").status_code == 200
    stolen = victim.get_cookie("session").value
    thief = app.test_client()
    thief.set_cookie("session", stolen)
    assert thief.get("/").status_code == 200  # a copy works while the session lives...
    sign_out(victim)
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    refused = replay.get("/running")
    assert refused.status_code == 302 and "/login" in refused.headers["Location"]  # ...and not after sign-out
    assert thief.get("/").status_code == 302


@pytest.mark.settings(auth_disabled=False, session_lifetime_seconds=600)
def test_sessions_end_after_their_lifetime(app, client, tokens):
    sign_in(client, tokens["alice"])
    assert client.get("/").status_code == 200
    with app.app_context():
        [row] = db.session.scalars(select(DashboardSession)).all()
        assert (row.expires_at - row.created_at).total_seconds() == 600
        db.session.execute(update(DashboardSession).values(expires_at=utcnow()))  # as if 600 s had passed
        db.session.commit()
    assert client.get("/").status_code == 302
    assert app.permanent_session_lifetime.total_seconds() == 600  # the cookie's own expiry agrees


def test_migrations_upgrade_and_downgrade_on_sqlite(tmp_path, docker_client):
    """`flask db upgrade` (the CLI) builds the schema with dashboard_sessions on SQLite; PostgreSQL: the database fixture."""
    sqlite = {"database_url": f"sqlite:///{tmp_path}/m.db", "run_background": "worker", "TESTING": True}
    from inference_app import create_app

    app = create_app(sqlite)
    runner = app.test_cli_runner()
    for args in (["db", "upgrade"], ["db", "downgrade", "0005"], ["db", "upgrade"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 0, (args, result.output, result.exception)
    with app.app_context():
        tables = {r[0] for r in db.session.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))}
        assert "dashboard_sessions" in tables
        db.engine.dispose()


# -- 8. log lines cannot be forged -------------------------------------------------------------------
def test_control_characters_in_a_path_cannot_forge_a_log_line(tmp_path, database):
    processes = Processes(tmp_path)
    try:
        web = processes.web(service_env(log_json="false", web_concurrency="1"))
        base = web.base
        forged = "2026-01-01 00:00:00,000 INFO [1] inference_app.requests: GET /admin 200"
        for raw in (
            "%0a" + forged.replace(" ", "%20"),
            "%0d%0a" + "FORGED%20CRLF",
            "%e2%80%a8FORGED%20LS",
            "%1b[31mRED",
        ):
            requests.get(f"{base}/api/models{raw}", timeout=10)
        wait_for(lambda: "RED" in web.log(), 10, "the last request was never logged")
        lines = web.log().splitlines()
        assert not any(line.startswith(("2026-01-01", "FORGED")) for line in lines)
        assert not any("\u2028" in line or "\x1b" in line for line in lines)
        logged = [line for line in lines if "inference_app.requests: GET /api/models" in line]
        assert len(logged) == 4, lines[-10:]
        assert "/api/models\\n2026-01-01 00:00:00,000 INFO" in logged[0]
        assert "/api/models\\r\\nFORGED CRLF" in logged[1] and "\\u2028FORGED" in logged[2]
    finally:
        processes.stop_all()


# -- 9. /metrics behind METRICS_TOKEN -------------------------------------------------------------------
@pytest.mark.settings(metrics_token="scrape-only-secret")
def test_metrics_need_the_metrics_token_when_it_is_set(client):
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "inference_containers" not in refused.get_data(as_text=True)
    assert client.get("/metrics", headers=bearer("wrong")).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Basic c2NyYXBlLW9ubHktc2VjcmV0"}).status_code == 401
    allowed = client.get("/metrics", headers=bearer("scrape-only-secret"))
    assert allowed.status_code == 200 and "inference_containers_cap" in allowed.get_data(as_text=True)


def test_metrics_are_open_without_a_metrics_token(client):
    assert client.get("/metrics").status_code == 200


# -- 10. the secret key file is created once, whoever starts first --------------------------------------
def _slow_create_then_key(folder: str, barrier, results) -> None:
    """A worker starting: files it creates stay empty for a moment (a slow disk), then it reads the key."""
    real_open = os.open

    def slow_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_CREAT:
            time.sleep(0.05)
        return fd

    os.open = slow_open
    barrier.wait()
    try:
        results.put(("ok", instance_secret(folder)))
    except Exception as exc:  # the test reports it
        results.put(("error", repr(exc)))


def test_workers_starting_together_agree_on_one_secret_key(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = 6
    for attempt in range(5):
        folder = str(tmp_path / f"instance{attempt}")
        barrier, results = context.Barrier(workers), context.Queue()
        procs = [context.Process(target=_slow_create_then_key, args=(folder, barrier, results)) for _ in range(workers)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(30)
        assert all(kind == "ok" for kind, _ in outcomes), outcomes
        keys = {key for _, key in outcomes}
        assert len(keys) == 1 and len(keys.pop()) == 64, outcomes
        with open(os.path.join(folder, "secret_key")) as handle:
            assert handle.read() == outcomes[0][1]
        assert os.listdir(folder) == ["secret_key"]  # no drafts left behind
        assert oct(os.stat(os.path.join(folder, "secret_key")).st_mode & 0o777) == "0o600"


# -- 11. unknown tokens cannot push valid ones out of the cache ------------------------------------------
@pytest.mark.settings(auth_disabled=False)
def test_a_flood_of_unknown_tokens_does_not_evict_valid_ones(app, tokens, monkeypatch):
    queries: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        if "api_tokens" in statement:
            queries.append(statement)

    monkeypatch.setattr(auth, "clock", lambda: 1000.0)  # the flood takes seconds; expiry is not what is tested
    with app.app_context():
        assert auth.authenticate(f"Bearer {tokens['alice']}").user_id == "alice"
        flood = 10_050  # more than any cache size: the old shared cache was cleared at 10,000
        for i in range(flood):
            assert auth.principal_for_token(f"inf_made-up-{i}") is None
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            assert auth.authenticate(f"Bearer {tokens['alice']}").user_id == "alice"
            assert queries == []  # answered from the cache: the flood did not push it out
            assert auth.principal_for_token("inf_made-up-another") is None and len(queries) == 1
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
