"""Metrics that move as the service works, and one structured log line per request."""

import json
import logging
import re

import pytest
from conftest import ECHO

from inference_app.logs import JsonFormatter


def sample(client, name, **labels):
    text = client.get("/metrics").get_data(as_text=True)
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? ([0-9.e+-]+)$", re.M)
    for found_labels, value in pattern.findall(text):
        if ",".join(sorted(found_labels.split(","))) == want or (not labels and not found_labels):
            return float(value)
    return 0.0


@pytest.mark.settings(max_running_containers=1)
def test_metrics_follow_a_cold_start_and_an_eviction(client, register):
    first = register(model_name="first")
    second = register(model_name="second")
    cold_before = sample(client, "inference_cold_start_duration_seconds_count")
    assert sample(client, "inference_containers_cap") == 1
    assert client.post(f"/api/models/{first['id']}/infer", json={}).status_code == 200
    assert sample(client, "inference_requests_total", model_id=first["id"], status=200) >= 1
    assert sample(client, "inference_cold_start_duration_seconds_count") == cold_before + 1
    assert sample(client, "inference_lifecycle_events_total", kind="started") == 1
    assert sample(client, "inference_containers", state="running") == 1
    assert client.post(f"/api/models/{second['id']}/infer", json={}).status_code == 200
    assert sample(client, "inference_lifecycle_events_total", kind="evicted") == 1
    assert sample(client, "inference_lifecycle_events_total", kind="started") == 2
    assert sample(client, "inference_containers", state="running") == 1
    assert sample(client, "http_requests_total", route="/api/models/<int:model_id>/infer", status=200) >= 2


def test_metrics_count_dead_lettered_events(app, client):
    from kafka_support import create_topics, fresh_topics, producer, require_kafka, send
    from waiting import wait_for

    from inference_app.events.listener import KafkaListener
    from inference_app.services.context import context

    require_kafka()
    topics = fresh_topics()
    create_topics(topics)
    with app.app_context():
        settings = context().settings.with_overrides(topics)
    listener = KafkaListener(app, settings)
    runner = app.extensions["background"]
    runner.listener = listener
    listener.start()
    try:
        prod = producer()
        send(prod, topics["kafka_topic_uploaded"], b"{not json")
        send(prod, topics["kafka_topic_uploaded"], {"user_id": "u", "model_name": "m", "image": ECHO})
        prod.flush()
        prod.close()
        wait_for(lambda: listener.dead_lettered == 1 and listener.applied == 1, 20, "the events were not consumed")
        runner.run_heartbeat()
        assert sample(client, "kafka_events_dead_lettered_total") == 1
        assert sample(client, "kafka_events_applied_total") == 1
        assert sample(client, "kafka_listener_connected") == 1
    finally:
        listener.stop()
        runner.listener = None


def test_one_json_log_line_per_request_with_the_request_id(client, register, caplog):
    model = register()
    with caplog.at_level(logging.INFO, logger="inference_app.requests"):
        response = client.post(f"/api/models/{model['id']}/infer", json={"a": 1}, headers={"X-Request-ID": "trace-42"})
        client.get("/healthz")  # probes are not logged
    assert response.headers["X-Request-ID"] == "trace-42"
    lines = [r for r in caplog.records if r.name == "inference_app.requests"]
    assert len(lines) == 1
    entry = json.loads(JsonFormatter().format(lines[0]))
    assert entry["request_id"] == "trace-42" and entry["status"] == 200 and entry["model_id"] == model["id"]
    assert entry["method"] == "POST" and entry["cold_start"] == "true" and entry["duration_ms"] > 0
    other = client.get("/api/models")
    assert len(other.headers["X-Request-ID"]) == 32
