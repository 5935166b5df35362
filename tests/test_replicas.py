"""Replicas on the real engine: autoscaling with the load, least-loaded balancing, a replica killed
under load, adoption after a restart, and the cap with replicas counted.

The autoscaler is ticked by the test (the background runner does the same every
SCALE_CHECK_INTERVAL_SECONDS); the load comes from real HTTP clients of a live server, and each
request to inference-test/slow:1 stays in flight for the seconds it asks for.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter

import pytest
import requests
from conftest import BASE_SETTINGS, INSTANCE, SLOW, built_app, created_since, managed_containers, service_env
from service_process import Processes
from sqlalchemy import delete, select
from waiting import wait_for

from inference_app import create_app
from inference_app.events.contract import Position, Rejected, decode
from inference_app.events.ingest import apply_batch
from inference_app.extensions import db
from inference_app.jobs.reconcile import reconcile
from inference_app.jobs.scale import Autoscaler
from inference_app.models import EventKind, ModelEvent, ModelLoad, Replica, ServedModel
from inference_app.services.context import context

FAST_SCALING = {"scale_up_window_seconds": 0.5, "scale_down_delay_seconds": 1.0, "queue_timeout_seconds": 20.0}
TICK = 0.1


def eventually(check, timeout: float = 40.0, what: str = "the condition"):
    """waiting.wait_for with this file's default timeout."""
    return wait_for(check, timeout, f"gave up waiting for {what}", interval=TICK)


def replicas(app, model_id: int) -> Counter:
    """The model's replicas by state, as the registry holds them."""
    with app.app_context():
        states = db.session.scalars(select(Replica.status).where(Replica.model_id == model_id)).all()
        db.session.remove()
    return Counter(states)


def events(app, model_id: int, kind: str) -> list[ModelEvent]:
    with app.app_context():
        found = db.session.scalars(
            select(ModelEvent).where(ModelEvent.model_id == model_id, ModelEvent.kind == kind).order_by(ModelEvent.id)
        ).all()
        db.session.remove()
    return list(found)


def metric(client, name: str, **labels) -> float:
    """One sample of the /metrics exposition (0 when absent)."""
    text = client.get("/metrics").get_data(as_text=True)
    want = sorted(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        found, _, value = line.rpartition(" ")
        label_text = found[len(name) :].strip("{}")
        if found.split("{")[0] == name and sorted(label_text.split(",") if label_text else []) == want:
            return float(value)
    return 0.0


def running(docker_client, model_id: int | None = None) -> list:
    return [c for c in managed_containers(docker_client, model_id, all_states=False) if c.status == "running"]


class Scaler:
    """The autoscaling job, ticked from the test's thread; errors are kept, not swallowed."""

    def __init__(self, app):
        self.app = app
        self.job = Autoscaler(app)

    def tick(self) -> dict:
        with self.app.app_context():
            try:
                return self.job.tick()
            finally:
                db.session.remove()

    def until(self, check, timeout: float = 40.0, what: str = "the condition"):
        def ticked():
            self.tick()
            return check()

        return eventually(ticked, timeout, what=what)

    def close(self) -> None:
        self.job.close()


@pytest.fixture
def scaler(app):
    job = Scaler(app)
    yield job
    job.close()


class Load:
    """`clients` threads, each sending one request after another until stopped."""

    def __init__(self, url: str, clients: int):
        self.url = url
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                response = session.post(self.url, data=b"{}", timeout=30)
                self.statuses.append(response.status_code)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def start(client, model_id: int) -> None:
    response = client.post(f"/api/models/{model_id}/start")
    assert response.status_code == 200, response.get_json()


@pytest.mark.settings(**FAST_SCALING)
def test_sustained_load_adds_replicas_and_spreads_requests_over_them(
    app, client, register, live_server, scaler, docker_client
):
    model = register(image=SLOW, max_replicas=3, target_concurrency=1)
    start(client, model["id"])
    with Load(f"{live_server}/api/models/{model['id']}/infer?seconds=0.5", clients=4) as load:
        scaler.until(lambda: replicas(app, model["id"])["ready"] == 3, what="three ready replicas")
        assert eventually(lambda: metric(client, "inference_in_flight_requests", model_id=model["id"]) >= 1)
        served_before = len(load.statuses)
        eventually(lambda: len(load.statuses) >= served_before + 12, what="requests served by three replicas")
    assert load.failures == []
    assert len(running(docker_client, model["id"])) == 3
    # every replica answered some of the requests (least-loaded balancing, not just the first one)
    for container in running(docker_client, model["id"]):
        assert b"POST /predict" in container.logs(), container.name
    ups = events(app, model["id"], EventKind.SCALED_UP)
    assert sorted(e.detail for e in ups) == ["replica 1 ready", "replica 2 ready"]
    shown = client.get(f"/api/models/{model['id']}").get_json()
    assert shown["replicas"] == {"starting": 0, "ready": 3, "draining": 0, "desired": 3}
    assert shown["max_replicas"] == 3 and shown["target_concurrency"] == 1 and shown["scale_note"] is None


@pytest.mark.settings(**FAST_SCALING)
def test_replicas_show_in_the_dashboard_and_the_metrics(app, client, register, scaler):
    model = register(image=SLOW, min_replicas=2, max_replicas=3)
    start(client, model["id"])
    scaler.until(lambda: replicas(app, model["id"])["ready"] == 2, what="min_replicas to be reached")
    row = client.get(f"/models/{model['id']}/row").get_data(as_text=True)
    assert "2/2 replicas" in row
    page = client.get(f"/models/{model['id']}").get_data(as_text=True)
    assert "Replicas: 2 ready of 2 desired" in page and "2 to 3; another above 4 requests in flight each" in page
    assert page.count('class="badge replica-ready"') == 2
    ops = client.get("/running").get_data(as_text=True)
    assert "Recent scaling" in ops and "kind-scaled_up" in ops and "replica 1 ready" in ops
    assert "2 of 10" in re.sub(r"<[^>]+>", "", ops)  # two container slots in use
    assert metric(client, "inference_replicas", model_id=model["id"], state="ready") == 2
    assert metric(client, "inference_scale_ups_total", model_id=model["id"]) == 1
    assert metric(client, "inference_containers", state="running") == 2
    assert metric(client, "inference_containers", state="active") == 2


@pytest.mark.settings(**FAST_SCALING)
def test_load_below_the_target_adds_no_replica(app, client, register, live_server, scaler, docker_client):
    model = register(image=SLOW, max_replicas=3, target_concurrency=4)
    start(client, model["id"])
    with Load(f"{live_server}/api/models/{model['id']}/infer?seconds=0.5", clients=2) as load:
        # tick until the autoscaler has seen the load through several of its windows
        seen = []
        window = FAST_SCALING["scale_up_window_seconds"]

        def judged_a_while():
            verdict = scaler.tick()[model["id"]]
            history = scaler.job.history(model["id"])
            seen.append(verdict)
            loaded = [s for s in history if s.in_flight >= 1]
            return len(loaded) >= 2 and (loaded[-1].at - loaded[0].at).total_seconds() >= 3 * window

        eventually(judged_a_while, what="the load to be observed through three windows")
    assert load.failures == []
    assert all(v.add == 0 for v in seen)
    assert replicas(app, model["id"]) == Counter({"ready": 1})
    assert len(running(docker_client, model["id"])) == 1
    assert events(app, model["id"], EventKind.SCALED_UP) == []


@pytest.mark.settings(**FAST_SCALING)
def test_replicas_are_removed_one_at_a_time_after_the_load_stops(
    app, client, register, live_server, scaler, docker_client
):
    model = register(image=SLOW, max_replicas=3, target_concurrency=1)
    start(client, model["id"])
    with Load(f"{live_server}/api/models/{model['id']}/infer?seconds=0.5", clients=4) as load:
        scaler.until(lambda: replicas(app, model["id"])["ready"] == 3, what="three ready replicas")
    assert load.failures == []
    counts_seen = []

    def down_to_one():
        counts_seen.append(replicas(app, model["id"]))
        return counts_seen[-1] == Counter({"ready": 1})

    scaler.until(down_to_one, what="one replica left")
    # one at a time: never two draining together, never below one ready
    assert all(c["draining"] <= 1 and c["ready"] >= 1 for c in counts_seen)
    downs = events(app, model["id"], EventKind.SCALED_DOWN)
    assert [e.detail.split(":")[0] for e in downs] == ["replica 2", "replica 1"]
    eventually(lambda: len(running(docker_client, model["id"])) == 1, what="the drained containers to go")
    assert client.get(f"/api/models/{model['id']}").get_json()["status"] == "running"  # 1 -> 0 is the idle stop


@pytest.mark.settings(**FAST_SCALING)
def test_a_replica_killed_under_load_loses_no_request(
    app, client, register, live_server, scaler, docker_client, caplog
):
    model = register(image=SLOW, min_replicas=3, max_replicas=3)
    start(client, model["id"])
    scaler.until(lambda: replicas(app, model["id"])["ready"] == 3, what="min_replicas to be reached")
    with app.app_context():
        victim = db.session.scalar(select(Replica).where(Replica.model_id == model["id"], Replica.replica == 2))
        victim_id, victim_instance = victim.id, victim.instance_id
        db.session.remove()
    with app.app_context():
        activity = context().activity  # the live server's ledger: it runs in this process
    with Load(f"{live_server}/api/models/{model['id']}/infer?seconds=0.3", clients=6) as load:
        eventually(lambda: activity.replica_loads([victim_id])[0] > 0, what="a request in flight on replica 2")
        docker_client.containers.get(victim_instance).kill()
        eventually(lambda: replicas(app, model["id"])["ready"] == 2, what="the killed replica to be dropped")
        served = len(load.statuses)
        eventually(lambda: len(load.statuses) >= served + 12, what="requests served after the kill")
    assert load.failures == []
    retried = [r for r in caplog.records if "replica 2 failed" in r.getMessage()]
    assert retried, "no request was in flight on the killed replica"
    vanished = events(app, model["id"], EventKind.VANISHED)
    assert [e.detail.split(":")[0] for e in vanished] == ["replica 2"]
    assert client.get(f"/api/models/{model['id']}").get_json()["status"] == "running"
    scaler.until(lambda: replicas(app, model["id"])["ready"] == 3, what="min_replicas to be restored")


@pytest.mark.settings(**FAST_SCALING)
def test_replicas_are_adopted_after_a_restart(app, client, register, scaler, docker_client):
    model = register(image=SLOW, min_replicas=3, max_replicas=3)
    start(client, model["id"])
    scaler.until(lambda: replicas(app, model["id"])["ready"] == 3, what="three ready replicas")
    scaler.close()
    names = sorted(c.name for c in running(docker_client, model["id"]))
    base = f"itest-{INSTANCE}-model-{model['id']}"
    assert names == [base, f"{base}-r1", f"{base}-r2"]
    with app.app_context():
        ports = {r.replica: r.port for r in db.session.scalars(select(Replica)).all()}
        # a crash lost what the registry knew: no replicas, the model stopped
        db.session.execute(delete(Replica))
        row = db.session.get(ServedModel, model["id"])
        row.status, row.container_id, row.host_port, row.container_host = "stopped", None, None, None
        db.session.commit()
        db.session.remove()
    # a new process of the service (its own runtime client and ledger) reconciles at start-up
    second = create_app({**BASE_SETTINGS, **FAST_SCALING})
    with second.app_context():
        report = reconcile()
        db.session.remove()
    assert report.adopted == [model["id"]] and report.removed == []
    assert replicas(app, model["id"]) == Counter({"ready": 3})
    with app.app_context():
        assert {r.replica: r.port for r in db.session.scalars(select(Replica)).all()} == ports
        db.session.remove()
    assert len(events(app, model["id"], EventKind.ADOPTED)) == 3
    shown = second.test_client().get(f"/api/models/{model['id']}").get_json()
    assert shown["status"] == "running" and shown["replicas"]["ready"] == 3
    for _ in range(6):
        answer = second.test_client().post(f"/api/models/{model['id']}/infer?seconds=0", json={})
        assert answer.status_code == 200 and answer.headers["X-Cold-Start"] == "false"
    second.extensions["inference"].close()


@pytest.mark.settings(**{**FAST_SCALING, "max_running_containers": 3, "max_running_per_owner": 3})
def test_replicas_count_against_the_cap_and_extras_go_first(app, client, register, live_server, scaler, docker_client):
    idle = register(image=SLOW, user_id="bob", model_name="idle")
    busy = register(image=SLOW, user_id="alice", model_name="busy", max_replicas=5, target_concurrency=1)
    late = register(image=SLOW, user_id="carol", model_name="late")
    start(client, idle["id"])
    start(client, busy["id"])
    peak = []
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak.append(len(running(docker_client)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with Load(f"{live_server}/api/models/{busy['id']}/infer?seconds=0.5", clients=6) as load:
            scaler.until(lambda: replicas(app, busy["id"])["ready"] == 2, what="the busy model to fill the cap")
            note = scaler.until(
                lambda: client.get(f"/api/models/{busy['id']}").get_json()["scale_note"], what="the held note"
            )
            for _ in range(10):  # it stays held: bob's idle model keeps its one replica
                scaler.tick()
            assert replicas(app, busy["id"]) == Counter({"ready": 2})
        assert load.failures == []
        assert "at the cap" in note and "MAX_RUNNING_CONTAINERS" in note
        assert client.get(f"/api/models/{idle['id']}").get_json()["status"] == "running"
        # carol's start makes room: alice's extra replica goes before anyone's last one (bob's is older)
        assert client.post(f"/api/models/{late['id']}/start").status_code == 200
    finally:
        sampling.set()
        sampler.join()
    assert max(peak) <= 3
    assert replicas(app, busy["id"]) == Counter({"ready": 1})
    assert [client.get(f"/api/models/{m['id']}").get_json()["status"] for m in (idle, busy, late)] == ["running"] * 3
    made_room = events(app, busy["id"], EventKind.SCALED_DOWN)
    assert len(made_room) == 1 and f"made room for model {late['id']}" in made_room[0].detail
    assert events(app, idle["id"], EventKind.EVICTED) == [] and events(app, busy["id"], EventKind.EVICTED) == []
    assert len(events(app, busy["id"], EventKind.SCALE_HELD)) == 1


def test_scaling_settings_through_the_api_and_a_kafka_event(app, client):
    body = {"user_id": "alice", "model_name": "api", "image": SLOW}
    bad = client.post("/api/models", json={**body, "min_replicas": 3, "max_replicas": 2})
    assert bad.status_code == 400 and bad.get_json()["error"]["details"]["field"] == "min_replicas"
    too_many = client.post("/api/models", json={**body, "max_replicas": 9})  # MAX_REPLICAS_PER_MODEL is 8
    assert (
        too_many.status_code == 400
        and "max_replicas must be between 1 and 8" in too_many.get_json()["error"]["message"]
    )
    made = client.post("/api/models", json={**body, "min_replicas": 1, "max_replicas": 4, "target_concurrency": 2})
    assert made.status_code == 201
    shown = made.get_json()
    assert (shown["min_replicas"], shown["max_replicas"], shown["target_concurrency"]) == (1, 4, 2)
    assert shown["replicas"] == {"starting": 0, "ready": 0, "draining": 0, "desired": 0} and shown["scale_note"] is None
    assert shown["idle_deadline"] is None  # min_replicas 1: never stopped for being idle
    with app.app_context():
        settings = context().settings
        event = {"user_id": "alice", "model_name": "kafka", "image": SLOW, "max_replicas": 3, "target_concurrency": 8}
        position = Position(settings.kafka_topic_uploaded, 0, 0)
        decoded = decode(position, json.dumps(event).encode(), settings)
        assert apply_batch([decoded]).applied == 1
        model = db.session.scalar(select(ServedModel).where(ServedModel.model_name == "kafka"))
        assert (model.min_replicas, model.max_replicas, model.target_concurrency) == (0, 3, 8)
        rejected = decode(position, json.dumps({**event, "max_replicas": 0}).encode(), settings)
        assert isinstance(rejected, Rejected) and rejected.reason.startswith("max_replicas must be between 1 and 8")
        db.session.remove()


def test_across_web_workers_the_load_is_summed_and_replicas_are_added_once(database, docker_client, tmp_path):
    """Real gunicorn workers report their load; the one background runner scales, once for the herd."""
    with built_app(docker_client) as app:
        procs = Processes(tmp_path)
        try:
            env = service_env(
                web_concurrency=3,
                scale_check_interval_seconds=0.2,
                scale_up_window_seconds=0.5,
                scale_down_delay_seconds=1.0,
            )
            base = procs.web(env).base
            procs.worker(env)
            body = {"user_id": "alice", "model_name": "herd", "image": SLOW, "max_replicas": 2, "target_concurrency": 3}
            model = requests.post(f"{base}/api/models", json=body, timeout=10).json()
            began = time.time()
            assert requests.post(f"{base}/api/models/{model['id']}/start", timeout=30).status_code == 200

            def ready() -> int:
                return requests.get(f"{base}/api/models/{model['id']}", timeout=10).json()["replicas"]["ready"]

            reporters = set()
            with Load(f"{base}/api/models/{model['id']}/infer?seconds=0.5", clients=8) as load:
                eventually(lambda: ready() == 2, what="a second replica for the summed load")
                with app.app_context():
                    rows = db.session.scalars(select(ModelLoad).where(ModelLoad.model_id == model["id"])).all()
                    reporters = {r.process for r in rows}
                    db.session.remove()
            assert load.failures == []
            assert len(reporters) >= 2, "the load came from one worker only"
            eventually(lambda: ready() == 1, what="the scale-down once the load stopped")
        finally:
            procs.stop_all()
        assert created_since(docker_client, began, model["id"]) == 2  # replica 0, and one more: not one per worker
        assert len(events(app, model["id"], EventKind.SCALED_UP)) == 1


def test_requests_entering_a_replica_together_leave_no_lock_behind(app, monkeypatch):
    """Many threads entering one replica at once take its shared lock once: once they are gone, a drainer wins it."""
    from sqlalchemy import text

    from inference_app.coordination import REPLICA_NAMESPACE
    from inference_app.services import shared_activity
    from inference_app.services.shared_activity import SharedActivity

    monkeypatch.setattr(shared_activity, "LINGER", 0.0)
    with app.app_context():
        ledger = SharedActivity()
        ledger._engine = db.engine  # no flusher thread: lingering locks are let go below, by hand
        for name in ("_query", "_query_locked"):  # a slow lock session: the threads overlap
            slow = getattr(ledger, name)
            monkeypatch.setattr(ledger, name, lambda *a, _slow=slow: (time.sleep(0.05), _slow(*a))[1])
        barrier = threading.Barrier(8)

        def request():
            barrier.wait()
            assert ledger.enter_replica(424242)
            ledger.leave_replica(424242)

        threads = [threading.Thread(target=request) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ledger._release_lingering()
        with db.engine.connect() as other:  # another session: a drainer in another process
            won = other.execute(text("SELECT pg_try_advisory_lock(:n, 424242)"), {"n": REPLICA_NAMESPACE}).scalar()
            if won:
                other.execute(text("SELECT pg_advisory_unlock(:n, 424242)"), {"n": REPLICA_NAMESPACE})
        ledger.close()
    assert won, "a shared lock taken twice by one session outlived its requests"
