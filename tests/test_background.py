"""Idle shutdown and reconciliation against real Docker and PostgreSQL."""

import threading
import time
from datetime import timedelta

import pytest
import requests
from conftest import SLOW, managed_containers
from waiting import wait_for

from inference_app.extensions import db
from inference_app.jobs.idle import reap_idle
from inference_app.jobs.reconcile import reconcile
from inference_app.models import ServedModel, utcnow
from inference_app.services.context import context


def status_of(client, model_id):
    return client.get(f"/api/models/{model_id}").get_json()["status"]


@pytest.mark.settings(idle_timeout_seconds=1)
def test_idle_model_is_stopped_and_recorded(app, client, register, docker_client):
    model = register()
    assert client.post(f"/api/models/{model['id']}/infer", json={}).status_code == 200
    with app.app_context():
        assert reap_idle() == []  # just used
        context().activity.flush()  # what the flusher thread does every half second
        assert reap_idle(now=utcnow() + timedelta(seconds=3)) == [model["id"]]
    assert status_of(client, model["id"]) == "stopped"
    assert managed_containers(docker_client, model["id"]) == []
    events = client.get("/api/lifecycle-events?kind=idle_stopped").get_json()["items"]
    assert [e["model_id"] for e in events] == [model["id"]]


@pytest.mark.settings(idle_timeout_seconds=1)
def test_per_model_idle_timeout_and_keep_warm(app, client, register):
    patient = register(model_name="patient", idle_timeout_seconds=600)
    warm = register(model_name="warm")
    client.post(f"/api/models/{patient['id']}/start")
    client.post(f"/api/models/{warm['id']}/start", json={"keep_warm": True})
    with app.app_context():
        assert reap_idle(now=utcnow() + timedelta(seconds=60)) == []
        assert reap_idle(now=utcnow() + timedelta(seconds=700)) == [patient["id"]]
    assert status_of(client, warm["id"]) == "running"


@pytest.mark.settings(idle_timeout_seconds=1)
def test_long_request_is_never_cut_by_idle_shutdown(app, client, register, live_server):
    model = register(image=SLOW)
    assert client.post(f"/api/models/{model['id']}/start").status_code == 200
    outcome = {}

    def long_call():
        outcome["response"] = requests.post(
            f"{live_server}/api/models/{model['id']}/infer?seconds=4", data=b"{}", timeout=30
        )

    caller = threading.Thread(target=long_call)
    caller.start()
    stopped_during = []
    with app.app_context():
        wait_for(lambda: context().activity.in_flight(model["id"]), 5, "the request never arrived", interval=0.01)
        while caller.is_alive():  # an idle check every 0.3 s while the request runs, each with a late clock
            stopped_during += reap_idle(now=utcnow() + timedelta(seconds=30))
            db.session.remove()
            time.sleep(0.3)
    caller.join()
    assert stopped_during == []
    assert outcome["response"].status_code == 200 and outcome["response"].json() == {"slept": 4}
    with app.app_context():
        assert reap_idle() == []  # the clock restarted when the request ended
        context().activity.flush()
        assert reap_idle(now=utcnow() + timedelta(seconds=3)) == [model["id"]]


def test_reconcile_adopts_removes_orphans_and_notices_vanished(app, client, register, docker_client):
    kept = register(model_name="kept")
    killed = register(model_name="killed")
    forgotten = register(model_name="forgotten")
    for model in (kept, killed, forgotten):
        assert client.post(f"/api/models/{model['id']}/start").status_code == 200
    port_before = client.get(f"/api/models/{kept['id']}").get_json()["host_port"]
    [victim] = managed_containers(docker_client, killed["id"])
    victim.kill()
    with app.app_context():
        # the registry forgot a running container (as after a crash between start and commit)
        row = db.session.get(ServedModel, forgotten["id"])
        row.status, row.container_id, row.host_port, row.container_host = "stopped", None, None, None
        db.session.commit()
        # a container with our labels for a model the registry does not know
        orphan = docker_client.containers.create(
            "inference-test/echo:1",
            name=f"itest-orphan-{kept['id']}",
            labels={**victim.labels, "io.inference-service.model-id": "999999"},
        )
        report = reconcile()
    assert report.adopted == [forgotten["id"]]
    assert report.vanished == [killed["id"]]
    assert orphan.name in report.removed
    assert status_of(client, kept["id"]) == "running"
    assert client.get(f"/api/models/{kept['id']}").get_json()["host_port"] == port_before
    assert status_of(client, killed["id"]) == "stopped"
    adopted = client.get(f"/api/models/{forgotten['id']}").get_json()
    assert adopted["status"] == "running" and adopted["host_port"]
    assert client.post(f"/api/models/{forgotten['id']}/infer", json={"a": 1}).headers["X-Cold-Start"] == "false"
    assert managed_containers(docker_client, killed["id"]) == []
    assert [c.name for c in managed_containers(docker_client) if "orphan" in c.name] == []
