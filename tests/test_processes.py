"""Lifecycle across processes: real gunicorn workers, real `flask worker`, real Docker and PostgreSQL."""

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests
from conftest import ECHO, INSTANCE, IRIS, SLOW, built_app, created_since, managed_containers, service_env
from private_engine import PrivateEngine
from service_process import Processes
from waiting import wait_for


@pytest.fixture
def fresh_db(database, docker_client):
    with built_app(docker_client) as app:
        yield app


@pytest.fixture
def procs(tmp_path):
    running = Processes(tmp_path)
    yield running
    running.stop_all()


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def register(base, **fields):
    body = {"user_id": "alice", "model_name": "echo", "image": ECHO, **fields}
    response = requests.post(f"{base}/api/models", json=body, timeout=10)
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_herd_of_200_first_requests_across_4_workers_starts_one_container(fresh_db, docker_client, procs, tmp_path):
    base = procs.web(service_env(web_concurrency=4, gunicorn_threads=64)).base
    # the example model: a threaded Python server with keep-alive, as real model servers are
    model = register(base, model_name="iris", image=IRIS, memory="256m")
    since = time.time()

    def call(i):
        flower = [5.1, 3.5, 1.4, 0.2] if i % 2 else [6.7, 3.1, 4.7, 1.5]
        return requests.post(f"{base}/api/models/{model['id']}/infer", json={"instances": [flower]}, timeout=120)

    with ThreadPoolExecutor(200) as pool:
        responses = list(pool.map(call, range(200)))
    codes = [r.status_code for r in responses]
    assert codes == [200] * 200, (
        {c: codes.count(c) for c in set(codes)},
        [r.text[:300] for r in responses if r.status_code != 200][:3],
    )
    answers = [r.json()["predictions"] for r in responses]
    assert answers == [["setosa"] if i % 2 else ["versicolor"] for i in range(200)]
    assert created_since(docker_client, since, model["id"]) == 1
    assert len(managed_containers(docker_client, model["id"])) == 1


def test_cap_is_never_exceeded_under_random_load(fresh_db, docker_client, procs, tmp_path):
    env = service_env(
        web_concurrency=4,
        max_running_containers=3,
        max_running_per_owner=10,  # one owner's models: the cap, not the owner's limit, is under test
        queue_timeout_seconds=5,
        gunicorn_threads=32,
    )
    base = procs.web(env).base
    models = [register(base, model_name=f"m{i}") for i in range(10)]
    stop = threading.Event()
    peak = [0]
    outcomes = {}
    lock = threading.Lock()

    samples = [0]

    def sample():
        while not stop.is_set():
            running = docker_client.containers.list(
                sparse=True, filters={"label": f"io.inference-service.instance={INSTANCE}", "status": "running"}
            )
            peak[0] = max(peak[0], len(running))
            samples[0] += 1
            time.sleep(0.05)

    def client(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            model = rng.choice(models)
            try:
                r = requests.post(f"{base}/api/models/{model['id']}/infer", json={"s": seed}, timeout=30)
                key = (r.status_code, "Retry-After" in r.headers)
            except requests.RequestException as exc:
                key = (type(exc).__name__, False)
            with lock:
                outcomes[key] = outcomes.get(key, 0) + 1

    sampler = threading.Thread(target=sample)
    sampler.start()
    with ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(client, s) for s in range(50)]
        time.sleep(30)  # the length of the load
        stop.set()
        for f in futures:
            f.result()
    sampler.join()
    assert samples[0] > 100, "the sampler stopped early"
    assert peak[0] <= 3, f"saw {peak[0]} running containers"
    assert outcomes.get((200, False), 0) > 50, outcomes
    assert set(outcomes) <= {(200, False), (503, True)}, outcomes
    evictions = requests.get(f"{base}/api/lifecycle-events?kind=evicted", timeout=10).json()["items"]
    assert evictions, "no eviction recorded under a cap of 3 with 10 models"


def test_slow_request_outlives_the_idle_timeout_in_another_process(fresh_db, docker_client, procs, tmp_path):
    env = service_env(web_concurrency=2, idle_timeout_seconds=2, idle_check_interval_seconds=0.5)
    base = procs.web(env).base
    procs.worker(env)
    model = register(base, image=SLOW)
    response = requests.post(f"{base}/api/models/{model['id']}/infer?seconds=6", data=b"{}", timeout=60)
    assert response.status_code == 200 and response.json() == {"slept": 6}

    def shown_once_stopped():
        shown = requests.get(f"{base}/api/models/{model['id']}", timeout=5).json()
        return shown["status"] == "stopped" and shown

    stopped = wait_for(shown_once_stopped, 30, "the idle model was never stopped")
    stops = requests.get(f"{base}/api/lifecycle-events?kind=idle_stopped", timeout=5).json()["items"]
    assert [s["model_id"] for s in stops] == [model["id"]]
    # by the service's own clock: stopped no sooner than the idle timeout after the request ended
    assert at(stops[0]["at"]) - at(stopped["last_used_at"]) >= timedelta(seconds=2)


def test_sigkill_of_the_whole_service_adopts_every_container(fresh_db, docker_client, procs, tmp_path):
    env = service_env(web_concurrency=2, idle_timeout_seconds=3600)
    web = procs.web(env)
    worker = procs.worker(env)
    base = web.base
    models = [register(base, model_name=f"m{i}") for i in range(5)]
    used_from = datetime.now(UTC)
    for model in models:
        assert requests.post(f"{base}/api/models/{model['id']}/infer", json={}, timeout=60).status_code == 200

    def shown_after_use():
        shown = {m["id"]: requests.get(f"{base}/api/models/{m['id']}", timeout=5).json() for m in models}
        used = all(s["last_used_at"] and at(s["last_used_at"]) >= used_from for s in shown.values())
        return used and shown

    before = wait_for(shown_after_use, 10, "the last uses never reached the database")
    containers_before = {c.id for c in managed_containers(docker_client)}
    web.kill()
    worker.kill()
    since = time.time()
    base = procs.web(env, name="web2").base
    procs.worker(env, name="worker2")
    for model in models:
        after = requests.get(f"{base}/api/models/{model['id']}", timeout=5).json()
        assert after["status"] == "running"
        assert after["host_port"] == before[model["id"]]["host_port"]
        assert after["last_used_at"] >= before[model["id"]]["last_used_at"]  # the idle clock was kept
        r = requests.post(f"{base}/api/models/{model['id']}/infer", json={"again": 1}, timeout=30)
        assert r.status_code == 200 and r.headers["X-Cold-Start"] == "false"
    assert {c.id for c in managed_containers(docker_client)} == containers_before
    assert created_since(docker_client, since) == 0


def test_background_runner_killed_alone_is_replaced_by_the_standby(fresh_db, procs, tmp_path):
    env = service_env(web_concurrency=1)
    base = procs.web(env).base
    first = procs.worker(env, name="worker-a")
    standby = procs.worker(env, name="worker-b")

    def background():
        return requests.get(f"{base}/readyz", timeout=5).json()["checks"]["background"]

    def owner():
        state = background()
        return state.get("ok") and state["owner"]

    active_owner = wait_for(owner, 30, "no process became the background runner", 0.5)
    active = first if active_owner.endswith(f":{first.pid}") else standby
    other = standby if active is first else first
    active.kill()
    wait_for(lambda: (owner() or "").endswith(f":{other.pid}"), 30, "the standby never took over", 0.5)


def test_listener_process_killed_mid_stream_loses_and_doubles_nothing(fresh_db, procs, tmp_path):
    from kafka_support import caught_up, create_topics, fresh_topics, producer, require_kafka, send
    from sqlalchemy import func, select

    from inference_app.extensions import db
    from inference_app.models import IngestedEvent, ServedModel

    require_kafka()
    topics = fresh_topics()
    create_topics(topics)
    env = service_env(**topics, kafka_batch_size=200)
    first = procs.worker(env, name="listener-a")

    def counted(query):
        with fresh_db.app_context():
            try:
                return db.session.scalar(query)
            finally:
                db.session.remove()

    prod = producer()
    for i in range(5000):
        send(
            prod,
            topics["kafka_topic_uploaded"],
            {"user_id": f"u{i % 13}", "model_name": f"m{i}", "image": ECHO, "event_id": f"k-{i}"},
            key=str(i),
        )
    prod.flush()
    prod.close()
    models = select(func.count()).select_from(ServedModel)
    wait_for(lambda: counted(models) >= 1000, 60, "the listener never got going")
    first.kill()
    assert counted(models) < 5000, "the stream finished before the kill; nothing was tested"
    procs.worker(env, name="listener-b")
    wait_for(lambda: counted(models) == 5000, 120, "events were lost after the SIGKILL")
    wait_for(lambda: caught_up(topics), 30, "the listener never committed the end of the stream")
    assert counted(models) == 5000  # nothing doubled: every event is behind the committed offsets
    assert counted(select(func.count()).select_from(IngestedEvent)) == 5000
    assert counted(select(func.count(func.distinct(IngestedEvent.event_id)))) == 5000


@pytest.fixture
def private_engine(docker_client):
    """A Docker engine of this test's own, with the echo image: the fault stops it, not the shared one."""
    engine = PrivateEngine(f"{INSTANCE}-faults")
    try:
        engine.start()  # also removes what a crashed earlier run left
        engine.load_images(docker_client, ECHO)
        yield engine
    finally:
        engine.clean()


def test_docker_engine_down_gives_503_and_service_recovers_without_restart(fresh_db, private_engine, procs, tmp_path):
    env = service_env(web_concurrency=1, reconcile_interval_seconds=2, docker_host=private_engine.host)
    base = procs.web(env).base
    procs.worker(env)
    model = register(base)
    assert requests.post(f"{base}/api/models/{model['id']}/infer", json={}, timeout=60).status_code == 200
    private_engine.stop()  # its dockerd and containerd gone, before it is started again
    down = requests.post(f"{base}/api/models/{model['id']}/infer", json={}, timeout=60)
    assert down.status_code == 503 and down.json()["error"]["code"] == "engine_unavailable"
    assert "Retry-After" in down.headers
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 503 and "Docker engine unreachable" in ready.json()["checks"]["docker"]["reason"]
    private_engine.start()
    back = requests.post(f"{base}/api/models/{model['id']}/infer", json={"back": True}, timeout=60)
    assert back.status_code == 200 and back.json()["echo"] == {"back": True}
    assert requests.get(f"{base}/readyz", timeout=10).status_code == 200
