"""The HTML dashboard through Flask's test client: pages, partials, htmx conventions, escaping, CSRF.

Real PostgreSQL and Docker, like the rest of the suite; the browser tests drive the same
pages through Chromium (test_browser.py).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from conftest import ECHO, NEVER_HEALTHY, managed_containers
from waiting import wait_for

from inference_app.dashboard.chart import inference_chart
from inference_app.dashboard.formatting import duration, pretty_json
from inference_app.dashboard.model_state import QUEUED, progress_of
from inference_app.extensions import db
from inference_app.models import DeadLetter, IngestedEvent, ServedModel
from inference_app.services.insights import InferenceHistory, MinuteStat

HX = {"HX-Request": "true"}
MISSING_IMAGE = "registry.example/nobody/missing:9"


def csrf_token(client) -> str:
    html = client.get("/events").get_data(as_text=True)
    return re.search(r'"X-CSRFToken": "([^"]+)"', html).group(1)


def post(client, url: str, token: str | None, htmx: bool = True, **form):
    data = dict(form)
    if token is not None:
        data["csrf_token"] = token
    return client.post(url, data=data, headers=HX if htmx else {})


def wait_for_row(client, model_id: int, status: str, timeout: float = 30.0, since: str = "") -> str:
    def row() -> str | None:
        html = client.get(f"/models/{model_id}/row{since}", headers=HX).get_data(as_text=True)
        return html if f"badge-{status}" in html else None

    return wait_for(row, timeout, f"model {model_id} never became {status}", interval=0.2)


def api_status(client, model_id: int) -> str:
    return client.get(f"/api/models/{model_id}").get_json()["status"]


# -- pages and partials ---------------------------------------------------------------------------
def test_models_page_and_its_partial(client, register):
    register(model_name="sentiment", version="3", user_id="bob")
    register(model_name="echo")
    page = client.get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "HX-Request" in page.headers["Vary"]
    assert html.startswith("<!doctype html>") and 'src="/static/vendor/htmx.min.js"' in html
    for text in ("sentiment", "bob", ECHO, "badge-stopped", "2 models", 'action="/models/1/start"'):
        assert text in html
    assert "every 1s" not in html  # nothing is changing, so nothing polls

    partial = client.get("/?q=sent", headers=HX)
    body = partial.get_data(as_text=True)
    assert partial.status_code == 200 and "HX-Request" in partial.headers["Vary"]
    assert body.startswith('<section id="models"') and "<html" not in body
    assert "sentiment" in body and "/models/2" not in body

    restore = client.get("/", headers={**HX, "HX-History-Restore-Request": "true"})
    assert restore.get_data(as_text=True).startswith("<!doctype html>")


def test_search_owner_status_and_pages(client, register):
    for i in range(23):
        register(model_name=f"m{i:02d}")
    register(model_name="zeta", user_id="bob")
    first = client.get("/").get_data(as_text=True)
    assert "24 models · page 1 of 2" in first and 'href="/?page=2"' in first
    second = client.get("/?q=m&page=2").get_data(as_text=True)
    assert "m00" in second and "m20" not in second and 'href="/?q=m"' in second  # Previous keeps the search
    narrowed = client.get("/?q=m1", headers=HX).get_data(as_text=True)
    assert "10 models" in narrowed and "m19" in narrowed and "m20" not in narrowed
    owned = client.get("/?user_id=bob", headers=HX).get_data(as_text=True)
    assert "1 model" in owned and "zeta" in owned and "m01" not in owned
    none = client.get("/?status=running", headers=HX).get_data(as_text=True)
    assert "No model matches this search" in none


def test_bad_filters_are_explained_next_to_the_form(client):
    page = client.get("/?status=bogus&q=x")
    html = page.get_data(as_text=True)
    assert page.status_code == 400
    assert "status must be one of stopped, starting, running, stopping, failed" in html
    assert 'id="q"' in html and 'value="x"' in html  # the form is still there, with the search
    assert client.get("/?page=zero", headers=HX).status_code == 400
    events = client.get("/events?kind=nonsense")
    assert events.status_code == 400 and "kind must be one of" in events.get_data(as_text=True)


def test_unknown_model_is_a_page_not_json_and_never_a_traceback(client):
    page = client.get("/models/999")
    html = page.get_data(as_text=True)
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "no model with id 999" in html and "Traceback" not in html
    partial = client.get("/models/999/row", headers=HX)
    assert partial.status_code == 404
    assert partial.headers["HX-Retarget"] == "#notices"
    assert "no model with id 999" in partial.get_data(as_text=True)


def test_model_supplied_strings_are_escaped(client, register):
    model = register(
        model_name="xss",
        metadata={
            "description": "<script>alert('d')</script>",
            "<img src=x onerror=alert(1)>": "key",
            "example_request": {"text": "</textarea><script>alert(2)</script>"},
        },
    )
    for url in ("/", f"/models/{model['id']}", f"/models/{model['id']}/infer"):
        html = client.get(url).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html and "</textarea><script>" not in html, url
    detail = client.get(f"/models/{model['id']}").get_data(as_text=True)
    assert "&lt;script&gt;alert(&#39;d&#39;)&lt;/script&gt;" in detail
    assert "&lt;img src=x onerror=alert(1)&gt;" in detail


# -- CSRF ----------------------------------------------------------------------------------------
def test_mutations_without_a_csrf_token_are_refused(app, client, register, docker_client):
    assert app.config["TESTING"] is True  # flask-wtf checks tokens in tests too
    model = register()
    for url in (f"/models/{model['id']}/start", f"/models/{model['id']}/infer", f"/models/{model['id']}/stop"):
        refused = post(client, url, None, htmx=False, body="{}")
        assert refused.status_code == 400, url
        assert "was refused" in refused.get_data(as_text=True)
    as_htmx = post(client, f"/models/{model['id']}/start", None)
    assert as_htmx.status_code == 400 and as_htmx.headers["HX-Retarget"] == "#notices"
    wrong = post(client, f"/models/{model['id']}/start", "not-a-token")
    assert wrong.status_code == 400
    assert api_status(client, model["id"]) == "stopped"
    assert managed_containers(docker_client, model["id"]) == []

    token = csrf_token(client)
    by_header = client.post(f"/models/{model['id']}/stop", headers={**HX, "X-CSRFToken": token})
    assert by_header.status_code == 200  # htmx sends the token from <body hx-headers>


# -- Start, Stop, progress -----------------------------------------------------------------------
def test_start_polls_its_row_until_running_then_stop(client, register, docker_client):
    model = register()
    token = csrf_token(client)
    started = post(client, f"/models/{model['id']}/start", token, fragment="row")
    row = started.get_data(as_text=True)
    assert started.status_code == 200 and "HX-Request" in started.headers["Vary"]
    assert row.startswith(f'<tr id="model-{model["id"]}"')
    if "badge-starting" in row:
        assert "every 1s" in row and "since=" in row
    since = re.search(r"/row\?since=([0-9.]+)", row)
    running = wait_for_row(client, model["id"], "running", since=f"?since={since.group(1)}" if since else "")
    assert "every 1s" not in running  # a final state: polling stops
    host_port = client.get(f"/api/models/{model['id']}").get_json()["host_port"]
    assert f">{host_port}<" in running and ">Stop</button>" in running and "in 4 min" in running

    stopped = post(client, f"/models/{model['id']}/stop", token, fragment="row").get_data(as_text=True)
    assert "badge-stopped" in stopped and ">Start</button>" in stopped and "every 1s" not in stopped
    assert managed_containers(docker_client, model["id"]) == []


@pytest.mark.settings(start_timeout_seconds=3.0)
def test_start_progress_shows_the_phase_then_the_failure_in_words(client, register):
    model = register(image=NEVER_HEALTHY)
    token = csrf_token(client)
    row = post(client, f"/models/{model['id']}/start", token, fragment="row").get_data(as_text=True)
    since = "?since=" + re.search(r"/row\?since=([0-9.]+)", row).group(1)

    def waiting_row() -> str | None:
        html = client.get(f"/models/{model['id']}/row{since}", headers=HX).get_data(as_text=True)
        return html if "waiting for /health to answer" in html else None

    if "waiting for /health to answer" not in row:
        row = wait_for(waiting_row, 10, "the row never showed the health-check phase")
    assert "badge-starting" in row and "every 1s" in row and re.search(r"answer · \d", row)
    failed = wait_for_row(client, model["id"], "failed", since=since)
    assert "every 1s" not in failed and 'class="error-inline"' in failed and "Traceback" not in failed


def test_failed_start_of_a_missing_image_is_explained_in_its_row(client, register):
    model = register(image=MISSING_IMAGE)
    token = csrf_token(client)
    post(client, f"/models/{model['id']}/start", token, fragment="row")
    failed = wait_for_row(client, model["id"], "failed")
    assert f"image {MISSING_IMAGE} not found on this Docker host" in failed


def test_start_and_stop_work_without_javascript(client, register):
    model = register()
    token = csrf_token(client)
    started = post(client, f"/models/{model['id']}/start", token, htmx=False, next="/?q=ec")
    assert started.status_code == 303 and started.headers["Location"] == "/?q=ec"
    back = client.get("/?q=ec").get_data(as_text=True)
    assert "alice/echo:1 is starting." in back or "alice/echo:1 is running." in back
    wait_for_row(client, model["id"], "running")
    offsite = post(client, f"/models/{model['id']}/stop", token, htmx=False, next="//evil.example/")
    assert offsite.status_code == 303 and offsite.headers["Location"] == f"/models/{model['id']}"
    assert api_status(client, model["id"]) == "stopped"


# -- Infer ---------------------------------------------------------------------------------------
def test_infer_panel_is_prefilled_with_the_models_example(client, register):
    example = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    with_example = register(model_name="iris", metadata={"example_request": example})
    without = register(model_name="plain")
    panel = client.get(f"/models/{with_example['id']}/infer", headers=HX).get_data(as_text=True)
    assert panel.startswith("<section") and "<html" not in panel and ">Close</button>" in panel
    textarea = re.search(r"<textarea[^>]*>(.*?)</textarea>", panel, re.S).group(1)
    assert json.loads(textarea.replace("&#34;", '"')) == example
    detail = client.get(f"/models/{with_example['id']}").get_data(as_text=True)
    assert re.search(r"<textarea[^>]*>\{\n  &#34;instances&#34;: \[\[5.1, 3.5, 1.4, 0.2\]\]\n\}</textarea>", detail)
    plain = client.get(f"/models/{without['id']}/infer").get_data(as_text=True)
    assert plain.startswith("<!doctype html>") and re.search(r"<textarea[^>]*>\{\}</textarea>", plain)


def test_infer_shows_the_answer_escaped_with_status_latency_and_cold_start(client, register):
    model = register()
    token = csrf_token(client)
    url = f"/models/{model['id']}/infer"
    first = post(client, url, token, body='{"text": "<b>hi</b>"}')
    html = first.get_data(as_text=True)
    assert first.status_code == 200 and first.headers["HX-Trigger"] == f"model-{model['id']}-changed"
    assert "&lt;b&gt;hi&lt;/b&gt;" in html and "<b>hi</b>" not in html
    assert "{\n  &#34;echo&#34;: {&#34;text&#34;" in html  # pretty-printed
    assert ">200</span> OK" in html and re.search(r"<dt>Latency</dt><dd>[\d,]+ ms</dd>", html)
    assert "<dt>Cold start</dt><dd>yes: waited" in html
    second = post(client, url, token, body='{"n": 2}').get_data(as_text=True)
    assert "<dt>Cold start</dt><dd>no</dd>" in second and "&#34;n&#34;: 2" in second
    assert "badge-running" in client.get(f"/models/{model['id']}/row", headers=HX).get_data(as_text=True)

    page = post(client, url, token, htmx=False, body='{"n": 3}')
    assert page.status_code == 200 and "<!doctype html>" in page.get_data(as_text=True)
    assert "&#34;n&#34;: 3" in page.get_data(as_text=True)


def test_infer_refuses_invalid_json_before_starting_anything(client, register, docker_client):
    model = register()
    answer = post(client, f"/models/{model['id']}/infer", csrf_token(client), body='{"a": ')
    html = answer.get_data(as_text=True)
    assert answer.status_code == 400
    assert "the request body is not valid JSON: Expecting value (line 1, column 7)" in html
    assert managed_containers(docker_client, model["id"]) == []


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("[" * 5_000 + "]" * 5_000, "nested too deeply"),
        ('{"n": ' + "7" * 5000 + "}", "not valid JSON"),
    ],
    ids=["deep", "huge-int"],
)
def test_infer_refuses_json_python_cannot_read_with_400_not_500(client, register, body, said):
    model = register()
    answer = post(client, f"/models/{model['id']}/infer", csrf_token(client), body=body)
    assert answer.status_code == 400 and said in answer.get_data(as_text=True)


def test_an_answer_too_deep_to_lay_out_is_shown_as_it_came(client, register):
    model = register()  # the echo model answers {"echo": <the body>}
    deep = "[" * 900 + "]" * 900
    answer = post(client, f"/models/{model['id']}/infer", csrf_token(client), body=deep)
    assert answer.status_code == 200 and deep in answer.get_data(as_text=True)


def test_infer_errors_are_shown_in_the_panel_in_plain_words(client, register):
    model = register(image=MISSING_IMAGE)
    answer = post(client, f"/models/{model['id']}/infer", csrf_token(client), body="{}")
    html = answer.get_data(as_text=True)
    assert answer.status_code == 502
    assert f"image {MISSING_IMAGE} not found on this Docker host" in html
    assert "No answer." in html and "Traceback" not in html and "HX-Retarget" not in answer.headers


# -- detail, running, events -----------------------------------------------------------------------
def test_model_detail_shows_container_chart_and_events(client, register):
    model = register(memory="96m", cpus=0.5, env={"SECRET_TOKEN": "hunter2"}, metadata={"team": "search"})
    for n in range(3):
        response = client.post(f"/api/models/{model['id']}/infer", json={"n": n})
        assert response.status_code == 200
    shown = client.get(f"/api/models/{model['id']}").get_json()
    # The counters reach the database off the hot path, twice a second. (At least: a previous
    # test's late flush may add to model 1's counters, as ids restart with every test.)
    requests_shown = re.compile(r"<dt>Requests</dt><dd>([3-9])</dd>")

    def page() -> str | None:
        html = client.get(f"/models/{model['id']}").get_data(as_text=True)
        return html if requests_shown.search(html) else None

    html = wait_for(page, 5, "the detail page never showed the requests", interval=0.2)
    assert shown["container_id"][:12] in html and f":{shown['host_port']}</code>" in html
    assert "<dd>96 MiB</dd>" in html and "<dd>0.5</dd>" in html and "<dd>256</dd>" in html
    assert "SECRET_TOKEN" in html and "hunter2" not in html  # names only
    assert "search" in html and "badge-running" in html and "Up for" in html
    assert requests_shown.search(html) and '<rect class="bar"' in html and "kind-started" in html

    live = client.get(f"/models/{model['id']}", headers=HX)
    assert live.get_data(as_text=True).startswith('<div id="model-live"') and "HX-Request" in live.headers["Vary"]
    stopped = post(client, f"/models/{model['id']}/stop", csrf_token(client), fragment="live").get_data(as_text=True)
    assert stopped.startswith('<div id="model-live"') and "badge-stopped" in stopped
    assert "No container" in stopped


@pytest.mark.settings(max_running_containers=1)
def test_running_view_shows_capacity_and_evictions(client, register):
    first = register(model_name="first")
    second = register(model_name="second")
    assert client.post(f"/api/models/{first['id']}/start").status_code == 200
    assert client.post(f"/api/models/{second['id']}/start").status_code == 200  # evicts the first
    page = client.get("/running").get_data(as_text=True)
    assert "<strong>1</strong> of <strong>1</strong> container slots in use" in page
    assert f'id="model-{second["id"]}"' in page and f'id="model-{first["id"]}"' not in page
    assert "kind-evicted" in page and f"made room for model {second['id']}" in page
    assert f'href="/models/{first["id"]}">alice/first:1</a>' in page
    partial = client.get("/running", headers=HX).get_data(as_text=True)
    assert partial.startswith('<div id="running"') and "every 5s" in partial


def test_events_view_lists_lifecycle_events_and_what_came_from_kafka(app, client, register):
    model = register()
    client.post(f"/api/models/{model['id']}/start")
    client.post(f"/api/models/{model['id']}/stop")
    empty = client.get("/events").get_data(as_text=True)
    assert "No event has come from Kafka yet." in empty and "No event from Kafka has been refused." in empty
    with app.app_context():  # what the Kafka listener records (inference_app.events.ingest)
        db.session.add(
            IngestedEvent(
                event_id="e1",
                kind="model.uploaded",
                outcome="applied",
                user_id="alice",
                model_name="echo",
                version="1",
                model_id=model["id"],
                topic="models",
                partition=0,
                offset=7,
            )
        )
        db.session.add(
            DeadLetter(
                topic="models",
                partition=0,
                offset=8,
                reason="image must be a Docker image reference",
                payload='{"image": "<script>alert(1)</script>"}',
                payload_bytes=39,
            )
        )
        db.session.commit()
    page = client.get("/events").get_data(as_text=True)
    assert "kind-started" in page and "kind-stopped" in page
    assert f'<a href="/models/{model["id"]}">alice/echo:1</a>' in page and "outcome-applied" in page
    assert "image must be a Docker image reference" in page and "Payload (39 bytes)" in page
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    started = client.get("/events?kind=started", headers=HX).get_data(as_text=True)
    assert started.startswith('<section id="events"') and "kind-started" in started and "kind-stopped" not in started


def test_htmx_is_vendored_not_fetched_from_a_cdn(client):
    script = client.get("/static/vendor/htmx.min.js")
    assert script.status_code == 200 and b"htmx" in script.data[:200]
    html = client.get("/").get_data(as_text=True)
    assert not re.search(r'<script[^>]+src="(https?:)?//', html)


# -- pure parts --------------------------------------------------------------------------------------
NOW = datetime(2025, 1, 1, 12, 0, 30, tzinfo=UTC)


def _model(status: str, changed_s_ago: float, last_error: str | None = None) -> ServedModel:
    return ServedModel(status=status, status_changed_at=NOW - timedelta(seconds=changed_s_ago), last_error=last_error)


def test_progress_polls_only_while_the_state_is_changing():
    phase = lambda m: "creating the container"  # noqa: E731
    asked = (NOW - timedelta(seconds=2)).timestamp()
    starting = progress_of(_model("starting", 3), asked, NOW, phase, 60)
    assert starting.polling and starting.phase == "creating the container" and starting.elapsed_s == 3
    assert progress_of(_model("stopping", 1), None, NOW, lambda m: "stopping", 60).polling
    assert not progress_of(_model("running", 1), asked, NOW, phase, 60).polling
    failed = progress_of(_model("failed", 1, "image x not found"), asked, NOW, phase, 60)
    assert not failed.polling and failed.error == "image x not found"
    queued = progress_of(_model("stopped", 100), asked, NOW, phase, 60)
    assert queued.polling and queued.phase == QUEUED
    assert not progress_of(_model("stopped", 100), asked, NOW, phase, 1).polling  # gave up waiting
    gone = progress_of(_model("stopped", 1, "Docker engine unreachable"), asked, NOW, phase, 60)
    assert not gone.polling and gone.error == "Docker engine unreachable"
    assert progress_of(_model("stopped", 100, "old error"), None, NOW, phase, 60).error is None


def test_chart_geometry_scales_bars_and_latency():
    start = NOW.replace(second=0) - timedelta(minutes=2)
    minutes = [
        MinuteStat(start, 4, 0, 1, 20.0, 40),
        MinuteStat(start + timedelta(minutes=1), 0, 0, 0, None, 0),
        MinuteStat(start + timedelta(minutes=2), 2, 1, 0, 80.0, 90),
    ]
    chart = inference_chart(InferenceHistory(minutes))
    assert chart.max_requests == 5 and chart.max_latency_ms == 100
    assert len(chart.bars) == 2 and len(chart.latency) == 2
    assert chart.bars[0].height == pytest.approx(2 * chart.bars[1].height, abs=0.2)
    assert "2 requests, 1 failed, average 80 ms, slowest 90 ms" in chart.bars[1].title
    assert not inference_chart(InferenceHistory([])).bars


def test_durations_read_like_words():
    assert [duration(s) for s in (0.25, 4.2, 42, 185, 7260, 90000)] == [
        "250 ms",
        "4.2 s",
        "42 s",
        "3 min 5 s",
        "2 h 1 min",
        "1 d 1 h",
    ]


def test_json_is_shown_compactly_but_readably():
    answer = {"predictions": ["setosa"], "probabilities": [[0.98, 0.02]], "vector": list(range(30))}
    assert pretty_json(answer) == (
        "{\n"
        '  "predictions": ["setosa"],\n'
        '  "probabilities": [[0.98, 0.02]],\n'
        '  "vector": [\n'
        "    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,\n"
        "    20, 21, 22, 23, 24, 25, 26, 27, 28, 29\n"
        "  ]\n"
        "}"
    )
    assert pretty_json([1, 2]) == "[1, 2]" and pretty_json({}) == "{}" and pretty_json("<b>") == '"<b>"'
