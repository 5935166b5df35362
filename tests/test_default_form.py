"""The zero-set-up form, as `make run` serves it: SQLite, gunicorn, background jobs in the one worker."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import docker
import pytest
import requests
from conftest import INSTANCE, IRIS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def default_service(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEST_DATABASE_URL")} | {
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "PORT": str(port),
        "INSTANCE_NAME": f"{INSTANCE}sqlite",
        "IDLE_TIMEOUT_SECONDS": "3",
        "IDLE_CHECK_INTERVAL_SECONDS": "0.5",
        "WEB_CONCURRENCY": "4",
        "FLASK_APP": "wsgi",
    }
    outputs = [
        subprocess.run(
            [os.path.join(BIN, command[0]), *command[1:]], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout
        for command in (["flask", "db", "upgrade"], ["flask", "tokens", "ensure-admin"], ["flask", "seed-example"])
    ]
    token = outputs[1].strip().rsplit(" ", 1)[-1]
    assert token.startswith("inf_"), outputs[1]
    again = subprocess.run(
        [os.path.join(BIN, "flask"), "tokens", "ensure-admin"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert again.stdout == "", "the admin token must be printed only once"
    log = open(tmp_path / "gunicorn.log", "w+")
    process = subprocess.Popen(
        [os.path.join(BIN, "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=1).ok:
                break
        except requests.ConnectionError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
        time.sleep(0.1)
    yield base, tmp_path / "gunicorn.log", {"Authorization": f"Bearer {token}"}
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    log.close()
    client = docker.from_env()
    for container in client.containers.list(
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
    deadline = time.monotonic() + 15
    while True:
        status = requests.get(f"{base}/api/models/{model['id']}", headers=auth, timeout=5).json()["status"]
        requests.get(f"{base}/readyz", timeout=5)
        if status == "stopped":
            break
        assert time.monotonic() < deadline, "the idle model was never stopped"
        time.sleep(0.3)
    events = requests.get(f"{base}/api/lifecycle-events?kind=idle_stopped", headers=auth, timeout=5).json()["items"]
    assert [e["model_id"] for e in events] == [model["id"]]
