"""The service as a container image, run the way docker-compose.yml runs it.

The image is built from the locally made base (scripts/build-service-image.sh, cached by input
hash) and run against the test PostgreSQL, Kafka broker and Docker engine: migrations applied
once under a lock, a model registered by a Kafka event answering through the containerized web
role, the worker role and its takeover, and model containers addressed by name on a Docker
network. The compose file is checked by Debian's docker-compose.
"""

import os
import shutil
import subprocess
import uuid

import pytest
import requests
import yaml
from alembic.script import ScriptDirectory
from conftest import BASE_SETTINGS, ECHO, INSTANCE, IRIS, PG_URL
from deployment_support import (
    ROOT,
    Relay,
    ServiceContainers,
    build_service_image,
    logs,
    remove_model_containers,
    unexposed_copy,
    wait_http_ok,
    wait_log,
)
from flask_migrate import upgrade
from kafka_support import create_topics, fresh_topics, producer, require_kafka, send
from service_process import free_port
from sqlalchemy import URL, create_engine, make_url, text
from waiting import wait_for

from inference_app import create_app
from inference_app.config import Settings
from inference_app.coordination import MIGRATION_LOCK as MIGRATION_LOCK_KEY
from inference_app.coordination import dedicated_connection
from inference_app.extensions import db
from inference_app.runtime import labels

HEAD = ScriptDirectory(str(ROOT / "migrations")).get_current_head()
ACTIVE = "this process is the active background runner"
IRIS_REQUEST = {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.7, 1.5]]}


def service_env(**overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": PG_URL,
        "INSTANCE_NAME": INSTANCE,
        "CONTAINER_PREFIX": BASE_SETTINGS["container_prefix"],
        "RUN_BACKGROUND": "worker",
        "STOP_TIMEOUT_SECONDS": "1",
        "DEFAULT_MEMORY": "64m",
        "START_TIMEOUT_SECONDS": "30",
        "DATABASE_WAIT_SECONDS": "30",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "8",
        "AUTH_DISABLED": "true",  # tokens are tested in test_security.py; here: the image and its roles
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def service_image():
    return build_service_image()


@pytest.fixture(scope="module")
def empty_schema(database_url, docker_client):
    """The test database with an empty schema, for the containers to migrate; left at head afterwards."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("SET lock_timeout = '20s'"))
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    yield engine
    engine.dispose()
    app = create_app(BASE_SETTINGS)
    with app.app_context():
        upgrade()
        db.engine.dispose()


def waiting_for_migration_lock(engine) -> int:
    query = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1"
        " AND classid = 0 AND objid = :key"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with engine.connect() as conn:
        return conn.execute(query, {"key": MIGRATION_LOCK_KEY}).scalar_one()


def migration_line(container) -> str:
    """The line `flask migrate-once` printed in this container."""

    def found():
        lines = logs(container).splitlines()
        return next((line for line in lines if "migrated the database" in line or "database already at" in line), None)

    return wait_for(found, 60, f"{container.name} never reported its migration step")


class Deployment:
    def __init__(self, web, workers, base: str, topics: dict[str, str]):
        self.web = web
        self.workers = workers
        self.base = base
        self.topics = topics

    def active_worker(self, timeout: float = 30):
        def active():
            for worker in self.workers:
                worker.reload()
                if worker.status == "running" and ACTIVE in logs(worker):
                    return worker
            return None

        return wait_for(active, timeout, "no worker became the active background runner")


@pytest.fixture(scope="class")
def host_deployment(service_image, empty_schema, docker_client):
    """A web and two worker containers on the host's network, all started on an empty schema while
    this test holds the migration lock, so that all three contend for it."""
    require_kafka()
    topics = fresh_topics()
    create_topics(topics)
    env = service_env(**{name.upper(): value for name, value in topics.items()})
    port = free_port()
    containers = ServiceContainers(docker_client, service_image)
    lock = dedicated_connection(empty_schema)
    try:
        with lock.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        web = containers.run("web", ["web"], {**env, "BIND_HOST": "127.0.0.1", "PORT": str(port)}, network_mode="host")
        workers = [containers.run(f"worker{i}", ["worker"], env, network_mode="host") for i in (1, 2)]
        queued = lambda: waiting_for_migration_lock(empty_schema) == 3  # noqa: E731
        wait_for(queued, 60, "the containers never queued for the migration lock")
        lock.close()  # now one of them migrates, the others wait, then find the schema at head
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(web, f"{base}/healthz")
        yield Deployment(web, workers, base, topics)
    finally:
        lock.close()
        containers.remove_all()
        remove_model_containers(docker_client)


@pytest.mark.timeout(300)
class TestOnTheHostNetwork:
    def test_three_containers_started_together_migrate_exactly_once(self, host_deployment, empty_schema):
        lines = sorted(migration_line(c) for c in [host_deployment.web, *host_deployment.workers])
        waited = f"database already at {HEAD} (after waiting for another process's migration)"
        assert lines == sorted([f"migrated the database from empty to {HEAD}", waited, waited])
        with empty_schema.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]

    def test_runs_as_non_root_with_gunicorn_and_the_worker_as_pid_1(self, host_deployment):
        web, worker = host_deployment.web, host_deployment.workers[0]
        assert web.attrs["Config"]["User"] == "10001:10001"
        for container, pid1 in ((web, "python3 -m gunicorn"), (worker, "python3 -m flask worker")):
            assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
            cmdline = container.exec_run(["cat", "/proc/1/cmdline"]).output.replace(b"\0", b" ").decode()
            assert cmdline.startswith(pid1), cmdline
            status = container.exec_run(["grep", "^Uid:", "/proc/1/status"]).output.decode().split()
            assert status[1:] == ["10001"] * 4, status
            assert container.exec_run(["python3", "/app/docker/healthcheck.py"]).exit_code == 0
        # the container cannot write its own code: only the instance folder is its own
        assert web.exec_run(["touch", "/app/wsgi.py"]).exit_code != 0
        assert web.exec_run(["touch", "/app/instance/probe"]).exit_code == 0

    def test_a_kafka_event_registers_a_model_that_answers_through_the_container(self, host_deployment, docker_client):
        host_deployment.active_worker()
        event = {
            "event_id": f"deploy-{uuid.uuid4().hex[:8]}",
            "user_id": "deploy",
            "model_name": "iris",
            "image": IRIS,
            "memory": "256m",
            "metadata": {"framework": "scikit-learn"},
        }
        prod = producer()
        send(prod, host_deployment.topics["kafka_topic_uploaded"], event, key="deploy/iris")
        prod.flush()
        prod.close()
        base = host_deployment.base
        listed = lambda: requests.get(f"{base}/api/models", timeout=5).json()["items"]  # noqa: E731
        [model] = wait_for(listed, 30, "the model never appeared")
        assert (model["user_id"], model["model_name"], model["image"]) == ("deploy", "iris", IRIS)
        first = requests.post(f"{base}/api/models/{model['id']}/infer", json=IRIS_REQUEST, timeout=60)
        assert first.status_code == 200, first.text
        assert first.json()["predictions"] == ["setosa", "versicolor"]
        assert first.headers["X-Cold-Start"] == "true"
        second = requests.post(f"{base}/api/models/{model['id']}/infer", json=IRIS_REQUEST, timeout=30)
        assert second.status_code == 200 and second.headers["X-Cold-Start"] == "false"
        started = docker_client.containers.list(
            filters={"label": [f"{labels.INSTANCE}={INSTANCE}", f"{labels.MODEL_ID}={model['id']}"]}
        )
        assert [c.image.tags for c in started] == [[IRIS]]
        applied = requests.get(f"{base}/api/events", timeout=5).json()["items"]
        assert [(e["event_id"], e["outcome"]) for e in applied] == [(event["event_id"], "applied")]

    def test_the_standby_worker_takes_over_when_the_active_one_stops(self, host_deployment):
        active = host_deployment.active_worker()
        [standby] = [w for w in host_deployment.workers if w.id != active.id]
        active.stop(timeout=20)
        active.reload()
        # 0, not 137: PID 1 handled SIGTERM and exited before Docker's SIGKILL
        assert active.attrs["State"]["ExitCode"] == 0, logs(active)[-2000:]
        wait_log(standby, ACTIVE, 20)
        prod = producer()
        echo = {"user_id": "deploy", "model_name": "echo", "image": ECHO}
        send(prod, host_deployment.topics["kafka_topic_uploaded"], echo)
        prod.flush()
        prod.close()
        listed = lambda: requests.get(f"{host_deployment.base}/api/models", timeout=5).json()["items"]  # noqa: E731
        applied = lambda: "echo" in {m["model_name"] for m in listed()}  # noqa: E731
        wait_for(applied, 30, "the standby's listener never applied the event")

    def test_web_stops_cleanly_on_sigterm(self, host_deployment):
        host_deployment.web.stop(timeout=30)
        host_deployment.web.reload()
        assert host_deployment.web.attrs["State"]["ExitCode"] == 0, logs(host_deployment.web)[-2000:]


@pytest.fixture
def networks(docker_client):
    """As in docker-compose.yml: an internal network for the models, and one the service publishes its port on."""
    made = [
        docker_client.networks.create(
            f"itest-{INSTANCE}-{name}", driver="bridge", internal=internal, labels={labels.INSTANCE: INSTANCE}
        )
        for name, internal in (("front", False), ("models", True))
    ]
    yield made
    remove_model_containers(docker_client)
    for network in made:
        network.remove()


@pytest.fixture
def database_socket(tmp_path):
    """The test PostgreSQL behind a Unix socket that a container on its own network can mount."""
    directory = tmp_path / "pg"
    directory.mkdir()
    directory.chmod(0o755)
    url = make_url(PG_URL)
    relay = Relay.unix(directory / ".s.PGSQL.5432", (url.host or "127.0.0.1", url.port or 5432))
    query = {**url.query, "host": "/run/postgresql"}
    yield directory, URL.create(url.drivername, url.username, url.password, database=url.database, query=query)
    relay.close()


@pytest.mark.timeout(180)
def test_on_a_docker_network_models_are_addressed_by_container_name(
    service_image, empty_schema, docker_client, networks, database_socket
):
    front, model_network = networks
    socket_dir, db_url = database_socket
    containers = ServiceContainers(docker_client, service_image)
    try:
        env = service_env(DATABASE_URL=db_url.render_as_string(hide_password=False), DOCKER_NETWORK=model_network.name)
        web = containers.run(
            "netweb",
            ["web"],
            env,
            network=front.name,
            ports={"8002/tcp": ("127.0.0.1", None)},
            volumes={str(socket_dir): {"bind": "/run/postgresql", "mode": "rw"}},
        )
        model_network.connect(web)
        web.reload()
        base = f"http://127.0.0.1:{web.ports['8002/tcp'][0]['HostPort']}"
        wait_http_ok(web, f"{base}/healthz")
        # one image that EXPOSEs its port, one that does not: the model's `port` is what counts
        unexposed = unexposed_copy(docker_client, ECHO, "inference-test/echo-unexposed:1")
        started = []
        for image in (ECHO, unexposed):
            body = {"user_id": "net", "model_name": image.split("/")[1].split(":")[0], "image": image}
            model = requests.post(f"{base}/api/models", json=body, timeout=10).json()
            answer = requests.post(f"{base}/api/models/{model['id']}/infer", json={"over": "the network"}, timeout=60)
            assert answer.status_code == 200, (image, answer.text)
            assert answer.json()["echo"] == {"over": "the network"}
            name = labels.container_name(BASE_SETTINGS["container_prefix"], INSTANCE, model["id"])
            container = docker_client.containers.get(name)
            own_network = f"{model_network.name}-{INSTANCE}-model-{model['id']}"  # each model alone on its network
            assert list(container.attrs["NetworkSettings"]["Networks"]) == [own_network]
            assert docker_client.networks.get(own_network).attrs["Internal"] is True
            assert not any((container.attrs["NetworkSettings"]["Ports"] or {}).values()), "a model port was published"
            started.append(container)
        first, second = started
        second_ip = next(iter(second.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
        probe = first.exec_run(["sh", "-c", f"printf 'GET /health HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {second_ip} 8080"])
        assert b"200 OK" not in probe.output, "one model reached another"
    finally:
        containers.remove_all()
        remove_model_containers(docker_client)
        for network in docker_client.networks.list(filters={"label": f"{labels.INSTANCE}={INSTANCE}"}):
            if network.name.startswith(f"{model_network.name}-"):
                network.reload()
                for attached in network.containers:
                    network.disconnect(attached, force=True)
                network.remove()


COMPOSE_ENV = {"DOCKER_GID": "999", "POSTGRES_PASSWORD": "test-only-not-a-secret"}


def compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is missing: scripts/test.sh installs Debian's docker-compose package")
    base_env = {k: v for k, v in os.environ.items() if k not in COMPOSE_ENV}
    return subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), *args],
        cwd=ROOT,
        env={**base_env, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.services  # Debian's docker-compose, which `make test` installs
def test_the_compose_file_is_valid_and_wires_the_services():
    checked = compose("config", "-q", env=COMPOSE_ENV)
    assert checked.returncode == 0, checked.stderr
    missing = compose("config", "-q", env={"POSTGRES_PASSWORD": "x"})
    assert missing.returncode != 0 and "DOCKER_GID" in missing.stderr
    config = yaml.safe_load(compose("config", env=COMPOSE_ENV).stdout)
    services = config["services"]
    assert set(services) == {"postgres", "kafka", "iris", "web", "worker", "seed-example"}
    assert services["postgres"]["image"] == "postgres:16" and "healthcheck" in services["postgres"]
    assert services["kafka"]["image"].startswith("apache/kafka:") and "healthcheck" in services["kafka"]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["worker"]["deploy"]["replicas"] == 2 and services["worker"]["command"] == ["worker"]
    models_network = config["networks"]["models"]["name"]
    assert services["web"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["worker"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "kafka": {"condition": "service_healthy"},
    }
    assert services["seed-example"]["depends_on"]["web"] == {"condition": "service_healthy"}
    for name in ("web", "worker"):
        service = services[name]
        assert service["group_add"] == ["999"]
        assert service["environment"]["DOCKER_NETWORK"] == models_network
        assert set(service["networks"]) == {"backend", "models"}
    assert services["iris"]["build"]["context"].endswith("examples/models/iris")
    assert "models" not in services["postgres"]["networks"] and "models" not in services["kafka"]["networks"]
    assert "666" not in (ROOT / "docker-compose.yml").read_text()


@pytest.mark.services  # Debian's docker-compose, which `make test` installs
def test_the_compose_file_passes_the_kafka_sign_in_settings_from_env():
    """Brokers that require SASL and TLS work in compose: the settings and the CA directory reach the service."""
    plain = yaml.safe_load(compose("config", env=COMPOSE_ENV).stdout)["services"]["worker"]["environment"]
    assert plain["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert not plain.get("KAFKA_SECURITY_PROTOCOL") and not plain.get("KAFKA_SASL_PASSWORD")
    sasl = {
        "KAFKA_BOOTSTRAP_SERVERS": "broker-1.internal:9093",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "inference-service",
        "KAFKA_SASL_PASSWORD": "test-only-not-a-secret",
        "KAFKA_SSL_CAFILE": "/etc/inference/kafka-ca/ca.pem",
    }
    config = yaml.safe_load(compose("config", env={**COMPOSE_ENV, **sasl}).stdout)
    for name in ("web", "worker"):
        service = config["services"][name]
        assert {key: service["environment"][key] for key in sasl} == sasl
        assert any(str(volume).endswith("/etc/inference/kafka-ca:ro") for volume in service["volumes"]), service[
            "volumes"
        ]
    hardening = {"IMAGE_ALLOWLIST": "registry.local/models/", "MODEL_USER": "65534:65534", "METRICS_TOKEN": "t0k"}
    passed = yaml.safe_load(compose("config", env={**COMPOSE_ENV, **hardening}).stdout)["services"]["web"]
    assert {key: passed["environment"][key] for key in hardening} == hardening
    settings = Settings.from_env({**sasl, "KAFKA_SSL_CAFILE": ""})  # the names are the ones the service reads
    assert (settings.kafka_security_protocol, settings.kafka_sasl_username) == ("SASL_SSL", "inference-service")
