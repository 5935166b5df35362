"""Fixtures in the manner of Flask's tutorial: app, client, runner, built by the factory.

Everything is real: PostgreSQL (TEST_DATABASE_URL, provisioned by `make test`), the Docker
engine and the test images from scripts/build-images.sh. Each test gets clean tables and
its containers are removed by label afterwards; their logs are printed only on failure.

Two lanes: a test that uses a service fixture (SERVICE_FIXTURES, directly or through another
fixture) is marked `services`; `make test-fast` runs the others (`-m "not services"`) with no
database, Docker engine, broker or browser; `make test` runs both.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Any

import docker
import pytest
from service_process import service_env as process_env
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from werkzeug.serving import make_server

from inference_app import create_app
from inference_app.extensions import db
from inference_app.runtime import labels

PG_URL = os.environ.get("TEST_DATABASE_URL", "")
INSTANCE = f"pytest{os.getpid()}"

ECHO = "inference-test/echo:1"
NEVER_HEALTHY = "inference-test/never-healthy:1"
CRASH = "inference-test/crash:1"
SLOW = "inference-test/slow:1"
IRIS = "inference-examples/iris:1"

BASE_SETTINGS: dict[str, Any] = {
    "database_url": PG_URL,
    "instance_name": INSTANCE,
    "container_prefix": "itest",
    "start_timeout_seconds": 20.0,
    "infer_timeout_seconds": 30.0,
    "queue_timeout_seconds": 20.0,
    "stop_timeout_seconds": 1,
    "max_request_bytes": 64 * 1024,
    "default_memory": "64m",
    "run_background": "worker",
    "auth_disabled": True,  # tests/test_security.py covers authentication with real tokens
    "TESTING": True,
}


# Fixtures that reach a real part; every fixture that needs one requests one of these.
SERVICE_FIXTURES = frozenset({"database_url", "docker_client", "browser", "kube_cluster"})


def pytest_configure(config):
    config.addinivalue_line("markers", "settings(**kw): settings overrides for the app fixture")
    config.addinivalue_line(
        "markers", "services: needs PostgreSQL, Docker, Kafka or a browser (set from the fixtures a test uses)"
    )


def pytest_collection_modifyitems(items):
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


def service_env(**overrides) -> dict[str, str]:
    """The environment of a service process a test starts: the choices of BASE_SETTINGS, as variables."""
    defaults = {"default_memory": "64m", "start_timeout_seconds": 20, "auth_disabled": "true"}
    return process_env(PG_URL, INSTANCE, BASE_SETTINGS["container_prefix"], **{**defaults, **overrides})


@pytest.fixture(scope="session")
def kube_cluster() -> str:
    """The test cluster's kubeconfig (`make test` starts the cluster and sets TEST_KUBECONFIG)."""
    from kubernetes_support import require_cluster

    return require_cluster()


@pytest.fixture(scope="session")
def database_url() -> str:
    if not PG_URL:
        pytest.fail(
            "TEST_DATABASE_URL is not set: run the suite with `make test`, which provisions it "
            "(`make test-fast` runs the tests that need no services)",
            pytrace=False,
        )
    return PG_URL


@pytest.fixture(scope="session")
def docker_client():
    client = docker.from_env()
    client.ping()
    _remove_networks(client, lambda instance: not _alive(instance))  # left by a crashed run
    yield client
    _remove_containers(client)
    _remove_networks(client, lambda instance: instance.startswith(INSTANCE))


def _alive(instance: str) -> bool:
    pid = instance.removeprefix("pytest").rstrip("abcdefghijklmnopqrstuvwxyz")
    return pid.isdigit() and os.path.exists(f"/proc/{pid}")


def _remove_networks(client, chosen) -> None:
    """The isolated model networks of this run's instances (a network in use stays)."""
    for network in client.networks.list(filters={"label": f"{labels.MANAGED}=true"}):
        instance = (network.attrs.get("Labels") or {}).get(labels.INSTANCE, "")
        if instance.startswith("pytest") and chosen(instance):
            try:
                network.remove()
            except docker.errors.APIError:
                pass


def _remove_containers(client) -> None:
    for container in client.containers.list(all=True, filters={"label": f"{labels.INSTANCE}={INSTANCE}"}):
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass


@pytest.fixture(scope="session")
def database(database_url):
    """A schema built by the migrations (flask db upgrade), never by create_all."""
    from flask_migrate import upgrade

    app = create_app(BASE_SETTINGS)
    with app.app_context():
        with db.engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        upgrade()
        db.engine.dispose()
    return PG_URL


def _truncate(attempts: int = 5) -> None:
    """Empty every table; a deadlock with a straggling writer of the test before is tried again."""
    names = ", ".join(t.name for t in db.metadata.sorted_tables)
    for attempt in range(attempts):
        try:
            db.session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            db.session.commit()
            return
        except OperationalError as exc:
            db.session.rollback()
            if getattr(exc.orig, "pgcode", None) != "40P01" or attempt == attempts - 1:
                raise
            time.sleep(0.2)


@contextmanager
def built_app(docker_client, **overrides):
    """An app on the test database with clean tables; its containers removed afterwards."""
    app = create_app({**BASE_SETTINGS, **overrides})
    with app.app_context():
        _truncate()
    try:
        yield app
    finally:
        app.extensions["inference"].close()  # no late writes into the next test's tables
        _remove_containers(docker_client)
        with app.app_context():
            db.session.remove()
            _truncate()
            db.engine.dispose()


@pytest.fixture
def app(database, docker_client, request):
    marker = request.node.get_closest_marker("settings")
    with built_app(docker_client, **(marker.kwargs if marker else {})) as app:
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def live_server(app):
    """The app behind a real threaded HTTP server, for concurrent clients."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def register(app):
    """Register a model through the registry service (the API's own tests cover the route)."""
    from inference_app.api.serializers import model_to_dict
    from inference_app.services.context import context
    from inference_app.services.registry import register_model

    def _register(**fields) -> dict:
        body = {"user_id": "alice", "model_name": "echo", "image": ECHO}
        body.update(fields)
        with app.app_context():
            model, _created = register_model(body, context().settings)
            return model_to_dict(model, context().settings.idle_timeout_seconds)

    return _register


def managed_containers(client, model_id: int | None = None, all_states: bool = True) -> list:
    label = [f"{labels.INSTANCE}={INSTANCE}"]
    if model_id is not None:
        label.append(f"{labels.MODEL_ID}={model_id}")
    return client.containers.list(all=all_states, filters={"label": label})


def created_since(client, since: float, model_id: int | None = None) -> int:
    """How many managed containers Docker says were created since `since` (from its event log)."""
    label = [f"{labels.INSTANCE}={INSTANCE}"]
    if model_id is not None:
        label.append(f"{labels.MODEL_ID}={model_id}")
    events = client.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        filters={"type": "container", "event": "create", "label": label},
        decode=True,
    )
    return sum(1 for e in events if e.get("timeNano", 0) >= since * 1e9)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and item.get_closest_marker("services"):
        try:
            client = docker.from_env()
            for container in managed_containers(client):
                logs = container.logs(tail=30).decode(errors="replace")
                report.sections.append((f"container {container.name} ({container.status})", logs))
        except Exception as exc:  # diagnostics must not hide the failure
            report.sections.append(("container logs", f"unavailable: {exc}"))
