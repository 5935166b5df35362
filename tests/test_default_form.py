"""The zero-set-up form, as `make run` serves it: SQLite, gunicorn, background jobs in the one worker."""

import json
import os
import subprocess

import pytest
import requests
from conftest import INSTANCE, IRIS
from service_process import BIN, ROOT, Web
from waiting import wait_for


@pytest.fixture
def default_service(tmp_path, docker_client):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")} | {
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "INSTANCE_NAME": f"{INSTANCE}sqlite",
        "IDLE_TIMEOUT_SECONDS": "3",
        "IDLE_CHECK_INTERVAL_SECONDS": "0.5",
        "WEB_CONCURRENCY": "4",
        "FLASK_APP": "wsgi",
    }
    outputs = [
        subprocess.run(
            [str(BIN / command[0]), *command[1:]], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout
        for command in (["flask", "db", "upgrade"], ["flask", "tokens", "ensure-admin"], ["flask", "seed-example"])
    ]
    token = outputs[1].strip().rsplit(" ", 1)[-1]
    assert token.startswith("inf_"), outputs[1]
    again = subprocess.run(
        [str(BIN / "flask"), "tokens", "ensure-admin"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert again.stdout == "", "the admin token must be printed only once"
    web = Web(env, tmp_path / "gunicorn.log")
    yield web.base, web.log_path, {"Authorization": f"Bearer {token}"}
    web.stop()
    for container in docker_client.containers.list(
        all=True, filters={"label": f"io.inference-service.instance={INSTANCE}sqlite"}
    ):
        container.remove(force=True)


def test_default_form_serves_the_example_model_and_idles_it_out(default_service):
    base, log_path, auth = default_service
    assert requests.get(f"{base}/api/models", timeout=5).status_code == 401
    [model] = requests.get(f"{base}/api/models", headers=auth, timeout=5).json()["items"]
    assert model["image"] == IRIS and model["user_id"] == "demo"
    example = model["metadata"]["example_request"]
    first = requests.post(f"{base}/api/models/{model['id']}/infer", data=json.dumps(example), headers=auth, timeout=60)
    assert first.status_code == 200, first.text
    assert first.headers["X-Cold-Start"] == "true"
    assert first.json()["predictions"] == ["setosa", "versicolor"]
    second = requests.post(f"{base}/api/models/{model['id']}/infer", json=example, headers=auth, timeout=10)
    assert second.status_code == 200 and second.headers["X-Cold-Start"] == "false"
    log = log_path.read_text()
    assert "running 1 web worker instead of 4" in log

    # only inference counts as activity: status polls and health checks do not keep it alive
    def stopped_while_polled() -> bool:
        status = requests.get(f"{base}/api/models/{model['id']}", headers=auth, timeout=5).json()["status"]
        requests.get(f"{base}/readyz", timeout=5)
        return status == "stopped"

    wait_for(stopped_while_polled, 15, "the idle model was never stopped", interval=0.3)
    events = requests.get(f"{base}/api/lifecycle-events?kind=idle_stopped", headers=auth, timeout=5).json()["items"]
    assert [e["model_id"] for e in events] == [model["id"]]
