"""Registration bounds shared by the API and Kafka events: CPU share and memory on both ends,
env keys that would load code, the image allowlist on path boundaries, JSON PostgreSQL refuses."""

import json

import pytest
from conftest import ECHO, built_app
from kafka_support import create_topics, fresh_topics, producer, require_kafka, send, wait_for

from inference_app.config import Settings
from inference_app.events.listener import KafkaListener
from inference_app.services.context import context
from inference_app.services.validation import image_allowed, nano_cpus, runtime_hook_env

RUNTIME_HOOKS = [
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "LD_BIND_NOW",
    "ld_preload",
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONWARNINGS",
    "PYTHONINSPECT",
    "PYTHONBREAKPOINT",
    "PYTHONUSERBASE",
    "PYTHONSAFEPATH",
    "NODE_OPTIONS",
    "NODE_PATH",
    "BASH_ENV",
    "ENV",
    "BROWSER",
    "PERL5OPT",
    "PERL5LIB",
    "RUBYOPT",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "MALLOC_CHECK_",
    "MALLOC_ARENA_MAX",
    "PS4",
    "OPENSSL_CONF",
]

# (body extras, the field the 400 names, a piece of its message)
OUT_OF_BOUNDS = [
    ({"cpus": 1e-10}, "cpus", "between 0.01 and 2.0"),
    ({"cpus": 0.001}, "cpus", "between 0.01 and 2.0"),
    ({"cpus": 0}, "cpus", "between"),
    ({"cpus": -1}, "cpus", "between"),
    ({"cpus": 2.5}, "cpus", "between"),
    ({"cpus": 10**400}, "cpus", "between"),
    ({"cpus": "1"}, "cpus", "number of CPUs"),
    ({"cpus": True}, "cpus", "number of CPUs"),
    ({"memory": "1k"}, "memory", "at least 6m"),
    ({"memory": 1024}, "memory", "at least 6m"),
    ({"memory": "0.001g"}, "memory", "at least 6m"),
    ({"memory": "64g"}, "memory", "at most"),
    ({"memory": 10**30}, "memory", "at most"),
    ({"memory": 1e-10}, "memory", "memory must be"),
]


def body(**extra) -> dict:
    return {"user_id": "alice", "model_name": "bounded", "image": ECHO, **extra}


@pytest.mark.parametrize("extra, field, message", OUT_OF_BOUNDS)
def test_cpu_and_memory_out_of_bounds_are_400_naming_the_field(client, extra, field, message):
    response = client.post("/api/models", json=body(**extra))
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["details"]["field"] == field and message in error["message"], error


def test_cpu_and_memory_inside_the_bounds_are_accepted(client):
    response = client.post("/api/models", json=body(cpus=0.01, memory="6m"))
    assert response.status_code == 201 and response.get_json()["cpus"] == 0.01
    response = client.post("/api/models", json=body(model_name="big", cpus=2, memory="4g"))
    assert response.status_code == 201


@pytest.mark.settings(min_cpus=0.25)
def test_min_cpus_raises_the_floor(client):
    response = client.post("/api/models", json=body(cpus=0.1))
    assert response.status_code == 400 and "between 0.25 and 2.0" in response.get_json()["error"]["message"]


def test_nano_cpus_is_never_zero():
    assert nano_cpus(1e-10) == 10_000_000  # 0.01 CPU, Docker's smallest share: 0 would mean no limit
    assert nano_cpus(0.5) == 500_000_000
    assert nano_cpus(2) == 2_000_000_000


@pytest.mark.parametrize("key", RUNTIME_HOOKS)
def test_env_keys_that_load_code_are_400_naming_the_key(client, key):
    response = client.post("/api/models", json=body(env={"MODEL_LABEL": "x", key: "/tmp/x.so"}))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["details"]["field"] == "env" and key in error["message"], error


def test_ordinary_env_keys_are_kept(client):
    env = {"MODEL_LABEL": "x", "WORKERS": "2", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "PATH_X": "y"}
    response = client.post("/api/models", json=body(env=env))
    assert response.status_code == 201 and response.get_json()["env"] == env
    assert not any(runtime_hook_env(key) for key in env)


@pytest.mark.parametrize(
    "image, allowlist, admitted",
    [
        ("registry.local/models", "registry.local/models", True),
        ("registry.local/models/x", "registry.local/models", True),
        ("registry.local/models/x/y:2", "registry.local/models", True),
        ("registry.local/models:tag", "registry.local/models", True),
        ("registry.local/models@sha256:" + "a" * 64, "registry.local/models", True),
        ("registry.local/models-evil/x", "registry.local/models", False),
        ("registry.local/modelsx", "registry.local/models", False),
        ("registry.local:5000/models/x", "registry.local", False),
        ("registry.local/models/x", "registry.local/models/", True),
        ("registry.local/models-evil/x", "registry.local/models/", False),
        ("other/x", "registry.local/models, other", True),
        ("anything/at:all", "", True),
        ("inference-test/echo:1", ("inference-test/",), True),
    ],
)
def test_image_allowlist_matches_on_path_boundaries(image, allowlist, admitted):
    assert image_allowed(image, allowlist) is admitted


@pytest.mark.settings(image_allowlist="inference-test/ec")
def test_an_allowlist_entry_is_not_a_string_prefix(client):
    response = client.post("/api/models", json=body())
    assert response.status_code == 400 and response.get_json()["error"]["details"]["field"] == "image"


@pytest.mark.settings(image_allowlist="inference-test/echo")
def test_an_allowlist_entry_admits_its_tags(client):
    assert client.post("/api/models", json=body()).status_code == 201


@pytest.mark.parametrize(
    "raw",
    [
        b'{"user_id": "alice", "model_name": "m", "image": "%s", "metadata": {"x": NaN}}',
        b'{"user_id": "alice", "model_name": "m", "image": "%s", "metadata": {"x": [Infinity]}}',
        b'{"user_id": "alice", "model_name": "m", "image": "%s", "metadata": {"x": "a\\u0000b"}}',
        b'{"user_id": "alice", "model_name": "m", "image": "%s", "metadata": {"x\\u0000": 1}}',
        b'{"user_id": "alice", "model_name": "m", "image": "%s", "metadata": {"x": "\\ud800"}}',
        b'{"user_id": "alice", "model_name": "m", "image": "%s", "env": {"X": "\\ud800"}}',
    ],
)
def test_json_postgresql_cannot_store_is_400_not_500(client, raw):
    response = client.post("/api/models", data=raw % ECHO.encode(), content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    # refused by the API's strict JSON parsing (web hardening) or, past it, by the registration's validation
    assert error["code"] == "invalid_input" and error["message"], error


# -- the same bounds for Kafka events --------------------------------------------------------------
EVENT_CASES = [
    ({"cpus": 1e-10}, "cpus must be between"),
    ({"cpus": 3}, "cpus must be between"),
    ({"memory": "1k"}, "memory must be at least 6m"),
    ({"memory": "64g"}, "memory must be at most"),
    ({"env": {"LD_PRELOAD": "/x.so"}}, "env key LD_PRELOAD is not allowed"),
    ({"env": {"PYTHONWARNINGS": "all:0:antigravity.x:0:0", "BROWSER": "sh"}}, "env key PYTHONWARNINGS"),
    ({"env": {"NODE_OPTIONS": "--require /proc/self/environ"}}, "env key NODE_OPTIONS"),
    ({"image": "inference-test/echo-evil:1"}, "is not allowed here"),
]


def test_events_out_of_bounds_are_dead_lettered_naming_the_field(database, docker_client):
    require_kafka()
    topics = fresh_topics()
    create_topics(topics, partitions=1)
    with built_app(docker_client, image_allowlist="inference-test/echo", **topics) as app:
        with app.app_context():
            listener = KafkaListener(app, context().settings)
        listener.start()
        try:
            prod = producer()
            for extra, _reason in EVENT_CASES:
                send(prod, topics["kafka_topic_uploaded"], body(**extra), key="k")
            send(prod, topics["kafka_topic_uploaded"], body(model_name="fine", cpus=0.5, env={"A": "1"}), key="k")
            prod.flush()
            prod.close()
            client = app.test_client()
            wait_for(lambda: client.get("/api/models").get_json()["total"] == 1, 30, "the good event was not applied")
            letters = wait_for(
                lambda: len(items := client.get("/api/events/dead-letters").get_json()["items"]) == len(EVENT_CASES)
                and items,
                10,
                "not every out-of-bounds event was dead-lettered",
            )
        finally:
            listener.stop()
    by_offset = sorted(letters, key=lambda letter: letter["offset"])
    for letter, (extra, reason) in zip(by_offset, EVENT_CASES, strict=True):
        assert reason in letter["reason"], (reason, letter["reason"])
        assert json.loads(letter["payload"]) == body(**extra)


def test_settings_refuse_min_cpus_above_max_cpus(tmp_path):
    from inference_app.config import ConfigError

    with pytest.raises(ConfigError, match="MIN_CPUS"):
        Settings.from_env({"MIN_CPUS": "3", "MAX_CPUS": "2"}, instance_path=str(tmp_path))
